"""Hostile clients against our relay: it answers as the protocol says and keeps serving.

The relay (``hyco_relay``) runs in this process on 127.0.0.1; attackers are raw sockets, a
WebSocket client written by hand (to send frames libraries refuse to) and plain clients
(``websockets``, ``httpx``). After every attack, and during floods, a well-behaved listener and
sender pair must still work end to end. The relay must never log an error for what a client
sent, nor a token's signature.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import secrets
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed

from hyco_conformance.harness import LISTEN_KEY, ROOT_KEY, SEND_KEY, relay_config
from hyco_core import (
    HycoError,
    RejectedError,
    RelayTimeoutError,
    create_reject_uri,
    create_relay_listen_uri,
    create_relay_send_uri,
    create_sas_token,
)
from hyco_relay.config import parse_config
from hyco_relay.server import Relay, serve_relay
from hyco_transports.anyio import Listener, connect

from .hostile_relay import OP_BINARY, OP_PING, OP_TEXT
from .relay_clients import (
    ATTACKER,
    HEAD_TIMEOUT,
    RawWebSocket,
    assert_relay_logs_clean,
    auth,
    good_listener,
    listen_target,
    raw_exchange,
    round_trip,
    status_of,
    still_serves,
    token,
    upgrade_request,
    ws_status,
)

pytestmark = pytest.mark.anyio

RENDEZVOUS_TIMEOUT = 2.0
OTHER_NAMESPACE = "other.example"
# A second namespace with the same key: only a token's resource tells the two apart.
CONFIG = (
    relay_config(request_timeout=10.0, rendezvous_timeout=RENDEZVOUS_TIMEOUT)
    + f"""
[[namespace]]
name = "{OTHER_NAMESPACE}"

  [[namespace.rule]]
  name = "root"
  primary_key = "{ROOT_KEY}"
  rights = ["Manage"]

  [[namespace.entity]]
  name = "hc1"
"""
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def relay_logs_stay_clean(caplog: pytest.LogCaptureFixture) -> Any:
    """Whatever a client sends, the relay logs no error and no token signature."""
    caplog.set_level(logging.INFO, logger="hyco")
    yield
    assert_relay_logs_clean(caplog)


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with serve_relay(parse_config(CONFIG)) as running:
        yield running


@pytest.fixture
async def listener(relay: Relay) -> AsyncIterator[Listener]:
    """A well-behaved listener on ``hc1`` that must survive every attack on the relay."""
    async with good_listener(relay) as running:
        yield running


# -- malformed HTTP ----------------------------------------------------------------------------


def _head(text: str) -> Callable[[Relay], bytes | Sequence[bytes]]:
    return lambda relay: text.replace("{host}", relay.address).encode()


def _upgrade(
    target: str = listen_target(),
    *,
    with_token: bool = True,
    extra: Sequence[tuple[str, str]] = (),
    **options: Any,
) -> Callable[[Relay], bytes | Sequence[bytes]]:
    def build(relay: Relay) -> bytes:
        headers = [("ServiceBusAuthorization", token(relay))] if with_token else []
        headers += extra
        options.setdefault("host", relay.address)
        return upgrade_request(target, headers=headers, **options)

    return build


def _incomplete_head(size: int) -> Callable[[Relay], Sequence[bytes]]:
    """A head that never ends, sent in pieces: the relay must stop buffering it."""
    line = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: "
    return lambda relay: [line] + [b"a" * 4096] * (size // 4096)


def _head_with_header_of(size: int) -> Callable[[Relay], Sequence[bytes]]:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: "
    return lambda relay: [head] + [b"a" * 1024] * (size // 1024) + [b"\r\n\r\n"]


MALFORMED = [
    # (id, what the attacker sends, the relay's status)
    ("tls-hello-on-a-plain-port", lambda r: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    ("every-byte-value", lambda r: bytes(range(256)) * 4, 400),
    ("request-line-without-version", _head("GET /\r\n\r\n"), 400),
    ("request-line-of-garbage", _head("GARBAGE\r\n\r\n"), 400),
    ("target-not-ascii", lambda r: b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("header-without-colon", _head("GET /health HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n"), 400),
    ("header-with-nul", lambda r: b"GET /health HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
    ("missing-host", _head("GET /health HTTP/1.1\r\n\r\n"), 400),
    ("missing-host-on-an-upgrade", _upgrade(host=None), 400),
    ("two-hosts", _head("GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400),
    (
        "content-length-not-a-number",
        _head("POST /open HTTP/1.1\r\nHost: {host}\r\nContent-Length: abc\r\n\r\n"),
        400,
    ),
    (
        "two-content-lengths",
        _head(
            "POST /open HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        ),
        400,
    ),
    ("request-line-beyond-64-kib", lambda r: [b"GET /"] + [b"a" * 4096] * 32, 414),
    ("head-beyond-64-kib", _incomplete_head(100 * 1024), 431),
    (
        "many-headers-beyond-64-kib",
        lambda r: [b"GET /health HTTP/1.1\r\n"] + [b"X: y\r\n" * 1000] * 20,
        431,
    ),
    ("head-of-60-kib-is-served", _head_with_header_of(60 * 1024), 200),
    ("http-1.0-plain-request-is-served", _head("GET /health HTTP/1.0\r\n\r\n"), 200),
    ("http-1.0-upgrade", _upgrade(version="HTTP/1.0"), 400),
    ("websocket-key-too-short", _upgrade(key="c2hvcnQ="), 400),
    ("websocket-key-not-base64", _upgrade(key="!!!!not base64!!!!!!!!=="), 400),
    ("websocket-key-missing", _upgrade(key=""), 400),
    ("websocket-version-8", _upgrade(ws_version="8"), 400),
    ("upgrade-to-h2c", _upgrade(upgrade="h2c"), 400),
    ("upgrade-with-post", _upgrade(method="POST"), 400),
    ("upgrade-declaring-a-body", _upgrade(extra=[("Content-Length", "10")]), 400),
    ("upgrade-with-a-chunked-body", _upgrade(extra=[("Transfer-Encoding", "chunked")]), 400),
    ("unknown-action", _upgrade("/$hc/hc1?sb-hc-action=frobnicate"), 404),
    ("unknown-entity", _upgrade("/$hc/nope?sb-hc-action=listen"), 404),
    ("percent-sign-without-hex", _upgrade("/$hc/hc1%zz?sb-hc-action=listen"), 404),
    ("absolute-form-target", _head("GET http://{host}/hc1 HTTP/1.1\r\nHost: {host}\r\n\r\n"), 404),
    (
        "content-length-and-transfer-encoding",
        _head(
            "POST /open HTTP/1.1\r\nHost: {host}\r\nContent-Length: 30\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        ),
        400,
    ),
    (
        "transfer-encoding-folded",
        _head(
            "POST /open HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n"
            "Transfer-Encoding:\r\n chunked\r\n\r\nhello"
        ),
        400,
    ),
    ("header-folded", _head("GET /health HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n"), 400),
    (
        "head-of-89-kb-in-one-write",
        lambda r: b"GET /health HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 89_000 + b"\r\n\r\n",
        431,
    ),
    (
        "target-of-70000-characters",
        _head("GET /open?" + "q" * 70_000 + " HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        414,
    ),
    ("host-with-dot-dot", _upgrade(host="127.0.0.1/.."), 400),
    ("entity-with-the-kelvin-sign", _upgrade("/$hc/hc%E2%84%AA?sb-hc-action=listen"), 404),
]


@pytest.mark.parametrize(
    ("send", "status"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
async def test_malformed_requests_are_refused_and_the_relay_serves_on(
    relay: Relay,
    listener: Listener,
    send: Callable[[Relay], bytes | Sequence[bytes]],
    status: int | None,
) -> None:
    answer = await raw_exchange(relay, send(relay))
    assert status_of(answer) == status, answer[:200]
    if status is not None and status >= 400:
        assert b"TrackingId:" in answer.split(b"\r\n")[0]
    await still_serves(relay)
    assert relay.listener_count("localhost", "hc1") == 1


async def test_broken_http_senders_end_their_connection_only(
    relay: Relay, listener: Listener
) -> None:
    """Bodies cut short, bad chunks, a malformed or foreign second request: each is refused
    with 400 and its connection ends, no error is logged, everyone else is served."""
    host = relay.address
    post = f"POST /open HTTP/1.1\r\nHost: {host}\r\n"
    get = f"GET /open HTTP/1.1\r\nHost: {host}\r\n\r\n"
    async with good_listener(relay, "open"):
        cut = await raw_exchange(relay, f"{post}Content-Length: 100\r\n\r\n0123456789".encode())
        assert status_of(cut) == 400
        assert b"without sending complete message body" in cut
        chunks = await raw_exchange(
            relay, f"{post}Transfer-Encoding: chunked\r\n\r\nzz\r\n".encode()
        )
        assert status_of(chunks) == 400
        second = await raw_exchange(relay, (get + "GARBAGE\r\n\r\n").encode())
        assert [status_of(a) for a in _answers(second)] == [200, 400]
        foreign = await raw_exchange(
            relay, (get + f"GET /hc1 HTTP/1.1\r\nHost: {host}\r\n\r\n").encode()
        )
        assert [status_of(a) for a in _answers(foreign)] == [200, 400]
        await round_trip(relay, "open")
    await still_serves(relay)


def _answers(data: bytes) -> list[bytes]:
    return [b"HTTP/1.1 " + part for part in data.split(b"HTTP/1.1 ")[1:]]


# -- tokens ------------------------------------------------------------------------------------


def _expired(relay: Relay) -> str:
    return create_sas_token(f"http://{relay.address}/hc1/", "root", ROOT_KEY, int(time.time()) - 60)


def _bad_signature(relay: Relay) -> str:
    good = token(relay)
    signature = good.partition("&sig=")[2].partition("&")[0]
    return good.replace(signature, "A" * len(signature))


TOKENS: list[tuple[str, str, Callable[[Relay], str | None], int]] = [
    ("missing", "listen", lambda r: None, 401),
    ("missing", "connect", lambda r: None, 401),
    ("invalid-signature", "listen", _bad_signature, 401),
    ("invalid-signature", "connect", _bad_signature, 401),
    ("expired", "listen", _expired, 401),
    ("expired", "connect", _expired, 401),
    ("malformed", "listen", lambda r: "SharedAccessSignature sr=&sig=&se=x", 401),
    ("not-a-sas-token", "connect", lambda r: "Bearer abc.def.ghi", 401),
    ("signed-by-an-unknown-rule", "listen", lambda r: token(r, rule="nobody"), 401),
    ("for-another-entity", "listen", lambda r: token(r, "open"), 403),
    ("for-another-entity", "connect", lambda r: token(r, "open"), 403),
    ("for-another-namespace", "listen", lambda r: token(r, host=OTHER_NAMESPACE), 403),
    ("for-another-namespace", "connect", lambda r: token(r, host=OTHER_NAMESPACE), 403),
    ("send-right-to-listen", "listen", lambda r: token(r, rule="send-only", key=SEND_KEY), 403),
    (
        "listen-right-to-send",
        "connect",
        lambda r: token(r, rule="listen-only", key=LISTEN_KEY),
        403,
    ),
]


@pytest.mark.parametrize(
    ("action", "token_of", "status"),
    [c[1:] for c in TOKENS],
    ids=[f"{c[0]}-{c[1]}" for c in TOKENS],
)
async def test_bad_tokens_are_refused_with_the_documented_status(
    relay: Relay,
    listener: Listener,
    action: str,
    token_of: Callable[[Relay], str | None],
    status: int,
) -> None:
    given = token_of(relay)
    headers = [("ServiceBusAuthorization", given)] if given else []
    answer = await raw_exchange(
        relay,
        upgrade_request(f"/$hc/hc1?sb-hc-action={action}", host=relay.address, headers=headers),
    )
    status_line = answer.split(b"\r\n")[0]
    assert status_of(answer) == status, status_line
    assert b"TrackingId:" in status_line
    signature = (given or "").partition("&sig=")[2].partition("&")[0]
    if signature:
        assert signature.encode() not in answer
    await still_serves(relay)


async def test_tokens_in_the_query_and_from_http_senders_are_checked_too(
    relay: Relay, listener: Listener
) -> None:
    bad = _bad_signature(relay)
    uri = create_relay_send_uri(relay.address, "hc1", bad, secure=False)
    assert await ws_status(uri) == 401
    async with httpx.AsyncClient() as client:
        for headers in ({}, {"ServiceBusAuthorization": bad}, {"Authorization": _expired(relay)}):
            response = await client.get(f"http://{relay.address}/hc1", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "TokenMissingOrInvalid"
    # A token for the other namespace opens it, and only it (the Host header picks it).
    other = token(relay, host=OTHER_NAMESPACE)
    host = f"{OTHER_NAMESPACE}:{relay.port}"
    here = [("ServiceBusAuthorization", token(relay))]
    there = [("ServiceBusAuthorization", other)]
    target = listen_target()
    assert (
        status_of(await raw_exchange(relay, upgrade_request(target, host=host, headers=here)))
        == 403  # validly signed, for another path
    )
    async with await anyio.connect_tcp("127.0.0.1", relay.port) as stream:
        await stream.send(upgrade_request(target, host=host, headers=there))
        assert status_of(await stream.receive()) == 101
    await still_serves(relay)


# -- forged rendezvous -------------------------------------------------------------------------


async def test_forged_rendezvous_addresses_never_reach_a_sender(
    relay: Relay, listener: Listener
) -> None:
    """A hand-written listener holds the real addresses; attackers who guess, move or replay
    them are refused (403; 400 for a request rendezvous) and meet no sender."""
    listen = create_relay_listen_uri(relay.address, "hc1", tracking_id="victim", secure=False)
    outcomes: dict[str, object] = {}

    async def sender(name: str) -> None:
        headers = {"Microsoft-Relay-AllowedListeners": "victim"}
        try:
            async with connect(relay.connection_string("hc1", "root"), headers=headers) as ws:
                outcomes[name] = await ws.recv()
        except HycoError as error:
            outcomes[name] = error

    async with ws_connect(listen, additional_headers=auth(relay)) as control:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sender, "accepted")
            accept = json.loads(await control.recv())["accept"]
            address = accept["address"]
            forged = {
                "random id": address.replace(accept["id"], secrets.token_urlsafe(24)),
                "another entity": address.replace("/$hc/hc1", "/$hc/open"),
                "as a request rendezvous": address.replace("action=accept", "action=request"),
            }
            statuses = {name: await ws_status(uri) for name, uri in forged.items()}
            target = address.partition(relay.address)[2]
            moved = upgrade_request(target, host=f"{OTHER_NAMESPACE}:{relay.port}")
            statuses["another namespace"] = status_of(await raw_exchange(relay, moved)) or 0
            assert statuses == {
                "random id": 403,
                "another entity": 403,
                "as a request rendezvous": 400,
                "another namespace": 403,
            }
            async with ws_connect(address) as rendezvous:
                await rendezvous.send("from the real listener")
                await rendezvous.close()
        assert outcomes["accepted"] == "from the real listener"
        assert await ws_status(address) == 403  # used once

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sender, "expired")
            expiring = json.loads(await control.recv())["accept"]["address"]
            await anyio.sleep(RENDEZVOUS_TIMEOUT + 0.5)
            assert await ws_status(expiring) == 403
        expired = outcomes["expired"]
        assert isinstance(expired, RelayTimeoutError)
        assert expired.status_code == 504

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sender, "rejected")
            rejecting = json.loads(await control.recv())["accept"]["address"]
            reject = create_reject_uri(rejecting, 418, "short and stout")
            assert await ws_status(reject) == 410
            assert await ws_status(reject) == 403  # a rejection is delivered once
        rejected = outcomes["rejected"]
        assert isinstance(rejected, RejectedError)
        assert rejected.status_code == 418

        await _forged_request_rendezvous(relay, control)
    await still_serves(relay)


async def _forged_request_rendezvous(relay: Relay, control: Any) -> None:
    responses: list[httpx.Response] = []

    async def post() -> None:
        async with httpx.AsyncClient(timeout=20) as client:
            headers = {**auth(relay), "Microsoft-Relay-AllowedListeners": "victim"}
            url = f"http://{relay.address}/hc1"
            responses.append(await client.post(url, headers=headers, content=b"x" * 100_000))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(post)
        announced = json.loads(await control.recv())["request"]
        address = announced["address"]
        guessed = address.replace(announced["id"], secrets.token_urlsafe(24))
        assert await ws_status(guessed) == 400
        assert await ws_status(address.replace("/$hc/hc1", "/$hc/open")) == 400
        async with ws_connect(address) as rendezvous:
            request = json.loads(await rendezvous.recv())["request"]
            assert await rendezvous.recv() == b"x" * 100_000
            head = {"requestId": request["id"], "statusCode": 200, "body": True}
            await rendezvous.send(json.dumps({"response": head}))
            await rendezvous.send(b"handled by the real listener")
            with anyio.fail_after(20):
                while not responses:
                    await anyio.sleep(0.01)
    assert (responses[0].status_code, responses[0].content) == (
        200,
        b"handled by the real listener",
    )
    assert await ws_status(address) == 400  # used once


# -- control messages from a listener ----------------------------------------------------------

Send = Callable[[RawWebSocket, Relay], Awaitable[None]]


Frame = tuple[int, bytes, dict[str, Any]]


def _frame(opcode: int, payload: bytes, **options: Any) -> Frame:
    return opcode, payload, options


def _frames(*frames: Frame | tuple[int, bytes]) -> Send:
    async def send(ws: RawWebSocket, relay: Relay) -> None:
        for item in frames:
            opcode, payload, options = item if len(item) == 3 else (*item, {})
            await ws.send(opcode, payload, **options)

    return send


def _json(*documents: object) -> Send:
    return _frames(*((OP_TEXT, json.dumps(d).encode()) for d in documents))


def _renew_for_another_entity(ws: RawWebSocket, relay: Relay) -> Awaitable[None]:
    return ws.send(OP_TEXT, json.dumps({"renewToken": {"token": token(relay, "open")}}).encode())


RESPONSE = {"requestId": "never-asked", "statusCode": 200}

CONTROL_MESSAGES: list[tuple[str, Send, int | None]] = [
    # (id, what the listener sends, the relay's close code, or None when it ignores it)
    ("unknown-type", _json({"frobnicate": {"x": 1}}), None),
    ("unknown-fields", _json({"response": {**RESPONSE, "frob": 1}, "extra": True}), None),
    ("response-for-an-unknown-request", _json({"response": RESPONSE}), None),
    (
        "response-body-for-an-unknown-request",
        _frames(
            (OP_TEXT, json.dumps({"response": {**RESPONSE, "body": True}}).encode()),
            (OP_BINARY, b"b"),
        ),
        None,
    ),
    ("binary-where-text-belongs", _frames((OP_BINARY, b"\0" * 1_000_000)), None),
    ("accept-sent-by-a-listener", _json({"accept": {"address": "ws://x/y", "id": "1"}}), None),
    ("invalid-json", _frames((OP_TEXT, b"{not json")), 1002),
    ("json-array", _frames((OP_TEXT, b"[1, 2]")), 1002),
    ("two-messages-in-one", _json({"response": RESPONSE, "renewToken": {"token": "x"}}), 1002),
    ("nested-too-deeply", _frames((OP_TEXT, b"[" * 100_000 + b"]" * 100_000)), 1002),
    (
        "number-too-long",
        _frames((OP_TEXT, b'{"response": {"statusCode": ' + b"9" * 5000 + b"}}")),
        1002,
    ),
    ("text-beyond-256-kib", _frames((OP_TEXT, b"x" * 270_000)), 1009),
    (
        "fragments-beyond-256-kib",
        _frames(
            _frame(OP_TEXT, b"x" * 100_000, fin=False),
            _frame(0x0, b"x" * 100_000, fin=False),
            _frame(0x0, b"x" * 100_000, fin=False),
        ),
        1009,
    ),
    (
        "frame-announcing-2-to-the-62",
        _frames(_frame(OP_TEXT, b"x" * 270_000, length=1 << 62)),
        1009,
    ),
    (
        "inline-response-body-beyond-64-kib",
        _frames(
            (OP_TEXT, json.dumps({"response": {**RESPONSE, "body": True}}).encode()),
            (OP_BINARY, b"\0" * 70_000),
        ),
        1009,
    ),
    ("text-not-utf8", _frames((OP_TEXT, b"\xff\xfe")), 1007),
    ("unmasked-frame", _frames(_frame(OP_TEXT, b"{}", masked=False)), 1002),
    ("reserved-bits", _frames(_frame(OP_TEXT, b"{}", rsv=4)), 1002),
    ("ping-beyond-125-bytes", _frames((OP_PING, b"p" * 200)), 1002),
    ("renew-token-garbage", _json({"renewToken": {"token": "garbage"}}), 1008),
    ("renew-token-for-another-entity", _renew_for_another_entity, 1008),
]


@pytest.mark.parametrize(
    ("send", "close_code"), [c[1:] for c in CONTROL_MESSAGES], ids=[c[0] for c in CONTROL_MESSAGES]
)
async def test_hostile_control_messages_are_ignored_or_close_that_listener(
    relay: Relay, listener: Listener, send: Send, close_code: int | None
) -> None:
    listener_id = f"hostile-{secrets.token_hex(4)}"
    ws = await RawWebSocket.open(
        relay, listen_target("hc1", listener_id), list(auth(relay).items())
    )
    async with ws.stream:
        with anyio.fail_after(10):
            while relay.listener_count("localhost", "hc1") != 2:
                await anyio.sleep(0.01)
        await send(ws, relay)
        if close_code is None:
            await _still_routed_to(relay, ws, listener_id)
        else:
            with anyio.fail_after(10):
                assert await ws.close_code() == close_code
            with anyio.fail_after(10):
                while relay.listener_count("localhost", "hc1") != 1:
                    await anyio.sleep(0.01)
    await still_serves(relay)


async def _still_routed_to(relay: Relay, ws: RawWebSocket, listener_id: str) -> None:
    """A sender that asks for this listener reaches it, and hears its rejection."""
    errors: list[HycoError] = []

    async def sender() -> None:
        headers = {"Microsoft-Relay-AllowedListeners": listener_id}
        try:
            async with connect(relay.connection_string("hc1", "root"), headers=headers):
                pass
        except HycoError as error:
            errors.append(error)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(sender)
        with anyio.fail_after(10):
            opcode, payload = await ws.receive()
        assert opcode == OP_TEXT
        address = json.loads(payload)["accept"]["address"]
        assert await ws_status(create_reject_uri(address, 418, "still here")) == 410
    assert isinstance(errors[0], RejectedError)
    assert errors[0].status_code == 418


# -- slow loris --------------------------------------------------------------------------------


async def test_slow_loris_connections_are_timed_out_while_others_are_served(
    relay: Relay, listener: Listener
) -> None:
    """Connections that send a byte a second (a first head, or the next head on a keep-alive
    HTTP connection) or nothing at all are closed by the relay's head timeout; a well-behaved
    pair is served all along."""
    upgrade = upgrade_request(listen_target(), host=relay.address)
    keep_alive = f"GET /open HTTP/1.1\r\nHost: {relay.address}\r\n\r\n".encode()
    lasted: dict[str, list[float]] = {"first head": [], "keep-alive head": [], "silent": []}

    async def loris(kind: str) -> None:
        started = time.monotonic()
        async with await anyio.connect_tcp("127.0.0.1", relay.port) as stream:
            if kind == "keep-alive head":
                await stream.send(keep_alive)
                assert status_of(await stream.receive()) == 200
            drip = upgrade if kind != "silent" else b""
            with anyio.fail_after(HEAD_TIMEOUT * 3):
                for index in range(10_000):
                    try:
                        if drip:
                            await stream.send(drip[index % len(drip) : index % len(drip) + 1])
                        with anyio.move_on_after(1.0):
                            await stream.receive()
                            raise AssertionError("the relay answered a head that never ended")
                    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                        break
        lasted[kind].append(time.monotonic() - started)

    async with good_listener(relay, "open"), anyio.create_task_group() as tasks:
        for kind in lasted:
            for _ in range(10):
                tasks.start_soon(loris, kind)
        for _ in range(int(HEAD_TIMEOUT)):
            await round_trip(relay)
            await anyio.sleep(0.5)
    assert all(len(times) == 10 for times in lasted.values())
    print({kind: f"closed after {min(t):.1f}-{max(t):.1f} s" for kind, t in lasted.items()})
    await still_serves(relay)


# -- floods ------------------------------------------------------------------------------------

LIMITED = CONFIG.replace(
    "rendezvous_timeout = 2.0",
    "rendezvous_timeout = 2.0\nconnection_rate = 0.01\nconnection_burst = 40\n"
    "message_rate = 0.01\nmessage_burst = 50",
)


async def test_floods_beyond_the_rate_limits_get_429_and_1008_others_are_served() -> None:
    async with serve_relay(parse_config(LIMITED)) as relay, good_listener(relay):
        statuses: list[int | None] = []
        served: list[bool] = []

        async def flood_once(index: int) -> None:
            forged = f"/$hc/hc1?sb-hc-action=accept&sb-hc-id=forged-{index}"
            data = (
                upgrade_request(forged, host=relay.address)
                if index % 2
                else f"GET /health HTTP/1.1\r\nHost: {relay.address}\r\n\r\n".encode()
            )
            answer = await raw_exchange(relay, data, local_host=ATTACKER, timeout=5)
            statuses.append(status_of(answer))

        async def flood() -> None:
            async with anyio.create_task_group() as tasks:
                for index in range(160):
                    tasks.start_soon(flood_once, index)
                    if index % 20 == 19:
                        await anyio.sleep(0.05)

        async def behave() -> None:
            for _ in range(4):
                await round_trip(relay)
                served.append(True)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(flood)
            tasks.start_soon(behave)
        refused = statuses.count(429)
        assert refused >= 160 - 40 - 5, statuses  # the burst, and what the rate refills
        assert set(statuses) <= {200, 403, 429}, statuses
        assert served == [True] * 4
        async with httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(local_address=ATTACKER)
        ) as client:
            response = await client.get(f"http://{relay.address}/hc1", headers=auth(relay))
        assert response.status_code == 429
        assert "TrackingId:" in response.json()["error"]["message"]

        # A sender flooding messages is cut off with 1008; the listener and others carry on.
        uri = create_relay_send_uri(relay.address, "hc1", secure=False)
        async with ws_connect(uri, additional_headers=auth(relay)) as flooder:
            with pytest.raises(WsConnectionClosed) as closed:
                await _flood_messages(flooder)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1008,
            "Message rate limit exceeded",
        )
        await round_trip(relay)
        assert relay.listener_count("localhost", "hc1") == 1
    print(f"connection flood: {refused} of 160 refused with 429")


async def _flood_messages(flooder: Any) -> None:
    with anyio.fail_after(20):
        for index in range(1000):
            await flooder.send(f"flood {index}")
        while True:
            await flooder.recv()


# -- memory ------------------------------------------------------------------------------------


def _open_descriptors() -> int | None:
    fd_dir = Path("/proc/self/fd")
    return len(os.listdir(fd_dir)) if fd_dir.is_dir() else None


def _rss_kib() -> int | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


async def _hostile_connection(relay: Relay, index: int) -> None:
    kind = index % 8
    host = relay.address
    if kind == 0:
        await raw_exchange(relay, os.urandom(64))
    elif kind == 1:
        await raw_exchange(relay, b"GARBAGE\r\n\r\n")
    elif kind == 2:
        await raw_exchange(relay, _incomplete_head(80 * 1024)(relay))
    elif kind == 3:
        headers = [("ServiceBusAuthorization", _bad_signature(relay))]
        await raw_exchange(relay, upgrade_request(listen_target(), host=host, headers=headers))
    elif kind == 4:
        forged = f"/$hc/hc1?sb-hc-action=accept&sb-hc-id={secrets.token_urlsafe(24)}"
        await raw_exchange(relay, upgrade_request(forged, host=host))
    elif kind == 5:
        ws = await RawWebSocket.open(relay, listen_target(), list(auth(relay).items()))
        async with ws.stream:
            await ws.send(OP_TEXT, b"{not json")
            assert await ws.close_code() == 1002
    elif kind == 6:
        request = f"POST /hc1 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello"
        await raw_exchange(relay, request.encode())
    else:
        async with await anyio.connect_tcp("127.0.0.1", relay.port):
            pass


async def _attack(relay: Relay, count: int, *, at_once: int = 50) -> None:
    """``count`` hostile connections, ``at_once`` at a time."""
    indices = iter(range(count))

    async def attacker() -> None:
        for index in indices:
            await _hostile_connection(relay, index)

    async with anyio.create_task_group() as tasks:
        for _ in range(at_once):
            tasks.start_soon(attacker)


async def _settle(relay: Relay, tasks: int) -> None:
    with anyio.fail_after(20):
        while len(asyncio.all_tasks()) > tasks or relay.stats()["pending_rendezvous"]:
            await anyio.sleep(0.05)
    gc.collect()


async def test_memory_and_tasks_return_to_baseline_after_2000_hostile_connections(
    relay: Relay, listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hyco")  # captured records would count as growth
    tracemalloc.start()
    try:
        await _attack(relay, 200)  # warm up: caches, code paths, the first of each error
        await round_trip(relay)
        await anyio.sleep(0.5)
        tasks = len(asyncio.all_tasks())
        await _settle(relay, tasks)
        descriptors, rss = _open_descriptors(), _rss_kib()
        baseline, _ = tracemalloc.get_traced_memory()
        started = time.monotonic()
        await _attack(relay, 2000)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        await _settle(relay, tasks)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = after - baseline
    rss_after = _rss_kib()
    print(
        f"2000 hostile connections in {elapsed:.1f} s: traced memory {baseline / 1024:.0f} KiB "
        f"-> peak {peak / 1024:.0f} KiB -> {after / 1024:.0f} KiB ({growth / 1024:+.0f} KiB); "
        f"RSS {rss} -> {rss_after} KiB; tasks {tasks} -> {len(asyncio.all_tasks())}; "
        f"descriptors {descriptors} -> {_open_descriptors()}"
    )
    assert growth < 512 * 1024, f"{growth} bytes still held after the attack"
    assert len(asyncio.all_tasks()) <= tasks
    assert _open_descriptors() == descriptors
    assert relay.listener_count("localhost", "hc1") == 1
    await still_serves(relay)

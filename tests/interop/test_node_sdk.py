"""Microsoft's Node packages ``hyco-ws`` and ``hyco-https`` through our relay, with our clients.

Each scenario runs the official package in a Node subprocess against the local relay on
127.0.0.1, and our anyio listener or sender, httpx or curl on the other side. Where the official
packages misbehave, the tests pin down what actually happens and that our side survives it with
a typed error; ``conformance/interop/README.md`` explains every finding.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from hyco_conformance.drivers import driver_for
from hyco_core import (
    AuthorizationError,
    ConnectionClosed,
    ListenerUnavailableError,
    RelayTimeoutError,
    parse_relay_url,
    parse_sas_token,
)
from hyco_core.service import verify_sas_token
from hyco_relay.config import parse_config
from hyco_relay.server import Relay, serve_relay
from hyco_relay.tls import client_ssl_context, ensure_development_certificates, server_ssl_context
from hyco_transports.anyio import AcceptContext, Listener, WebSocket, connect
from hyco_transports.httpx import RelayAuth

from .conftest import (
    CONFIG,
    ENTITY,
    NodeScript,
    node_script,
    script_environment,
    sender_token,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("node_packages")]

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed (.ci/run installs it)")

ONE_MIB = bytes(range(256)) * 4096


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listener_env(relay: Relay) -> dict[str, str]:
    return script_environment(relay.address, role="listener")


def sender_env(relay: Relay) -> dict[str, str]:
    return script_environment(relay.address, role="sender")


def sender_connection_string(relay: Relay) -> str:
    return relay.connection_string(ENTITY, "send-only")


# -- hyco-ws -----------------------------------------------------------------------------------


async def test_hyco_ws_listener_echoes_our_sender(relay: Relay) -> None:
    async with node_script("ws_listener.js", env=listener_env(relay)) as listener:
        cs = sender_connection_string(relay)
        async with connect(cs, subprotocols=["chat.v2", "chat.v1"]) as ws:
            # hyco-ws has no protocol choice of its own: it takes the sender's first offer.
            assert ws.subprotocol == "chat.v2"
            await ws.send("hello, hyco-ws")
            assert await ws.recv() == "hello, hyco-ws"
            await ws.send(b"\x00\x01\xfe\xff")
            assert await ws.recv() == b"\x00\x01\xfe\xff"
            await ws.send(ONE_MIB)
            assert await ws.recv() == ONE_MIB
            await ws.send("close-please")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert (closed.value.code, closed.value.reason) == (4321, "listener says bye")

        events = await listener.events_until("close")
    assert events[:2] == [{"event": "connection"}, {"event": "open", "protocol": "chat.v2"}]
    received = [(e["binary"], e["length"], e["sha256"]) for e in events if e["event"] == "message"]
    assert received == [
        (False, 14, sha256(b"hello, hyco-ws")),
        (True, 4, sha256(b"\x00\x01\xfe\xff")),
        (True, len(ONE_MIB), sha256(ONE_MIB)),
        (False, 12, sha256(b"close-please")),
    ]
    assert events[-1] == {"event": "close", "code": 4321, "reason": "listener says bye"}


async def test_our_listener_serves_hyco_ws_sender(relay: Relay) -> None:
    offers: list[AcceptContext] = []
    sender_closes: list[tuple[int, str]] = []
    second_closed = anyio.Event()

    async def inspect(context: AcceptContext) -> None:
        offers.append(context)

    async def echo(ws: WebSocket) -> None:
        try:
            async for message in ws:
                if message == "close-please":
                    await ws.close(4321, "listener says bye")
                    return
                await ws.send(message)
        except ConnectionClosed as closed:
            sender_closes.append((closed.code, closed.reason))
            second_closed.set()

    cs = relay.connection_string(ENTITY, "listen-only")
    async with Listener.from_connection_string(cs, accept_handler=inspect, connection_handler=echo):
        async with node_script("ws_sender.js", env=sender_env(relay), ready=False) as sender:
            events = await sender.events_until("done")
            assert await sender.exit_code() == 0
        with anyio.fail_after(5):
            await second_closed.wait()

    opened, *echoes, closed_by_listener, _done = events
    # ws 1.1 offers permessage-deflate; the relay does not negotiate it on rendezvous sockets.
    assert opened == {"event": "open", "protocol": None, "extensions": []}
    assert "permessage-deflate" in offers[0].headers["sec-websocket-extensions"]
    assert "servicebusauthorization" not in offers[0].headers
    assert [e["sent"] == e["received"] for e in echoes] == [True, True, True]
    assert [e["sent"]["binary"] for e in echoes] == [False, True, True]
    assert closed_by_listener == {
        "event": "closed-by-listener",
        "code": 4321,
        "reason": "listener says bye",
    }
    assert sender_closes == [(4001, "sender says bye")]


async def test_hyco_ws_sender_and_listener_through_the_tls_relay(tmp_path: Path) -> None:
    certificates = ensure_development_certificates(tmp_path / "tls")
    context = server_ssl_context(certificates.certificate, certificates.private_key)
    async with serve_relay(parse_config(CONFIG), ssl_context=context) as relay:
        trust = {"NODE_EXTRA_CA_CERTS": str(certificates.ca_certificate)}
        address = f"localhost:{relay.port}"
        listener_environment = script_environment(
            address, role="listener", scheme="wss", extra=trust
        )
        sender_environment = script_environment(address, role="sender", scheme="wss", extra=trust)
        async with node_script("ws_listener.js", env=listener_environment):
            async with node_script("ws_sender.js", env=sender_environment, ready=False) as sender:
                events = await sender.events_until("done")
            assert [e["sent"] == e["received"] for e in events if e["event"] == "echo"] == [
                True,
                True,
                True,
            ]
            ssl_context = client_ssl_context(certificates.ca_certificate)
            async with connect(sender_connection_string(relay), ssl_context=ssl_context) as ws:
                await ws.send("over TLS")
                assert await ws.recv() == "over TLS"


async def test_hyco_ws_reject_path_crashes_the_listener_and_our_sender_times_out(
    relay: Relay,
) -> None:
    """hyco-ws's refusal hook throws ReferenceError: nothing reaches the relay, the process dies,
    and the relay answers the waiting sender 504 as soon as the listener's connection drops."""
    cs = sender_connection_string(relay)
    async with node_script("ws_listener.js", "refuse", env=listener_env(relay)) as listener:
        with pytest.raises(RelayTimeoutError) as timed_out:
            async with connect(cs):
                pass
        assert await listener.exit_code() != 0
        assert "ReferenceError: socket is not defined" in listener.stderr()
    assert timed_out.value.status_code == 504
    assert "The listener went away before it accepted the connection" in str(timed_out.value)
    with pytest.raises(ListenerUnavailableError) as gone:
        async with connect(cs):
            pass
    assert gone.value.status_code == 404


async def test_hyco_ws_listener_outlives_its_token_then_reconnects_at_once(relay: Relay) -> None:
    """hyco-ws renews its token every hour whatever its lifetime; the relay enforces expiry."""
    async with node_script("ws_listener.js", "echo", "2", env=listener_env(relay)) as listener:
        closed = await listener.event(timeout=10)
        assert (closed["event"], closed["code"]) == ("control-closed", 1008)
        assert closed["reason"] == "The token expired"
        assert await listener.event(timeout=5) == {"event": "listening"}
        async with connect(sender_connection_string(relay)) as ws:
            await ws.send("still here")
            assert await ws.recv() == "still here"


async def test_refused_listeners_hyco_ws_retries_without_pause_hyco_https_backs_off(
    relay: Relay,
) -> None:
    wrong_key = script_environment(
        relay.address, role="listener", extra={"HYCO_KEY": "d3Jvbmcta2V5"}
    )
    async with (
        node_script("ws_listener.js", env=wrong_key, ready=False) as ws_listener,
        node_script("https_listener.js", env=wrong_key, ready=False) as https_listener,
        anyio.create_task_group() as tasks,
    ):
        seen: dict[str, list[dict[str, object]]] = {}

        async def watch(name: str, script: NodeScript) -> None:
            seen[name] = await script.events_during(2.0)

        tasks.start_soon(watch, "hyco-ws", ws_listener)
        tasks.start_soon(watch, "hyco-https", https_listener)
    refusals = {name: [e for e in events if e["event"] == "error"] for name, events in seen.items()}
    assert all("401" in str(e["message"]) for events in refusals.values() for e in events)
    # A backoff schedule of 0, 1, 2, 5 ... s allows at most 3 attempts in 2 s.
    assert len(refusals["hyco-ws"]) >= 10
    assert 1 <= len(refusals["hyco-https"]) <= 3


@pytest.mark.parametrize(
    ("status_name", "description_name", "rejected"),
    [
        pytest.param("statusCode", "statusDescription", False, id="hyco-ws-names"),
        pytest.param("sb-hc-statusCode", "sb-hc-statusDescription", True, id="protocol-names"),
    ],
)
async def test_reject_query_names(
    relay: Relay, status_name: str, description_name: str, rejected: bool
) -> None:
    """hyco-ws's reject address lacks the ``sb-hc-`` prefix: the relay takes it as an accept."""
    cs = sender_connection_string(relay)
    env = listener_env(relay)
    async with node_script("reject_query.js", status_name, description_name, env=env) as listener:
        if rejected:
            # The listener's 401 reaches the sender as is, typed by its status like a relay's.
            with pytest.raises(AuthorizationError) as refusal:
                async with connect(cs):
                    pass
            assert refusal.value.status_code == 401
            assert refusal.value.reason.startswith("Unauthorized")
            event = await listener.event()
            assert event["event"] == "reject-socket-error"
            assert "410" in event["message"]
        else:
            async with connect(cs) as ws:
                assert await listener.event() == {"event": "reject-socket-open"}
                await ws.send("am I rejected?")
                assert await listener.event() == {
                    "event": "message-on-reject-socket",
                    "data": "am I rejected?",
                }


async def test_sdk_address_and_token_forms() -> None:
    namespace, key = "contoso.servicebus.windows.net", "a2V5LWZvci1ub2RlLXRva2Vucw=="
    tracking_id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    env = script_environment("unused:1", role="sender")
    arguments = (namespace, ENTITY, "root", key, tracking_id)
    async with node_script("sdk_helpers.js", *arguments, env=env, ready=False) as helpers:
        forms = await helpers.event()
    ws, https = forms["ws"], forms["https"]
    target = f"sb://{namespace}/{ENTITY}"
    now = float(forms["now"])

    # Addresses: wss:// and an explicit :443 always; token before id in the query.
    assert ws["listenUri"] == f"wss://{namespace}:443/$hc/{ENTITY}?sb-hc-action=listen"
    assert ws["sendUri"] == f"wss://{namespace}:443/$hc/{ENTITY}?sb-hc-action=connect"
    assert ws["sendUriWithTokenAndId"].endswith(
        f"?sb-hc-action=connect&sb-hc-token=TOKEN&sb-hc-id={tracking_id}"
    )
    listen = parse_relay_url(ws["listenUriWithTokenAndId"])
    assert (listen.action, listen.tracking_id, listen.token) == ("listen", tracking_id, "TOKEN")
    assert https["httpsUri"] == f"https://{namespace}/{ENTITY}"
    assert parse_relay_url(https["httpsUriWithTokenAndId"]).tracking_id == tracking_id

    # Tokens: http://, $hc/ and the query dropped, the port kept, no trailing slash, one hour.
    for token, resource in (
        (ws["tokenForListenUri"], f"http://{namespace}:443/{ENTITY}"),
        (https["tokenForHttpsUri"], f"http://{namespace}/{ENTITY}"),
    ):
        parsed = parse_sas_token(token)
        assert parsed.resource == resource
        assert parsed.key_name == "root"
        assert 3595 <= parsed.expiry - now <= 3605
        verdict = verify_sas_token(token, keys={"root": [key]}, target=target, now=now)
        assert verdict.valid, verdict.detail

    appended = parse_relay_url(ws["appendedToListenUri"])
    assert appended.action == "listen"
    assert appended.token is not None
    assert parse_sas_token(appended.token).resource == f"http://{namespace}:443/{ENTITY}"
    # appendRelayToken on an address without a query writes the missing query as "null".
    bare_ws = parse_relay_url(ws["appendedToUriWithoutQuery"])
    assert (bare_ws.query, bare_ws.token is not None) == ("null", True)
    bare_https = parse_relay_url(https["appendedToUriWithoutQuery"])
    assert bare_https.token is None
    assert bare_https.query.startswith("null?sb-hc-token=")
    # The listeners' documented "id" option refers to an undefined variable.
    assert (
        ws["listenerWithId"]
        == https["listenerWithId"]
        == ("ReferenceError: listenUri is not defined")
    )


# -- hyco-https --------------------------------------------------------------------------------


@pytest.fixture
async def https_listener(relay: Relay) -> AsyncIterator[None]:
    async with node_script("https_listener.js", env=listener_env(relay)):
        yield


@needs_curl
@pytest.mark.usefixtures("https_listener")
async def test_hyco_https_listener_answers_curl(relay: Relay) -> None:
    assert CURL is not None
    url = f"http://{relay.address}/{ENTITY}/orders/7?page=2"
    headers = ["-H", f"ServiceBusAuthorization: {sender_token(relay)}", "-H", "X-Custom: from curl"]
    small = await anyio.run_process(
        [CURL, "--silent", "--show-error", "--include", *headers, "--data-binary", "hello", url],
        check=False,
    )
    head, _, body = small.stdout.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    received = dict(line.split(": ", 1) for line in header_lines)
    assert status_line == "HTTP/1.1 201 Made by hyco-https"
    assert body == b"olleh"
    assert received["x-request-method"] == "POST"
    assert received["x-request-url"] == f"/{ENTITY}/orders/7?page=2"
    assert received["x-request-custom"] == "from curl"
    assert received["Via"] == "1.1 localhost"

    # A response over 64 KiB: hyco-https sends it over the request's rendezvous address.
    large = await anyio.run_process(
        [CURL, "--silent", "--show-error", "--fail", *headers, f"{url}&size=200000"],
        check=False,
    )
    assert large.stdout == b"g" * 200_000


@pytest.mark.usefixtures("https_listener")
async def test_hyco_https_listener_answers_httpx(relay: Relay) -> None:
    auth = RelayAuth.from_connection_string(sender_connection_string(relay))
    async with httpx.AsyncClient(auth=auth, timeout=10) as client:
        small = await client.post(
            auth.url("/orders", "page=2"), content=b"hello", headers={"X-Custom": "from httpx"}
        )
        large = await client.get(auth.url("/report", "size=300000"))
    assert (small.status_code, small.reason_phrase) == (201, "Made by hyco-https")
    assert small.content == b"olleh"
    assert small.headers["x-request-url"] == f"/{ENTITY}/orders?page=2"
    assert small.headers["x-request-length"] == "5"
    assert small.headers["x-request-custom"] == "from httpx"
    assert small.headers["content-type"] == "application/octet-stream"
    # hyco-https sends only the first value of a header set to several values.
    assert small.headers.get_list("x-multi") == ["first"]
    assert small.headers["via"] == "1.1 localhost"
    assert large.status_code == 200
    assert large.content == b"g" * 300_000


@pytest.mark.usefixtures("https_listener")
async def test_hyco_https_listener_reads_request_bodies_over_64_kib(relay: Relay) -> None:
    """hyco-https tells an announcement from an inline request by the absence of a method, so
    the relay announces rendezvous requests with their address and id only."""
    auth = RelayAuth.from_connection_string(sender_connection_string(relay))
    payload = ONE_MIB[: 100 * 1024]
    async with httpx.AsyncClient(auth=auth, timeout=10) as client:
        response = await client.post(auth.url("/upload"), content=payload)
    assert response.headers["x-request-length"] == str(len(payload))
    assert response.content == payload[::-1]
    if CURL is not None:
        token = ["-H", f"ServiceBusAuthorization: {sender_token(relay)}"]
        uploaded = await anyio.run_process(
            [CURL, "--silent", "--show-error", *token, "--data-binary", "@-", auth.url("/upload")],
            input=payload,
            check=False,
        )
        assert uploaded.stdout == payload[::-1]


async def test_hyco_https_listener_crashes_on_a_websocket_sender(relay: Relay) -> None:
    """hyco-https's WebSocket accept path uses a module it never imported."""
    cs = sender_connection_string(relay)
    async with node_script("https_listener.js", env=listener_env(relay)) as listener:
        with pytest.raises(RelayTimeoutError) as timed_out:
            async with connect(cs):
                pass
        assert await listener.exit_code() != 0
        assert "ReferenceError: Extensions is not defined" in listener.stderr()
    assert timed_out.value.status_code == 504


async def test_hyco_https_keepalive_sends_pongs_the_relay_tolerates(relay: Relay) -> None:
    """hyco-https's keep-alive is an unsolicited pong frame, and only with keepAliveTimeout."""
    auth = RelayAuth.from_connection_string(sender_connection_string(relay))
    async with node_script("https_listener.js", "100", env=listener_env(relay)) as listener:
        for _ in range(3):
            assert await listener.event() == {"event": "keep-alive", "frame": "pong"}
        async with httpx.AsyncClient(auth=auth, timeout=10) as client:
            response = await client.get(auth.url("/still-there", "size=3"))
    assert (response.status_code, response.content) == (200, b"ggg")


@pytest.mark.parametrize("transport", ["anyio-trio", "sync", "gevent"])
async def test_hyco_ws_listener_echoes_each_of_our_transports(relay: Relay, transport: str) -> None:
    """The other transports' senders, through their conformance drivers (blocking calls)."""
    async with node_script("ws_listener.js", env=listener_env(relay)):

        def exchange() -> None:
            driver = driver_for(transport)
            try:
                sender = driver.connect(sender_connection_string(relay), subprotocols=["chat.v1"])
                try:
                    assert sender.subprotocol == "chat.v1"
                    for message in ("hello, hyco-ws", b"\x00\x01\xfe\xff", ONE_MIB):
                        sender.send(message)
                        assert sender.recv(10) == message
                finally:
                    sender.close()
            finally:
                driver.close()

        await anyio.to_thread.run_sync(exchange)

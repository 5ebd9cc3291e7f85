"""Our listeners and senders against a relay that misbehaves.

Listeners (anyio and threads) log what they drop, stay online or reconnect, and keep serving:
after every misbehaviour a fresh ``accept`` must still be echoed end to end. Senders fail with
a typed :class:`~hyco_core.HycoError` and never hang. No log and no error shows the SAS key or
the signature of a token, even when the relay echoes the token back.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import anyio
import pytest

from hyco_core import (
    AuthorizationError,
    ConnectionClosed,
    ConnectionLostError,
    HycoError,
    KeepAlive,
    ListenerStatus,
    ListenerUnavailableError,
    RelayServerError,
    RelayTimeoutError,
    RemoteProtocolError,
    parse_sas_token,
)
from hyco_core.timing import Backoff
from hyco_transports import anyio as anyio_transport
from hyco_transports import sync as sync_transport

from .hostile_relay import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    SAS_KEY,
    HostileRelay,
    Peer,
    PeerClosed,
    frame,
)

MiB = 1024 * 1024
FAST_BACKOFF = (0.0, 0.05)
_serial = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def relay() -> Iterator[HostileRelay]:
    with HostileRelay() as hostile:
        hostile.scripts["accept"] = lambda peer: _rendezvous(hostile, peer)
        hostile.scripts["request"] = lambda peer: _rendezvous(hostile, peer)
        yield hostile
    assert hostile.errors == []


def _rendezvous(relay: HostileRelay, peer: Peer) -> None:
    """Rendezvous ids say how the relay treats them: ``unknown-*`` are refused, as a relay
    refuses an address it never gave out; ``garbage-*`` get bytes that are not HTTP."""
    rendezvous_id = peer.handshake.query.get("sb-hc-id", "")
    if rendezvous_id.startswith("unknown-"):
        status = 403 if peer.handshake.action == "accept" else 400
        peer.refuse(status, "The rendezvous address is unknown or expired")
    elif rendezvous_id.startswith("garbage-"):
        peer.send_raw(b"\x16\x03\x01 this is no HTTP answer\r\n\r\n")
        peer.drop()
    else:
        relay.welcome(peer)


def _linger(peer: Peer) -> None:
    """Stay until the client leaves, answering its pings and its close."""
    with contextlib.suppress(PeerClosed, TimeoutError, OSError):
        peer.wait_for_close(30)


def _token_secrets(relay: HostileRelay) -> list[str]:
    """The key, and the signature (as sent and decoded) of every token the relay saw."""
    secrets = [SAS_KEY]
    for handshake in relay.handshakes:
        token = handshake.headers.get("servicebusauthorization")
        if token:
            signature = parse_sas_token(token).signature
            secrets += [signature, quote(signature, safe="")]
    assert len(secrets) > 1, "no token reached the relay"
    return secrets


def _assert_no_secret(relay: HostileRelay, *texts: str) -> None:
    secrets = _token_secrets(relay)
    leaks = [index for index, text in enumerate(texts) if any(s in text for s in secrets)]
    assert not leaks, f"a secret shows in text #{leaks} of {len(texts)}"


def _error_texts(error: BaseException) -> list[str]:
    """``str`` and ``repr`` of an error and of everything it was raised from."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return texts


# -- listeners ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListenerCase:
    """A misbehaviour on a listener's control channel, and how the listener must take it.

    ``close_code`` is the code the listener closes with when it leaves (``None``: it drops the
    connection, or is not asked); ``logged`` a piece of the message it must log.
    """

    id: str
    act: Callable[[HostileRelay, Peer], None]
    reconnects: bool
    logged: str
    close_code: int | None = None
    read_close: bool = True
    keepalive: KeepAlive | None = None


def _accept(relay: HostileRelay, control: Peer, address: str, rendezvous_id: str) -> None:
    control.send_json(
        {"accept": {"address": address, "id": rendezvous_id, "connectHeaders": {"X-A": "b"}}}
    )


def _accept_unknown(relay: HostileRelay, control: Peer) -> None:
    _accept(relay, control, relay.address_for("accept", "unknown-1"), "unknown-1")


def _accept_garbage(relay: HostileRelay, control: Peer) -> None:
    _accept(relay, control, relay.address_for("accept", "garbage-1"), "garbage-1")


def _accept_at(address: str) -> Callable[[HostileRelay, Peer], None]:
    return lambda relay, control: _accept(relay, control, address, "bad-address")


def _request_unknown(relay: HostileRelay, control: Peer) -> None:
    control.send_json({"request": {"address": relay.address_for("request", "unknown-2")}})


def _send(*frames: bytes) -> Callable[[HostileRelay, Peer], None]:
    def act(relay: HostileRelay, control: Peer) -> None:
        for data in frames:
            control.send_raw(data)

    return act


def _send_json(*documents: object) -> Callable[[HostileRelay, Peer], None]:
    def act(relay: HostileRelay, control: Peer) -> None:
        for document in documents:
            control.send_json(document)

    return act


def _close_with(code: int, reason: str = "") -> bytes:
    return frame(OP_CLOSE, code.to_bytes(2, "big") + reason.encode())


def _send_close(payload: bytes) -> Callable[[HostileRelay, Peer], None]:
    """A close frame as given, even one RFC 6455 forbids."""

    def act(relay: HostileRelay, control: Peer) -> None:
        control.close_sent = True
        control.send_frame(OP_CLOSE, payload)

    return act


def _code(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


def _cut_then_drop(relay: HostileRelay, control: Peer) -> None:
    control.send_raw(frame(OP_BINARY, b"0123456789", length=100))
    control.drop()


def _echo_token_in_close(relay: HostileRelay, control: Peer) -> None:
    token = control.handshake.headers["servicebusauthorization"]
    signature = token.partition("&sig=")[2].partition("&")[0]
    control.send_close(1008, f"Token expired: sr=x&sig={signature}&se=1")


def _refuse_reconnect_echoing_token(relay: HostileRelay, control: Peer) -> None:
    def refuse_once(peer: Peer) -> None:
        relay.scripts.pop("listen")
        token = peer.handshake.headers["servicebusauthorization"]
        peer.refuse(401, f"Invalid token {token}")

    relay.scripts["listen"] = refuse_once
    control.drop()


def _rendezvous_too_big(relay: HostileRelay, control: Peer) -> None:
    """An accepted connection gets a message beyond the listener's limit: that connection
    closes with 1009, the listener carries on."""
    closes: queue.Queue[int | None] = queue.Queue()

    def too_big(peer: Peer) -> None:
        relay.scripts["accept"] = relay.welcome
        peer.accept_handshake()
        peer.send_binary(b"\0" * (2 * MiB))
        closes.put(peer.wait_for_close(20))

    relay.scripts["accept"] = too_big
    _accept(relay, control, relay.address_for("accept", "big-1"), "big-1")
    assert closes.get(timeout=20) == 1009


REQUEST = {"address": "ws://127.0.0.1:1/$hc/hyco?sb-hc-action=request&sb-hc-id=r1", "id": "r1"}

LISTENER_CASES = [
    # -- dropped or refused, and the listener stays online on the same control channel
    ListenerCase("unknown-message-type", _send_json({"frobnicate": {"x": 1}}), False, "ignored"),
    ListenerCase("unknown-type-with-a-huge-name", _send_json({"k" * 200_000: 1}), False, "ignored"),
    ListenerCase(
        "response-sent-to-a-listener",
        _send_json({"response": {"requestId": "x", "statusCode": 200}}),
        False,
        "ignored response",
    ),
    ListenerCase(
        "renew-token-sent-to-a-listener",
        _send_json({"renewToken": {"token": f"SharedAccessSignature sig={SAS_KEY}"}}),
        False,
        "ignored renewToken",
    ),
    ListenerCase(
        "binary-where-text-belongs",
        _send(frame(OP_BINARY, b"\0" * 70_000)),
        False,
        "ignored binary",
    ),
    ListenerCase("accept-for-an-unknown-id", _accept_unknown, False, "could not complete"),
    ListenerCase("accept-answered-with-garbage", _accept_garbage, False, "could not complete"),
    ListenerCase(
        "accept-with-an-invalid-address", _accept_at("not an address"), False, "could not complete"
    ),
    ListenerCase(
        "accept-with-a-port-out-of-range",
        _accept_at("ws://127.0.0.1:99999/$hc/hyco?sb-hc-action=accept&sb-hc-id=x"),
        False,
        "could not complete",
    ),
    ListenerCase(
        "accept-at-a-closed-port",
        _accept_at("ws://127.0.0.1:1/$hc/hyco?sb-hc-action=accept&sb-hc-id=x"),
        False,
        "could not complete",
    ),
    ListenerCase(
        "accept-with-an-https-address",
        _accept_at("https://127.0.0.1:1/$hc/hyco?sb-hc-action=accept&sb-hc-id=x"),
        False,
        "could not complete",
    ),
    ListenerCase(
        "request-rendezvous-refused", _request_unknown, False, "could not open the HTTP rendezvous"
    ),
    ListenerCase("accepted-socket-sent-too-much", _rendezvous_too_big, False, "big-1 ended"),
    # -- broken: the listener leaves (with the close code) and comes back
    ListenerCase("garbage-bytes", _send(b"\xff\x00garbage"), True, "listener offline", 1002),
    ListenerCase(
        "invalid-json", _send(frame(OP_TEXT, b"{not json")), True, "listener offline", 1002
    ),
    ListenerCase(
        "text-beyond-the-control-message-limit",
        _send(frame(OP_TEXT, b"x" * 300_000)),
        True,
        "listener offline",
        1009,
    ),
    ListenerCase(
        "request-with-a-number-for-an-address",
        _send_json({"request": {"address": 5, "id": "r1"}}),
        True,
        "listener offline",
        1002,
    ),
    ListenerCase(
        "request-with-a-header-name-that-is-no-token",
        _send_json({"request": {**REQUEST, "method": "GET", "requestHeaders": {"a b": "c"}}}),
        True,
        "listener offline",
        1002,
    ),
    ListenerCase(
        "request-body-replaced-by-text",
        _send_json({"request": {**REQUEST, "method": "GET", "body": True}}, {"x": 1}),
        True,
        "listener offline",
        1002,
    ),
    ListenerCase(
        "inline-request-body-beyond-64-kib",
        _send(
            frame(OP_TEXT, b'{"request": {"address": "ws://h/x", "id": "r", "body": true}}'),
            frame(OP_BINARY, b"\0" * 70_000),
        ),
        True,
        "listener offline",
        1009,
    ),
    ListenerCase(
        "text-that-is-not-utf8", _send(frame(OP_TEXT, b"\xff\xfe")), True, "listener offline", 1007
    ),
    ListenerCase(
        "masked-frame", _send(frame(OP_TEXT, b"{}", masked=True)), True, "listener offline", 1002
    ),
    ListenerCase(
        "oversized-ping", _send(frame(OP_PING, b"p" * 200)), True, "listener offline", 1002
    ),
    ListenerCase("close-1000", _send_close(_code(1000)), True, "listener offline", 1000),
    ListenerCase(
        "close-1001", _send_close(_code(1001, "maintenance")), True, "listener offline", 1001
    ),
    ListenerCase("close-1008", _send_close(_code(1008)), True, "listener offline", 1008),
    ListenerCase("close-1011", _send_close(_code(1011)), True, "listener offline", 1011),
    ListenerCase("close-4999", _send_close(_code(4999, "odd")), True, "listener offline", 4999),
    ListenerCase("close-reserved-1005", _send_close(_code(1005)), True, "listener offline", 1002),
    ListenerCase("close-code-999", _send_close(_code(999)), True, "listener offline", 1002),
    ListenerCase("close-one-byte", _send_close(b"\x03"), True, "listener offline", 1002),
    ListenerCase(
        "close-reason-not-utf8", _send_close(b"\x03\xe8\xff"), True, "listener offline", 1007
    ),
    ListenerCase("close-echoing-the-token", _echo_token_in_close, True, "listener offline", 1008),
    ListenerCase(
        "frame-cut-short-then-dropped", _cut_then_drop, True, "listener offline", read_close=False
    ),
    ListenerCase(
        "reconnect-refused-echoing-the-token",
        _refuse_reconnect_echoing_token,
        True,
        "listener offline",
        read_close=False,
    ),
    ListenerCase(
        "frame-cut-short-then-silence",
        _send(frame(OP_BINARY, b"0123456789", length=100)),
        True,
        "no sign of life",
        read_close=False,
        keepalive=KeepAlive(ping_interval=0.5, pong_timeout=1.0),
    ),
]


def _listener_options(case: ListenerCase) -> dict[str, Any]:
    return {
        "backoff": Backoff(FAST_BACKOFF),
        "keepalive": case.keepalive,
        "max_message_size": MiB,
    }


def _run_listener_case(relay: HostileRelay, case: ListenerCase) -> None:
    """Misbehave on the control channel, then prove the listener still serves (blocking)."""
    control = relay.next_peer("listen")
    case.act(relay, control)
    if case.reconnects:
        if case.read_close:
            assert control.wait_for_close() == case.close_code
        control = relay.next_peer("listen")
    relay.keep_answering(control)
    _prove_serving(relay, control)
    listens = [h for h in relay.handshakes if h.action == "listen"]
    if not case.reconnects:
        assert len(listens) == 1, "the listener left its control channel"


def _prove_serving(relay: HostileRelay, control: Peer) -> None:
    rendezvous_id = f"proof-{next(_serial)}"
    _accept(relay, control, relay.address_for("accept", rendezvous_id), rendezvous_id)
    rendezvous = relay.next_peer("accept")
    rendezvous.send_text("still serving?")
    assert rendezvous.receive_message() == "still serving?"
    rendezvous.send_close(1000)
    assert rendezvous.wait_for_close() == 1000


def _check_listener_logs(
    relay: HostileRelay, case: ListenerCase, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [record.getMessage() for record in caplog.records]
    assert any(case.logged in message for message in messages), messages
    assert max(len(message) for message in messages) < 2000, "a log line was not truncated"
    _assert_no_secret(relay, caplog.text)


async def _anyio_echo(ws: anyio_transport.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


def _sync_echo(ws: sync_transport.WebSocket) -> None:
    for message in ws:
        ws.send(message)


@pytest.mark.anyio
@pytest.mark.parametrize("case", LISTENER_CASES, ids=[c.id for c in LISTENER_CASES])
async def test_anyio_listener_drops_what_it_must_and_keeps_serving(
    relay: HostileRelay, case: ListenerCase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hyco")
    with anyio.fail_after(60):
        async with anyio_transport.Listener.from_connection_string(
            relay.connection_string(), connection_handler=_anyio_echo, **_listener_options(case)
        ) as listener:
            await anyio.to_thread.run_sync(_run_listener_case, relay, case)
            assert listener.status is ListenerStatus.ONLINE
    _check_listener_logs(relay, case, caplog)


@pytest.mark.parametrize("case", LISTENER_CASES, ids=[c.id for c in LISTENER_CASES])
def test_sync_listener_drops_what_it_must_and_keeps_serving(
    relay: HostileRelay, case: ListenerCase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hyco")
    with sync_transport.Listener.from_connection_string(
        relay.connection_string(), connection_handler=_sync_echo, **_listener_options(case)
    ) as listener:
        _run_listener_case(relay, case)
        assert listener.status is ListenerStatus.ONLINE
    _check_listener_logs(relay, case, caplog)


# -- senders -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SenderCase:
    """What the relay does with a sender's handshake, and the error the sender must raise
    (``code``: the :class:`~hyco_core.ConnectionClosed` code; ``cause``: its cause)."""

    id: str
    script: Callable[[Peer], None]
    error: type[HycoError]
    code: int | None = None
    cause: type[HycoError] | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _answer(raw: bytes) -> Callable[[Peer], None]:
    def script(peer: Peer) -> None:
        peer.send_raw(raw)
        _linger(peer)

    return script


def _open_then(*frames: bytes, drop: bool = False) -> Callable[[Peer], None]:
    def script(peer: Peer) -> None:
        peer.accept_handshake()
        for data in frames:
            peer.close_sent = peer.close_sent or data[0] & 0x0F == OP_CLOSE
            peer.send_raw(data)
        if drop:
            peer.drop()
        else:
            _linger(peer)

    return script


def _open_then_split(data: bytes, at: int) -> Callable[[Peer], None]:
    """Send ``data`` in two writes a moment apart, so that the client reads it in two pieces."""

    def script(peer: Peer) -> None:
        peer.accept_handshake()
        peer.send_raw(data[:at])
        time.sleep(0.3)
        peer.send_raw(data[at:])
        _linger(peer)

    return script


def _open_with(*headers: tuple[str, str], key: str | None = None) -> Callable[[Peer], None]:
    def script(peer: Peer) -> None:
        peer.accept_handshake(accept_key=key, headers=headers)
        _linger(peer)

    return script


def _refuse_echoing_token(peer: Peer) -> None:
    token = peer.handshake.headers["servicebusauthorization"]
    peer.refuse(401, f"Invalid token {token}")


def _huge_frame_then_drop_at_close(peer: Peer) -> None:
    peer.accept_handshake()
    peer.send_raw(frame(OP_BINARY, b"\0" * (2 * MiB), length=1 << 62))
    # The client's close cannot be answered: a close frame now would be read as payload.
    with contextlib.suppress(PeerClosed, TimeoutError, OSError):
        peer.receive_frame(20)
    peer.drop()


def _stall_mid_frame(peer: Peer) -> None:
    peer.accept_handshake()
    peer.send_raw(frame(OP_TEXT, b"0123456789", length=100))
    try:
        while peer.sock.recv(65536):  # read its pings, answer nothing
            pass
    except OSError:
        pass


def _silent(peer: Peer) -> None:
    with contextlib.suppress(OSError):
        peer.sock.recv(1)


SENDER_CASES = [
    SenderCase("garbage-instead-of-http", _answer(b"\x00\xffgarbage\r\n\r\n"), RemoteProtocolError),
    SenderCase(
        "status-line-of-100-kib", _answer(b"HTTP/1.1 101 " + b"x" * 100_000), RemoteProtocolError
    ),
    SenderCase("wrong-accept-key", _open_with(key="d3Jvbmc="), RemoteProtocolError),
    SenderCase(
        "switch-to-another-protocol",
        _answer(b"HTTP/1.1 101 OK\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"),
        RemoteProtocolError,
    ),
    SenderCase(
        "subprotocol-nobody-offered",
        _open_with(("Sec-WebSocket-Protocol", "chosen-by-nobody")),
        RemoteProtocolError,
    ),
    SenderCase(
        "extension-nobody-offered",
        _open_with(("Sec-WebSocket-Extensions", "permessage-deflate")),
        RemoteProtocolError,
    ),
    SenderCase("refusal-echoing-the-token", _refuse_echoing_token, AuthorizationError),
    SenderCase(
        "503-with-a-1-mib-body",
        lambda peer: peer.refuse(503, "Busy", b"x" * MiB),
        RelayServerError,
    ),
    SenderCase(
        "404-no-listener",
        lambda peer: peer.refuse(404, "No listener is connected"),
        ListenerUnavailableError,
    ),
    SenderCase("never-answers", _silent, RelayTimeoutError, options={"connect_timeout": 0.5}),
    SenderCase("drops-before-answering", lambda peer: peer.drop(), ConnectionLostError),
    SenderCase(
        "drops-after-opening", _open_then(drop=True), ConnectionClosed, 1006, ConnectionLostError
    ),
    SenderCase(
        "garbage-frames",
        _open_then(b"\xff\x00garbage"),
        ConnectionClosed,
        1002,
        RemoteProtocolError,
    ),
    SenderCase(
        "message-beyond-max-message-size",
        _open_then(frame(OP_BINARY, b"\0" * 100_000)),
        ConnectionClosed,
        1009,
        options={"max_message_size": 65536},
    ),
    SenderCase(
        # The tail that arrives after the refusal must not be taken for a message of its own.
        "message-beyond-max-message-size-read-in-two-pieces",
        _open_then_split(frame(OP_BINARY, b"\0" * 100_000), 70_000),
        ConnectionClosed,
        1009,
        options={"max_message_size": 65536},
    ),
    SenderCase(
        "frame-announcing-2-to-the-62-bytes",
        _huge_frame_then_drop_at_close,
        ConnectionClosed,
        1006,
        ConnectionLostError,
        options={"max_message_size": MiB},
    ),
    SenderCase(
        "frame-cut-short-then-dropped",
        _open_then(frame(OP_TEXT, b"0123456789", length=100), drop=True),
        ConnectionClosed,
        1006,
        ConnectionLostError,
    ),
    SenderCase(
        "frame-cut-short-then-silence",
        _stall_mid_frame,
        ConnectionClosed,
        1006,
        RelayTimeoutError,
        options={"keepalive": KeepAlive(ping_interval=0.3, pong_timeout=0.3)},
    ),
    SenderCase("close-4000", _open_then(_close_with(4000, "odd")), ConnectionClosed, 4000),
    SenderCase("close-1011", _open_then(_close_with(1011)), ConnectionClosed, 1011),
    SenderCase(
        "close-reserved-1005",
        _open_then(_close_with(1005)),
        ConnectionClosed,
        1002,
        RemoteProtocolError,
    ),
    SenderCase(
        "close-code-999", _open_then(_close_with(999)), ConnectionClosed, 1002, RemoteProtocolError
    ),
    SenderCase(
        "text-that-is-not-utf8",
        _open_then(frame(OP_TEXT, b"\xff\xfe")),
        ConnectionClosed,
        1007,
        RemoteProtocolError,
    ),
    SenderCase(
        "masked-frame",
        _open_then(frame(OP_TEXT, b"hi", masked=True)),
        ConnectionClosed,
        1002,
        RemoteProtocolError,
    ),
    SenderCase(
        "reserved-bits",
        _open_then(frame(OP_TEXT, b"hi", rsv=4)),
        ConnectionClosed,
        1002,
        RemoteProtocolError,
    ),
    SenderCase(
        "fragmented-ping",
        _open_then(frame(OP_PING, b"p", fin=False)),
        ConnectionClosed,
        1002,
        RemoteProtocolError,
    ),
    SenderCase(
        "continuation-without-a-start",
        _open_then(frame(0x0, b"more")),
        ConnectionClosed,
        1002,
        RemoteProtocolError,
    ),
]


def _check_sender_error(
    relay: HostileRelay, case: SenderCase, error: HycoError, caplog: pytest.LogCaptureFixture
) -> None:
    assert type(error) is case.error, repr(error)
    if isinstance(error, ConnectionClosed):
        assert error.code == case.code
        cause = error.__cause__
        assert (type(cause) if cause is not None else None) is case.cause, repr(cause)
    _assert_no_secret(relay, caplog.text, *_error_texts(error))


@pytest.mark.anyio
@pytest.mark.parametrize("case", SENDER_CASES, ids=[c.id for c in SENDER_CASES])
async def test_anyio_sender_raises_a_typed_error(
    relay: HostileRelay, case: SenderCase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hyco")
    relay.scripts["connect"] = case.script
    with anyio.fail_after(30), pytest.raises(HycoError) as caught:
        async with anyio_transport.connect(relay.connection_string(), **case.options) as ws:
            await ws.recv()
    _check_sender_error(relay, case, caught.value, caplog)


@pytest.mark.parametrize("case", SENDER_CASES, ids=[c.id for c in SENDER_CASES])
def test_sync_sender_raises_a_typed_error(
    relay: HostileRelay, case: SenderCase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hyco")
    relay.scripts["connect"] = case.script
    with (
        pytest.raises(HycoError) as caught,
        sync_transport.connect(relay.connection_string(), **case.options) as ws,
    ):
        ws.recv(timeout=30)
    _check_sender_error(relay, case, caught.value, caplog)

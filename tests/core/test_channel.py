"""The channel base, relayed WebSockets and reject channels against a scripted relay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco_core._wire import FramePong
from hyco_core.channel import (
    ChannelConfig,
    ChannelState,
    MessageAssembly,
    RejectChannel,
    RelayedWebSocket,
    WebSocketChannel,
    accept_connection,
    reject_connection,
)
from hyco_core.errors import (
    AuthorizationError,
    ConnectionLostError,
    ListenerUnavailableError,
    LocalProtocolError,
    QuotaExceededError,
    RejectedError,
    RelayTimeoutError,
    RemoteProtocolError,
)
from hyco_core.events import (
    ChannelClosed,
    HandshakeRefused,
    MessageReceived,
    Opened,
    RejectDelivered,
)
from hyco_core.messages import Accept, Headers
from hyco_core.timing import KeepAlive

from .scripted_relay import NONCE, ScriptedRelay, connect, flush

URL = "wss://contoso.servicebus.windows.net/$hc/hc1/suffix?x=1&sb-hc-action=connect&sb-hc-id=abc"
TRACKING = "TrackingId:1f2e3d4c-0000-4000-8000-00000000abcd_G3, SystemTracker:contoso:hc1"


def sender(**kwargs: object) -> RelayedWebSocket:
    options: dict[str, object] = {"url": URL, "now": 0.0, "nonce": NONCE}
    options.update(kwargs)
    return RelayedWebSocket(**options)  # type: ignore[arg-type]


def opened() -> tuple[RelayedWebSocket, ScriptedRelay]:
    channel, relay = sender(), ScriptedRelay()
    connect(channel, relay)
    assert [type(e) for e in channel.events()] == [Opened]
    return channel, relay


def test_handshake_request_carries_target_host_headers_and_subprotocols() -> None:
    channel = sender(
        headers=[("ServiceBusAuthorization", "SharedAccessSignature sr=x"), ("X-Custom", "1")],
        subprotocols=["chat", "superchat"],
    )
    relay = ScriptedRelay()
    relay.feed(channel.data_to_send())
    request = relay.request
    assert request is not None
    assert request.is_websocket
    assert request.target == "/$hc/hc1/suffix?x=1&sb-hc-action=connect&sb-hc-id=abc"
    assert request.headers["host"] == "contoso.servicebus.windows.net"
    assert request.headers["ServiceBusAuthorization"] == "SharedAccessSignature sr=x"
    assert request.headers["x-custom"] == "1"
    assert request.subprotocols == ("chat", "superchat")
    assert channel.state is ChannelState.CONNECTING


def test_explicit_port_reaches_the_host_header() -> None:
    channel = RelayedWebSocket(url="ws://127.0.0.1:9000/$hc/hc1", now=0.0, nonce=NONCE)
    relay = ScriptedRelay()
    relay.feed(channel.data_to_send())
    assert relay.request is not None
    assert relay.request.headers["host"] == "127.0.0.1:9000"


def test_accepted_handshake_opens_with_the_chosen_subprotocol() -> None:
    channel, relay = sender(subprotocols=["a", "b"]), ScriptedRelay()
    connect(channel, relay, subprotocol="b")
    (event,) = channel.events()
    assert isinstance(event, Opened)
    assert event.subprotocol == "b"
    assert channel.state is ChannelState.OPEN


def test_handshake_answer_fed_byte_by_byte() -> None:
    channel, relay = sender(), ScriptedRelay()
    relay.feed(channel.data_to_send())
    answer = relay.accept() + relay.send("hello")
    for i in range(len(answer)):
        channel.receive_data(answer[i : i + 1], 0.0)
    events = channel.events()
    assert isinstance(events[0], Opened)
    assert "".join(e.data for e in events[1:] if isinstance(e, MessageReceived)) == "hello"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("status", "reason", "error_type"),
    [
        (401, "Unauthorized: token missing", AuthorizationError),
        (403, "Forbidden: the token does not grant Listen", AuthorizationError),
        (403, "Quota exceeded: maximum 25 listeners", QuotaExceededError),
        (404, "No listener is connected to this hybrid connection", ListenerUnavailableError),
        (400, "Rejected by user code", RejectedError),
        (504, "Gateway timeout", RelayTimeoutError),
    ],
)
def test_refused_handshake_carries_status_reason_and_tracking_id(
    status: int, reason: str, error_type: type[Exception]
) -> None:
    channel, relay = sender(), ScriptedRelay()
    relay.feed(channel.data_to_send())
    channel.receive_data(relay.refuse(status, f"{reason}. {TRACKING}"), 0.0)
    (event,) = channel.events()
    assert isinstance(event, HandshakeRefused)
    assert event.status_code == status
    assert isinstance(event.error, error_type)
    assert event.error.status_code == status
    assert event.error.tracking_id == "1f2e3d4c-0000-4000-8000-00000000abcd_G3"
    assert reason in str(event.error)
    assert channel.state is ChannelState.CLOSED
    assert channel.get_timer() is None


def test_refusal_without_reason_uses_the_error_body() -> None:
    channel, relay = sender(), ScriptedRelay()
    relay.feed(channel.data_to_send())
    body = b'{"error":{"code":"TokenMissingOrInvalid","message":"Invalid token. TrackingId:t1"}}'
    channel.receive_data(relay.refuse(401, "", body=body), 0.0)
    (event,) = channel.events()
    assert isinstance(event, HandshakeRefused)
    assert event.error.reason == "Invalid token. TrackingId:t1"
    assert event.error.tracking_id == "t1"


@pytest.mark.parametrize("body", [b"", b"not json", b'{"error": 3}', b'{"error":{"message":7}}'])
def test_refusal_with_unusable_body_keeps_the_bare_status(body: bytes) -> None:
    channel, relay = sender(), ScriptedRelay()
    relay.feed(channel.data_to_send())
    channel.receive_data(relay.refuse(404, "", body=body), 0.0)
    (event,) = channel.events()
    assert isinstance(event, HandshakeRefused)
    assert event.error.status_code == 404
    assert "no reason given" in str(event.error)


def test_refusal_body_that_runs_until_close() -> None:
    channel = sender()
    channel.data_to_send()
    channel.receive_data(b"HTTP/1.1 500 Broken\r\n\r\npartial body", 0.0)
    assert channel.events() == []
    channel.receive_eof()
    (event,) = channel.events()
    assert isinstance(event, HandshakeRefused)
    assert event.body == b"partial body"


def test_informational_answers_before_the_switch_are_skipped() -> None:
    channel, relay = sender(), ScriptedRelay()
    relay.feed(channel.data_to_send())
    channel.receive_data(b"HTTP/1.1 100 Continue\r\n\r\n" + relay.accept(), 0.0)
    assert [type(e) for e in channel.events()] == [Opened]


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (b"HTTP/1.1 101 Switching\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", "other than"),
        (
            b"HTTP/1.1 101 S\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: wrong\r\n\r\n",
            "does not match",
        ),
        (b"garbage\r\n\r\n", "invalid HTTP"),
    ],
)
def test_bad_switch_is_a_remote_protocol_error(answer: bytes, complaint: str) -> None:
    channel = sender()
    channel.data_to_send()
    channel.receive_data(answer, 0.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert isinstance(event.error, RemoteProtocolError)
    assert complaint in str(event.error)
    assert channel.state is ChannelState.CLOSED


def _switch_with(extra: str) -> bytes:
    relay = ScriptedRelay()
    relay.feed(sender().data_to_send())
    answer = relay.accept()
    return answer.replace(b"\r\n\r\n", f"\r\n{extra}\r\n\r\n".encode())


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ("Sec-WebSocket-Extensions: permessage-deflate", "extension"),
        ("Sec-WebSocket-Protocol: unoffered", "not offered"),
    ],
)
def test_unrequested_extension_or_subprotocol_is_refused(extra: str, complaint: str) -> None:
    channel = sender()
    channel.data_to_send()
    channel.receive_data(_switch_with(extra), 0.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert complaint in str(event.error)


def test_eof_before_any_answer_is_a_lost_connection() -> None:
    channel = sender()
    channel.data_to_send()
    channel.receive_eof()
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert event.code == 1006
    assert isinstance(event.error, ConnectionLostError)
    channel.receive_eof()
    channel.receive_data(b"late", 1.0)
    assert channel.events() == []


def test_eof_in_the_middle_of_the_answer_headers_is_a_lost_connection() -> None:
    channel = sender()
    channel.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nUpgr", 0.0)
    channel.receive_eof()
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert isinstance(event.error, ConnectionLostError)


def test_handshake_times_out() -> None:
    channel = sender(config=ChannelConfig(handshake_timeout=20.0))
    assert channel.get_timer() == 20.0
    channel.handle_timer(19.9)
    assert channel.events() == []
    channel.handle_timer(20.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert isinstance(event.error, RelayTimeoutError)
    assert isinstance(event.error, TimeoutError)
    assert "20 s" in str(event.error)


def test_messages_pass_both_ways_with_types_and_fragments() -> None:
    channel, relay = opened()
    channel.send_message("text")
    channel.send_message(b"\x00binary")
    channel.send_message(b"part1-", final=False)
    channel.send_message(b"part2", final=True)
    flush(channel, relay)
    assert relay.messages() == ["text", b"\x00binary", b"part1-part2"]

    channel.receive_data(relay.send("hé", final=False) + relay.send("llo"), 1.0)
    channel.receive_data(relay.send(b"\xff" * 70000), 1.0)
    events = channel.events()
    assert all(isinstance(e, MessageReceived) for e in events)
    texts = [e.data for e in events if isinstance(e, MessageReceived) and isinstance(e.data, str)]
    assert "".join(texts) == "héllo"
    binary = b"".join(
        e.data for e in events if isinstance(e, MessageReceived) and isinstance(e.data, bytes)
    )
    assert binary == b"\xff" * 70000
    assert isinstance(events[-1], MessageReceived)
    assert events[-1].final


def test_relay_pings_are_answered_without_events() -> None:
    channel, relay = opened()
    channel.receive_data(relay.ping(b"are you there"), 1.0)
    assert channel.events() == []
    flush(channel, relay)
    assert relay.received == [FramePong(payload=b"are you there")]


def test_a_ping_after_this_side_closed_goes_unanswered() -> None:
    channel, relay = opened()
    channel.close(1000, now=2.0)
    flush(channel, relay)
    channel.receive_data(b"\x89\x04late", 3.0)  # an unmasked ping frame from the relay
    assert channel.events() == []
    assert channel.data_to_send() == b""
    assert channel.state is ChannelState.CLOSING


def test_idle_channel_pings_and_dies_without_an_answer() -> None:
    config = ChannelConfig(keepalive=KeepAlive(ping_interval=30.0, pong_timeout=10.0))
    channel, relay = sender(config=config), ScriptedRelay()
    connect(channel, relay)
    channel.events()
    assert channel.get_timer() == 30.0
    channel.handle_timer(29.0)
    assert channel.data_to_send() == b""
    channel.handle_timer(30.0)
    assert channel.data_to_send() != b""  # the ping
    assert channel.get_timer() == 40.0
    channel.handle_timer(40.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert isinstance(event.error, RelayTimeoutError)
    assert "dead" in str(event.error)
    assert channel.state is ChannelState.CLOSED


def test_any_traffic_counts_as_a_sign_of_life() -> None:
    config = ChannelConfig(keepalive=KeepAlive(ping_interval=30.0, pong_timeout=10.0))
    channel, relay = sender(config=config), ScriptedRelay()
    connect(channel, relay)
    channel.handle_timer(30.0)
    relay.feed(channel.data_to_send())
    channel.receive_data(relay.outgoing(), 35.0)  # the pong
    assert channel.get_timer() == 65.0
    channel.handle_timer(40.0)
    assert channel.state is ChannelState.OPEN


def test_keepalive_can_be_turned_off() -> None:
    channel, relay = sender(config=ChannelConfig(keepalive=None)), ScriptedRelay()
    connect(channel, relay)
    assert channel.get_timer() is None
    channel.handle_timer(10_000.0)
    assert channel.state is ChannelState.OPEN


def test_orderly_close_initiated_here() -> None:
    channel, relay = opened()
    channel.close(4000, "bye", now=5.0)
    assert repr(channel) == "<RelayedWebSocket closing>"
    channel.close(1000, now=5.0)  # a second close changes nothing
    flush(channel, relay)
    (close,) = relay.closes()
    assert (close.code, close.reason) == (4000, "bye")
    assert channel.get_timer() == 15.0
    channel.receive_data(relay.close(4000, "bye"), 6.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert (event.code, event.error) == (4000, None)
    assert channel.state is ChannelState.CLOSED


def test_close_without_an_answer_gives_up_after_the_close_timeout() -> None:
    channel, _relay = opened()
    channel.close(now=5.0)
    channel.handle_timer(14.0)
    assert channel.get_timer() == 15.0
    channel.handle_timer(15.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert event.code == 1006
    assert event.error is None


def test_close_initiated_by_the_peer_is_echoed_and_not_an_error() -> None:
    channel, relay = opened()
    channel.receive_data(relay.close(4100, "app done"), 1.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert (event.code, event.reason, event.error) == (4100, "app done", None)
    relay.feed(channel.data_to_send())
    (echo,) = relay.closes()
    assert echo.code == 4100
    with pytest.raises(LocalProtocolError, match="closed"):
        channel.send_message("too late")


def test_peer_close_without_a_status_is_echoed_as_a_normal_close() -> None:
    channel, relay = opened()
    channel.receive_data(b"\x88\x00", 1.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert event.code == 1005
    relay.feed(channel.data_to_send())
    (echo,) = relay.closes()
    assert echo.code == 1000


def test_connection_drop_while_open_is_reported() -> None:
    channel, _relay = opened()
    channel.receive_eof()
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert event.code == 1006
    assert isinstance(event.error, ConnectionLostError)


def test_close_before_the_handshake_abandons_the_connection() -> None:
    channel = sender()
    channel.close(now=0.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert event.error is None
    assert channel.state is ChannelState.CLOSED


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x83\x00", 1002),  # reserved opcode
        (b"\x81\x82abcd" + bytes([0xFF ^ 0x61, 0xFE ^ 0x62]), 1002),  # masked by a server
        (b"\x81\x02\xff\xfe", 1007),  # invalid UTF-8 in a text frame
    ],
)
def test_protocol_violation_by_the_relay_closes_with_the_right_code(
    frame: bytes, code: int
) -> None:
    channel, relay = opened()
    channel.receive_data(frame, 1.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert event.code == code
    assert isinstance(event.error, RemoteProtocolError)
    relay.feed(channel.data_to_send())
    (close,) = relay.closes()
    assert close.code == code


def test_repr_shows_the_state_only() -> None:
    channel = sender(headers=[("ServiceBusAuthorization", "SharedAccessSignature secret")])
    assert repr(channel) == "<RelayedWebSocket connecting>"


def test_sending_before_open_is_a_local_error() -> None:
    channel = sender()
    with pytest.raises(LocalProtocolError, match="connecting"):
        channel.send_message("early")
    with pytest.raises(LocalProtocolError):
        channel.ping()


def test_config_validation() -> None:
    with pytest.raises(LocalProtocolError):
        ChannelConfig(handshake_timeout=0)
    with pytest.raises(LocalProtocolError):
        KeepAlive(ping_interval=-1)


def test_invalid_nonce_and_url_are_refused() -> None:
    with pytest.raises(ValueError, match="16 random bytes"):
        sender(nonce=b"short")
    with pytest.raises(ValueError, match="ws://"):
        sender(url="https://contoso/$hc/hc1")
    with pytest.raises(ValueError, match="handshake"):
        sender(headers=[("Bad Header", "x")])


ACCEPT = Accept(
    address="wss://contoso.servicebus.windows.net/$hc/hc1?sb-hc-action=accept&sb-hc-id=r1",
    id="r1",
    connect_headers=Headers({"Sec-WebSocket-Protocol": "chat, superchat", "X-Custom": "v"}),
)


def test_accept_connection_requests_exactly_the_chosen_subprotocol() -> None:
    channel = accept_connection(ACCEPT, now=0.0, nonce=NONCE, subprotocol="superchat")
    relay = ScriptedRelay()
    relay.feed(channel.data_to_send())
    assert relay.request is not None
    assert relay.request.subprotocols == ("superchat",)
    assert relay.request.target == "/$hc/hc1?sb-hc-action=accept&sb-hc-id=r1"
    assert channel.get_timer() == 20.0  # rendezvous connect timeout


def test_accept_connection_refuses_a_subprotocol_the_sender_did_not_offer() -> None:
    with pytest.raises(LocalProtocolError, match="not offered"):
        accept_connection(ACCEPT, now=0.0, nonce=NONCE, subprotocol="other")
    plain = accept_connection(ACCEPT, now=0.0, nonce=NONCE)
    relay = ScriptedRelay()
    relay.feed(plain.data_to_send())
    assert relay.request is not None
    assert relay.request.subprotocols == ()


def test_reject_is_delivered_when_the_relay_answers_410() -> None:
    channel = reject_connection(
        ACCEPT, status_code=403, description="Not you & not now", now=0.0, nonce=NONCE
    )
    assert isinstance(channel, RejectChannel)
    relay = ScriptedRelay()
    relay.feed(channel.data_to_send())
    assert relay.request is not None
    assert relay.request.target.endswith(
        "&sb-hc-statusCode=403&sb-hc-statusDescription=Not%20you%20%26%20not%20now"
    )
    channel.receive_data(relay.refuse(410, "Gone"), 0.0)
    assert channel.events() == [RejectDelivered()]
    assert channel.state is ChannelState.CLOSED


def test_reject_that_the_relay_refuses_is_reported() -> None:
    channel = reject_connection(ACCEPT, now=0.0, nonce=NONCE)
    relay = ScriptedRelay()
    relay.feed(channel.data_to_send())
    channel.receive_data(relay.refuse(403, "Rendezvous expired"), 0.0)
    (event,) = channel.events()
    assert isinstance(event, HandshakeRefused)
    assert event.status_code == 403


def test_reject_answered_with_a_websocket_is_a_protocol_error() -> None:
    channel = reject_connection(ACCEPT, now=0.0, nonce=NONCE)
    relay = ScriptedRelay()
    relay.feed(channel.data_to_send())
    channel.receive_data(relay.accept() + b"\x81\x01x", 0.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert isinstance(event.error, RemoteProtocolError)
    relay.feed(channel.data_to_send())
    assert relay.closes()[0].code == 1002


def test_base_channel_ignores_messages() -> None:
    channel, relay = WebSocketChannel(url=URL, now=0.0, nonce=NONCE), ScriptedRelay()
    connect(channel, relay)
    channel.receive_data(relay.send("ignored"), 0.0)
    assert [type(e) for e in channel.events()] == [Opened]


@given(st.binary(max_size=300))
def test_any_handshake_answer_gives_events_never_exceptions(answer: bytes) -> None:
    channel = sender()
    channel.data_to_send()
    channel.receive_data(answer, 0.0)
    channel.receive_eof()
    events = channel.events()
    assert channel.state is ChannelState.CLOSED
    assert isinstance(events[-1], ChannelClosed | HandshakeRefused)


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_any_frames_after_open_give_events_never_exceptions(chunks: list[bytes]) -> None:
    channel, _relay = opened()
    for chunk in chunks:
        channel.receive_data(chunk, 1.0)
    channel.receive_eof()
    events = channel.events()
    assert isinstance(events[-1], ChannelClosed)
    assert channel.state is ChannelState.CLOSED


OPERATIONS = st.sampled_from(
    ["send", "ping", "close", "eof", "peer_close", "peer_text", "peer_ping", "timer", "garbage"]
)


@given(st.lists(OPERATIONS, max_size=12))
def test_every_state_and_input_pair_is_handled(operations: list[str]) -> None:
    """Whatever happens in whatever order, only LocalProtocolError escapes, and only from sends."""
    channel, relay = opened()
    now = 1.0
    for operation in operations:
        now += 7.0
        if operation in ("send", "ping"):
            try:
                channel.send_message("x") if operation == "send" else channel.ping()
            except LocalProtocolError:
                assert channel.state is not ChannelState.OPEN
        elif operation == "close":
            channel.close(now=now)
        elif operation == "eof":
            channel.receive_eof()
        elif operation == "peer_close":
            channel.receive_data(b"\x88\x02\x03\xe8", now)
        elif operation == "peer_text":
            channel.receive_data(b"\x81\x01y", now)
        elif operation == "peer_ping":
            channel.receive_data(b"\x89\x00", now)
        elif operation == "timer":
            channel.handle_timer(now + 100.0)
        else:
            channel.receive_data(b"\x8f\x00", now)
        channel.data_to_send()
    closes = [e for e in channel.events() if isinstance(e, ChannelClosed)]
    assert len(closes) <= 1
    assert (channel.state is ChannelState.CLOSED) == bool(closes)
    del relay


def test_frames_arriving_with_the_handshake_answer_are_not_lost() -> None:
    channel, relay = sender(), ScriptedRelay()
    relay.feed(channel.data_to_send())
    channel.receive_data(relay.accept() + relay.send("first") + relay.send(b"second"), 0.0)
    events = channel.events()
    assert isinstance(events[0], Opened)
    assert [e.data for e in events[1:] if isinstance(e, MessageReceived)] == ["first", b"second"]


def test_message_assembly_joins_text_and_binary_pieces() -> None:
    assembly = MessageAssembly(10)
    assert assembly.add("ab", final=False) is None
    assert assembly.add("cd", final=True) == "abcd"
    assert assembly.add(b"\x00", final=False) is None
    assert assembly.add(b"\x01", final=True) == b"\x00\x01"


def test_no_tail_of_a_message_too_long_is_ever_taken_for_a_message() -> None:
    assembly = MessageAssembly(10)
    assert assembly.add(b"x" * 8, final=False) is None
    with pytest.raises(RemoteProtocolError) as refused:
        assembly.add(b"x" * 8, final=False)
    assert refused.value.close_code == 1009
    assert assembly.add(b"tail", final=False) is None
    assert assembly.add(b"end", final=True) is None  # the rest of the refused message
    assert assembly.add(b"next", final=True) == b"next"
    with pytest.raises(RemoteProtocolError):
        assembly.add(b"y" * 11, final=True)  # refused on its last piece: nothing to drop
    assert assembly.add(b"after", final=True) == b"after"

"""The listener control channel against a scripted relay."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco_core.channel import ChannelConfig, ChannelState
from hyco_core.control import ControlChannel
from hyco_core.errors import (
    AuthorizationError,
    ConnectionLostError,
    LocalProtocolError,
    RelayServerError,
    RemoteProtocolError,
)
from hyco_core.events import (
    AcceptRequested,
    ChannelClosed,
    Event,
    Opened,
    RendezvousRequested,
    RequestReceived,
    TokenRenewalDue,
    UnknownContentIgnored,
)
from hyco_core.messages import Response, decode_message

from .scripted_relay import NONCE, ScriptedRelay, connect, flush

URL = "wss://contoso.servicebus.windows.net/$hc/hc1?sb-hc-action=listen&sb-hc-id=L1"
TOKEN = "SharedAccessSignature sr=http%3A%2F%2Fcontoso%2Fhc1%2F&sig=c2ln&se=3600&skn=listen"

ACCEPT = {
    "accept": {
        "address": "wss://contoso.servicebus.windows.net/$hc/hc1?sb-hc-action=accept&sb-hc-id=A1",
        "id": "A1",
        "connectHeaders": {"Sec-WebSocket-Protocol": "chat", "X-Custom": "v"},
        "remoteEndpoint": {"address": "10.0.0.1", "port": 1234},
    }
}


def request(body: bool | None, **extra: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "address": "wss://contoso.servicebus.windows.net/$hc/hc1?sb-hc-action=request&sb-hc-id=R1",
        "id": "R1",
    }
    if body is not None:
        fields |= {"requestTarget": "/hc1/items?x=1", "method": "POST", "body": body}
        fields |= {"requestHeaders": {"Content-Type": "text/plain"}}
    fields |= extra
    return {"request": fields}


def online(**kwargs: object) -> tuple[ControlChannel, ScriptedRelay]:
    options: dict[str, object] = {"url": URL, "now": 0.0, "nonce": NONCE, "token": TOKEN}
    options.update(kwargs)
    channel, relay = ControlChannel(**options), ScriptedRelay()  # type: ignore[arg-type]
    connect(channel, relay)
    assert [type(e) for e in channel.events()] == [Opened]
    return channel, relay


def say(channel: ControlChannel, relay: ScriptedRelay, *messages: object) -> list[Event]:
    for message in messages:
        data = relay.send(json.dumps(message) if isinstance(message, dict) else message)  # type: ignore[arg-type]
        channel.receive_data(data, 1.0)
    return channel.events()


def test_listen_handshake_sends_the_token_in_the_header() -> None:
    channel = ControlChannel(url=URL, now=0.0, nonce=NONCE, token=TOKEN, headers=(("X-A", "b"),))
    relay = ScriptedRelay()
    relay.feed(channel.data_to_send())
    assert relay.request is not None
    assert relay.request.headers["ServiceBusAuthorization"] == TOKEN
    assert relay.request.headers["X-A"] == "b"
    assert "sb-hc-action=listen" in relay.request.target


def test_without_a_token_no_authorization_header_is_sent() -> None:
    channel = ControlChannel(url=URL + "&sb-hc-token=x", now=0.0, nonce=NONCE)
    relay = ScriptedRelay()
    relay.feed(channel.data_to_send())
    assert relay.request is not None
    assert "ServiceBusAuthorization" not in relay.request.headers
    assert channel.get_timer() == 70.0


def test_accept_becomes_an_event() -> None:
    channel, relay = online()
    (event,) = say(channel, relay, ACCEPT)
    assert isinstance(event, AcceptRequested)
    assert event.accept.id == "A1"
    assert event.accept.connect_headers["x-custom"] == "v"
    assert event.accept.remote_endpoint is not None
    assert event.accept.remote_endpoint.port == 1234


def test_inline_request_with_body_waits_for_the_binary_message() -> None:
    channel, relay = online()
    assert say(channel, relay, request(True)) == []
    channel.receive_data(relay.send(b"hello ", final=False), 1.0)
    channel.receive_data(relay.send(b"world"), 1.0)
    (event,) = channel.events()
    assert isinstance(event, RequestReceived)
    assert event.body == b"hello world"
    assert event.request.method == "POST"
    assert event.request.request_headers["content-type"] == "text/plain"


def test_inline_request_without_body() -> None:
    channel, relay = online()
    (event,) = say(channel, relay, request(False))
    assert isinstance(event, RequestReceived)
    assert event.body == b""


def test_request_without_body_field_asks_for_a_rendezvous() -> None:
    channel, relay = online()
    (event,) = say(channel, relay, request(None))
    assert isinstance(event, RendezvousRequested)
    assert event.request.needs_rendezvous
    assert "sb-hc-action=request" in event.request.address


def test_unknown_message_types_and_fields_are_ignored_and_reported() -> None:
    channel, relay = online()
    events = say(
        channel,
        relay,
        {"ping": {"x": 1}},
        {"accept": {**ACCEPT["accept"], "future": True}},
        {"response": {"requestId": "x", "statusCode": 200}},
        {"renewToken": {"token": "t"}},
    )
    ignored = [e for e in events if isinstance(e, UnknownContentIgnored)]
    assert [e.kind for e in ignored] == ["ping", "accept", "response", "renewToken"]
    assert ignored[1].fields == ("accept.future",)
    assert any(isinstance(e, AcceptRequested) for e in events)
    assert channel.state is ChannelState.OPEN


def test_binary_message_out_of_place_is_ignored() -> None:
    channel, relay = online()
    channel.receive_data(relay.send(b"stray", final=False) + relay.send(b"!"), 1.0)
    assert channel.events() == [UnknownContentIgnored(kind="binary")]


def test_fragmented_control_message_is_joined() -> None:
    channel, relay = online()
    text = json.dumps(ACCEPT)
    channel.receive_data(relay.send(text[:10], final=False) + relay.send(text[10:]), 1.0)
    (event,) = channel.events()
    assert isinstance(event, AcceptRequested)


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        (["{not json"], 1002),
        ([json.dumps(request(True)), "{}"], 1002),
        (["x" * 300], 1009),
    ],
)
def test_malformed_control_traffic_closes_with_a_protocol_error(
    messages: list[str], code: int
) -> None:
    channel, relay = online(max_message_size=256)
    events = say(channel, relay, *messages)
    (closed,) = [e for e in events if isinstance(e, ChannelClosed)]
    assert closed.code == code
    assert isinstance(closed.error, RemoteProtocolError)
    relay.feed(channel.data_to_send())
    assert relay.closes()[0].code == code


def test_inline_body_larger_than_the_limit_is_refused() -> None:
    channel, relay = online(max_inline_body=10)
    say(channel, relay, request(True))
    channel.receive_data(relay.send(b"x" * 11), 1.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert event.code == 1009


def test_response_goes_inline_with_its_body() -> None:
    channel, relay = online()
    response = Response(request_id="R1", status_code=200, status_description="OK")
    channel.send_response(response, b"answer")
    flush(channel, relay)
    head, body = relay.messages()
    assert isinstance(head, str)
    decoded = decode_message(head).message
    assert decoded == Response(request_id="R1", status_code=200, status_description="OK", body=True)
    assert body == b"answer"


def test_response_without_body_is_one_message() -> None:
    channel, relay = online()
    channel.send_response(Response(request_id="R1", status_code=204, body=True))
    flush(channel, relay)
    (head,) = relay.messages()
    assert isinstance(head, str)
    assert json.loads(head)["response"]["body"] is False


def test_response_too_large_for_the_control_channel_is_refused() -> None:
    channel, _relay = online()
    with pytest.raises(LocalProtocolError, match="HttpRendezvous"):
        channel.send_response(Response(request_id="R1", status_code=200), b"x" * 65537)
    channel.send_response(Response(request_id="R1", status_code=200), b"x" * 65536)


def test_token_renewal_is_announced_ahead_of_expiry_and_sent() -> None:
    channel, relay = online(token_expires_at=3600.0, config=ChannelConfig(keepalive=None))
    assert channel.get_timer() == 3300.0
    channel.handle_timer(3299.0)
    assert channel.events() == []
    channel.handle_timer(3300.0)
    assert channel.events() == [TokenRenewalDue(expires_at=3600.0)]
    assert channel.get_timer() is None  # announced once, until the program renews
    channel.renew_token("SharedAccessSignature new", now=3301.0, expires_at=7201.0)
    assert channel.get_timer() == 6901.0
    flush(channel, relay)
    (message,) = relay.messages()
    assert json.loads(message) == {"renewToken": {"token": "SharedAccessSignature new"}}
    channel.renew_token("SharedAccessSignature newer", now=3302.0)
    assert channel.get_timer() is None  # expiry unknown: nothing to schedule
    channel.handle_timer(100_000.0)
    assert channel.events() == []


def test_short_lived_tokens_are_renewed_in_time() -> None:
    channel, _relay = online(token_expires_at=5.0, config=ChannelConfig(keepalive=None))
    assert channel.get_timer() == 2.5


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (1008, AuthorizationError),
        (1011, RelayServerError),
        (1001, ConnectionLostError),
        (4321, ConnectionLostError),
    ],
)
def test_relay_close_codes_become_typed_errors(code: int, error_type: type[Exception]) -> None:
    channel, relay = online()
    channel.receive_data(relay.close(code, "reason. TrackingId:abc"), 1.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert isinstance(event.error, error_type)
    assert getattr(event.error, "tracking_id", None) == "abc"


def test_normal_close_by_the_relay_is_not_an_error() -> None:
    channel, relay = online()
    channel.receive_data(relay.close(1000, ""), 1.0)
    (event,) = channel.events()
    assert isinstance(event, ChannelClosed)
    assert event.error is None


@given(st.lists(st.text(max_size=80), max_size=6))
def test_any_text_from_the_relay_gives_events_never_exceptions(texts: list[str]) -> None:
    channel, relay = online()
    for text in texts:
        channel.receive_data(relay.send(text), 1.0)
    for event in channel.events():
        if isinstance(event, ChannelClosed):
            assert isinstance(event.error, RemoteProtocolError)

"""A whole listener and sender exchange, driven purely through the kernel.

The test plays the relay: it reads what each kernel object writes and answers as the service
does. Every socket is a pair (kernel object, scripted relay end) joined by byte strings.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from hyco_core import (
    AcceptRequested,
    ChannelClosed,
    ConnectionLostError,
    ControlChannel,
    HandshakeRefused,
    Headers,
    HttpRendezvous,
    ListenerLifecycle,
    ListenerStatus,
    MessageReceived,
    Opened,
    RejectDelivered,
    RejectedError,
    RelayedWebSocket,
    RendezvousRequested,
    RequestBodyReceived,
    RequestReceived,
    Response,
    TokenRenewalDue,
    accept_connection,
    create_relay_listen_uri,
    create_relay_send_uri,
    create_relay_token,
    decode_message,
    reject_connection,
)
from hyco_core._wire import FrameMessage
from hyco_core.events import Event
from hyco_core.service import strip_relay_query

from .scripted_relay import NONCE, ScriptedRelay, flush

NS = "contoso.servicebus.windows.net"
KEY_NAME, KEY = "RootManageSharedAccessKey", "c2VjcmV0LWtleS1mb3ItdGVzdHM="
NOW = 1_700_000_000.0


def listener_online(lifecycle: ListenerLifecycle) -> tuple[ControlChannel, ScriptedRelay]:
    lifecycle.connecting()
    token = create_relay_token(f"sb://{NS}/hc1", KEY_NAME, KEY, now=NOW)
    control = ControlChannel(
        url=create_relay_listen_uri(NS, "hc1", tracking_id="listener-1"),
        now=NOW,
        nonce=NONCE,
        token=token,
        token_expires_at=NOW + 3600,
    )
    relay = ScriptedRelay()
    relay.feed(control.data_to_send())
    assert relay.request is not None
    assert relay.request.headers["ServiceBusAuthorization"] == token
    control.receive_data(relay.accept(), NOW)
    assert [type(e) for e in control.events()] == [Opened]
    lifecycle.online()
    return control, relay


def forward(source: ScriptedRelay, target: RelayedWebSocket, target_relay: ScriptedRelay) -> None:
    """The relay passes each message piece on, types and fragmentation intact."""
    pending = source.received
    source.received = []
    for event in pending:
        if isinstance(event, FrameMessage):
            target.receive_data(target_relay.send(event.data, final=event.final), NOW)


def received_messages(events: list[Event]) -> list[str | bytes]:
    whole: list[str | bytes] = []
    parts: list[str | bytes] = []
    for event in events:
        if isinstance(event, MessageReceived):
            parts.append(event.data)
            if event.final:
                whole.append("".join(parts) if isinstance(parts[0], str) else b"".join(parts))  # type: ignore[arg-type]
                parts = []
    return whole


def test_accept_echo_and_close_codes_end_to_end() -> None:
    lifecycle = ListenerLifecycle()
    control, control_relay = listener_online(lifecycle)

    sender = RelayedWebSocket(
        url=create_relay_send_uri(NS, "hc1", suffix="room/7", query="user=ann"),
        now=NOW,
        nonce=NONCE,
        subprotocols=["v1.chat", "v2.chat"],
        headers=[("ServiceBusAuthorization", "SharedAccessSignature sig"), ("X-Trace", "t-1")],
    )
    sender_relay = ScriptedRelay()
    sender_relay.feed(sender.data_to_send())
    handshake = sender_relay.request
    assert handshake is not None
    target = urlsplit(handshake.target)
    assert target.path == "/$hc/hc1/room/7"
    assert strip_relay_query(target.query) == "user=ann"

    # The relay announces the sender on the control channel, without its token.
    address = f"wss://{NS}/$hc/hc1/room/7?sb-hc-action=accept&sb-hc-id=c0ffee"
    headers = dict(handshake.headers.without(["ServiceBusAuthorization"]))
    announce = {"accept": {"address": address, "id": "c0ffee", "connectHeaders": headers}}
    control.receive_data(control_relay.send(json.dumps(announce)), NOW)
    (event,) = control.events()
    assert isinstance(event, AcceptRequested)
    assert event.accept.connect_headers["x-trace"] == "t-1"
    assert "ServiceBusAuthorization" not in event.accept.connect_headers

    rendezvous = accept_connection(event.accept, now=NOW, nonce=NONCE, subprotocol="v2.chat")
    rendezvous_relay = ScriptedRelay()
    rendezvous_relay.feed(rendezvous.data_to_send())
    assert rendezvous_relay.request is not None
    assert rendezvous_relay.request.subprotocols == ("v2.chat",)
    rendezvous.receive_data(rendezvous_relay.accept("v2.chat"), NOW)
    sender.receive_data(sender_relay.accept("v2.chat"), NOW)
    (listener_open,) = rendezvous.events()
    (sender_open,) = sender.events()
    assert isinstance(listener_open, Opened)
    assert isinstance(sender_open, Opened)
    assert listener_open.subprotocol == sender_open.subprotocol == "v2.chat"

    # Messages of both types, one fragmented, pass through; the listener echoes them.
    sender.send_message("hello")
    sender.send_message(b"\x00" * 100_000)
    sender.send_message("frag-", final=False)
    sender.send_message("ment", final=True)
    flush(sender, sender_relay)
    forward(sender_relay, rendezvous, rendezvous_relay)
    echoed = received_messages(rendezvous.events())
    assert echoed == ["hello", b"\x00" * 100_000, "frag-ment"]
    for message in echoed:
        rendezvous.send_message(message)
    flush(rendezvous, rendezvous_relay)
    forward(rendezvous_relay, sender, sender_relay)
    assert received_messages(sender.events()) == echoed

    # The listener closes with an application code; the sender sees the same code.
    rendezvous.close(4001, "done here", now=NOW)
    flush(rendezvous, rendezvous_relay)
    (close,) = rendezvous_relay.closes()
    sender.receive_data(sender_relay.close(close.code, close.reason), NOW)
    (sender_closed,) = sender.events()
    assert isinstance(sender_closed, ChannelClosed)
    assert (sender_closed.code, sender_closed.reason, sender_closed.error) == (
        4001,
        "done here",
        None,
    )


def test_reject_reaches_the_sender_with_status_and_description() -> None:
    control, control_relay = listener_online(ListenerLifecycle())
    sender = RelayedWebSocket(url=create_relay_send_uri(NS, "hc1"), now=NOW, nonce=NONCE)
    sender_relay = ScriptedRelay()
    sender_relay.feed(sender.data_to_send())
    address = f"wss://{NS}/$hc/hc1?sb-hc-action=accept&sb-hc-id=r1"
    announce = {"accept": {"address": address, "id": "r1", "connectHeaders": {}}}
    control.receive_data(control_relay.send(json.dumps(announce)), NOW)
    (event,) = control.events()
    assert isinstance(event, AcceptRequested)

    reject = reject_connection(
        event.accept, status_code=400, description="Room is full", now=NOW, nonce=NONCE
    )
    reject_relay = ScriptedRelay()
    reject_relay.feed(reject.data_to_send())
    assert reject_relay.request is not None
    query = parse_qs(urlsplit(reject_relay.request.target).query)
    status, description = query["sb-hc-statusCode"][0], query["sb-hc-statusDescription"][0]
    reject.receive_data(reject_relay.refuse(410, "Gone"), NOW)
    assert reject.events() == [RejectDelivered()]

    sender.receive_data(sender_relay.refuse(int(status), f"{description}. TrackingId:r1"), NOW)
    (refused,) = sender.events()
    assert isinstance(refused, HandshakeRefused)
    assert isinstance(refused.error, RejectedError)
    assert (refused.error.status_code, refused.error.tracking_id) == (400, "r1")
    assert "Room is full" in str(refused.error)


def test_http_inline_then_via_rendezvous_with_reuse() -> None:
    control, control_relay = listener_online(ListenerLifecycle())
    request_address = f"wss://{NS}/$hc/hc1?sb-hc-action=request&sb-hc-id=h1"

    # Small request inline, answered inline.
    inline = {
        "request": {
            "address": request_address,
            "id": "q1",
            "requestTarget": "/hc1/api/items?page=2",
            "method": "POST",
            "requestHeaders": {"Content-Type": "application/json"},
            "body": True,
        }
    }
    control.receive_data(control_relay.send(json.dumps(inline)), NOW)
    control.receive_data(control_relay.send(b'{"name": "pen"}'), NOW)
    (received,) = control.events()
    assert isinstance(received, RequestReceived)
    assert received.body == b'{"name": "pen"}'
    control.send_response(
        Response(
            request_id=received.request.id or "",
            status_code=201,
            status_description="Created",
            response_headers=Headers({"Content-Type": "application/json"}),
        ),
        b'{"id": 1}',
    )
    flush(control, control_relay)
    head, body = control_relay.messages()
    response = decode_message(head).message
    assert isinstance(response, Response)
    assert (response.request_id, response.status_code, response.body) == ("q1", 201, True)
    assert body == b'{"id": 1}'

    # A large upload arrives as only an address; the listener fetches it on a rendezvous.
    control.receive_data(
        control_relay.send(json.dumps({"request": {"address": request_address, "id": "q2"}})), NOW
    )
    (announced,) = control.events()
    assert isinstance(announced, RendezvousRequested)
    rendezvous = HttpRendezvous(address=announced.request.address, now=NOW, nonce=NONCE)
    relay_end = ScriptedRelay()
    relay_end.feed(rendezvous.data_to_send())
    rendezvous.receive_data(relay_end.accept(), NOW)
    upload = bytes(range(256)) * 1024
    full_request = {**inline["request"], "id": "q2", "method": "PUT"}
    rendezvous.receive_data(relay_end.send(json.dumps({"request": full_request})), NOW)
    for start in range(0, len(upload), 65536):
        piece = upload[start : start + 65536]
        final = start + 65536 >= len(upload)
        rendezvous.receive_data(relay_end.send(piece, final=final), NOW)
    events = rendezvous.events()
    assert isinstance(events[1], RequestReceived)
    assert events[1].request.method == "PUT"
    assert b"".join(e.data for e in events if isinstance(e, RequestBodyReceived)) == upload

    rendezvous.send_response(Response(request_id="q2", status_code=200, body=True))
    for start in range(0, len(upload), 100_000):
        rendezvous.send_body(upload[start : start + 100_000], final=False)
    rendezvous.send_body(b"", final=True)
    flush(rendezvous, relay_end)
    head, body = relay_end.messages()
    assert json.loads(head)["response"]["requestId"] == "q2"
    assert body == upload

    # The same sender's next request comes over the same rendezvous.
    next_request = {**inline["request"], "id": "q3", "method": "GET", "body": False}
    rendezvous.receive_data(relay_end.send(json.dumps({"request": next_request})), NOW)
    (third,) = rendezvous.events()
    assert isinstance(third, RequestReceived)
    assert third.request.id == "q3"


def test_renewal_and_reconnect_scheduling() -> None:
    lifecycle = ListenerLifecycle()
    control, control_relay = listener_online(lifecycle)
    renew_at = control.get_timer()
    assert renew_at is not None
    # Keep-alive pings come first on an idle channel; answer them until renewal is due.
    now = NOW
    while not any(isinstance(e, TokenRenewalDue) for e in control.events()):
        deadline = control.get_timer()
        assert deadline is not None
        now = deadline
        control.handle_timer(now)
        control_relay.feed(control.data_to_send())
        control.receive_data(control_relay.outgoing(), now)
    assert now == NOW + 3300
    fresh = create_relay_token(f"sb://{NS}/hc1", KEY_NAME, KEY, now=now)
    control.renew_token(fresh, now=now, expires_at=now + 3600)
    flush(control, control_relay)
    assert json.loads(control_relay.messages()[0]) == {"renewToken": {"token": fresh}}

    # The relay goes away for maintenance; the listener is scheduled back at once, then backs off.
    control.receive_data(control_relay.close(1001, "maintenance"), now)
    (closed,) = control.events()
    assert isinstance(closed, ChannelClosed)
    assert isinstance(closed.error, ConnectionLostError)
    assert lifecycle.lost(closed.error) == 0.0
    delays = []
    for _ in range(3):
        lifecycle.connecting()
        delays.append(lifecycle.lost(ConnectionLostError("refused")))
    assert delays == [1.0, 2.0, 5.0]
    listener_online(lifecycle)
    assert lifecycle.status is ListenerStatus.ONLINE

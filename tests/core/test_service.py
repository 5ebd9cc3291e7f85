"""The relay's side of WebSockets: server channels, ping pass-through."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco_core import (
    Accept,
    AcceptRequested,
    ChannelClosed,
    ChannelState,
    ControlChannel,
    Headers,
    HttpRendezvous,
    LocalProtocolError,
    MessageReceived,
    Opened,
    RelayedWebSocket,
    RemoteEndpoint,
    RemoteProtocolError,
    RendezvousRequested,
    Request,
    RequestBodyReceived,
    RequestReceived,
    Response,
    UnknownContentIgnored,
    WebSocketChannel,
    decode_message,
    encode_message,
)
from hyco_core.events import Event
from hyco_core.service import (
    HttpServer,
    IncomingRequest,
    ListenerResponseError,
    PingReceived,
    PongReceived,
    ResponseBodyReceived,
    ResponseReceived,
    ServerWebSocket,
    ServiceControlChannel,
    ServiceHttpRendezvous,
    TokenRenewed,
    add_via,
    check_listener_response,
    forwarded_connect_headers,
    forwarded_request_headers,
    listener_reject_status,
    relayed_close,
    request_fits_inline,
    request_token,
)

from .scripted_relay import NONCE


def pair(*, passes_pings: bool = False) -> tuple[RelayedWebSocket, ServerWebSocket]:
    """A client channel and the relay's server channel, handshake done, trailing frames kept."""
    client = RelayedWebSocket(url="ws://relay:9090/$hc/hc1", now=0.0, nonce=NONCE)
    http = HttpServer()
    http.receive_data(client.data_to_send())
    assert isinstance(http.next_event(), IncomingRequest)
    answer, trailing = http.accept_websocket()
    client.receive_data(answer, 0.0)
    assert [type(e) for e in client.events()] == [Opened]
    return client, ServerWebSocket(now=0.0, trailing=trailing, passes_pings=passes_pings)


def test_server_channel_is_open_and_relays_messages_both_ways() -> None:
    client, server = pair()
    assert server.state is ChannelState.OPEN
    assert server.get_timer() == 30.0  # the relay keeps idle sockets alive too
    client.send_message("up")
    server.receive_data(client.data_to_send(), 1.0)
    assert server.events() == [MessageReceived(data="up", final=True)]
    server.send_message(b"down")
    client.receive_data(server.data_to_send(), 1.0)
    assert client.events() == [MessageReceived(data=b"down", final=True)]


def test_frames_sent_with_the_handshake_are_read_at_once() -> None:
    client = RelayedWebSocket(url="ws://relay/$hc/hc1", now=0.0, nonce=NONCE)
    http = HttpServer()
    http.receive_data(client.data_to_send())
    http.next_event()
    answer, _ = http.accept_websocket()
    client.receive_data(answer, 0.0)
    client.send_message("early")
    server = ServerWebSocket(now=0.0, trailing=client.data_to_send())
    assert server.events() == [MessageReceived(data="early", final=True)]


def test_pings_pass_through_when_asked() -> None:
    client, server = pair(passes_pings=True)
    client.ping(b"p1")
    server.receive_data(client.data_to_send(), 1.0)
    assert server.events() == [PingReceived(payload=b"p1")]
    assert server.data_to_send() == b""  # not answered by the relay itself
    server.pong(b"p1")
    client.receive_data(server.data_to_send(), 1.0)
    assert client.events() == []  # a pong is only a sign of life to the client
    server.ping(b"p2")
    client.receive_data(server.data_to_send(), 1.0)
    server.receive_data(client.data_to_send(), 1.0)  # the client's automatic pong
    assert server.events() == [PongReceived(payload=b"p2")]


def test_pings_are_answered_by_default_and_pongs_not_reported() -> None:
    client, server = pair()
    client.ping(b"x")
    server.receive_data(client.data_to_send(), 1.0)
    assert server.events() == []
    client.receive_data(server.data_to_send(), 1.0)
    server.ping()
    client.receive_data(server.data_to_send(), 2.0)
    server.receive_data(client.data_to_send(), 2.0)
    assert server.events() == []


def test_close_codes_pass_from_client_to_server() -> None:
    client, server = pair()
    client.close(4002, "app", now=1.0)
    server.receive_data(client.data_to_send(), 1.0)
    (event,) = server.events()
    assert isinstance(event, ChannelClosed)
    assert (event.code, event.reason, event.error) == (4002, "app", None)
    client.receive_data(server.data_to_send(), 1.0)
    (echo,) = client.events()
    assert isinstance(echo, ChannelClosed)
    assert echo.code == 4002


# -- the relay's control channel and HTTP rendezvous, against the listener's kernel objects --

LISTEN = "ws://relay:9090/$hc/hc1?sb-hc-action=listen"


def control_pair() -> tuple[ControlChannel, ServiceControlChannel]:
    listener = ControlChannel(url=LISTEN, now=0.0, nonce=NONCE, token="SharedAccessSignature t")
    http = HttpServer()
    http.receive_data(listener.data_to_send())
    request = http.next_event()
    assert isinstance(request, IncomingRequest)
    assert request.headers["ServiceBusAuthorization"] == "SharedAccessSignature t"
    answer, trailing = http.accept_websocket()
    listener.receive_data(answer, 0.0)
    listener.events()
    return listener, ServiceControlChannel(now=0.0, trailing=trailing, max_inline_body=100)


def deliver(source: WebSocketChannel, target: WebSocketChannel) -> list[Event]:
    target.receive_data(source.data_to_send(), 1.0)
    return target.events()


ACCEPT = Accept(
    address="ws://relay:9090/$hc/hc1?sb-hc-action=accept&sb-hc-id=a1",
    id="a1",
    connect_headers=Headers({"X-A": "1"}),
    remote_endpoint=RemoteEndpoint(address="127.0.0.1", port=5000),
)


def test_accept_and_inline_http_between_relay_and_listener() -> None:
    listener, relay = control_pair()
    relay.send_accept(ACCEPT)
    assert deliver(relay, listener) == [AcceptRequested(accept=ACCEPT)]

    request = Request(
        address="ws://relay:9090/$hc/hc1?sb-hc-action=request&sb-hc-id=r1",
        id="r1",
        request_target="/hc1/x",
        method="POST",
        request_headers=Headers({"Content-Type": "text/plain"}),
        body=True,
    )
    relay.send_request(request, b"ping")
    listener._send_message(
        '{"response":{"requestId":"r0","statusCode":200,"body":true}}', final=True
    )
    listener._send_message(b"in ", final=False)
    listener._send_message(b"pieces", final=True)
    (pieced,) = deliver(listener, relay)
    assert isinstance(pieced, ResponseReceived)
    assert pieced.body == b"in pieces"
    (received,) = deliver(relay, listener)
    assert isinstance(received, RequestReceived)
    assert received.body == b"ping"
    listener.send_response(Response(request_id="r1", status_code=200), b"pong")
    (answered,) = deliver(listener, relay)
    assert isinstance(answered, ResponseReceived)
    assert answered.response.body
    assert answered.body == b"pong"
    listener.send_response(Response(request_id="r2", status_code=204))
    assert deliver(listener, relay) == [
        ResponseReceived(response=Response(request_id="r2", status_code=204), body=b"")
    ]


def test_request_for_a_rendezvous_is_only_an_address() -> None:
    listener, relay = control_pair()
    relay.send_request(
        Request(
            address="ws://relay/$hc/hc1?sb-hc-action=request",
            id="r3",
            body=None,
            request_target=None,
            method=None,
            request_headers=Headers(),
        )
    )
    (event,) = deliver(relay, listener)
    assert isinstance(event, RendezvousRequested)
    with pytest.raises(LocalProtocolError, match="no inline body"):
        relay.send_request(
            Request(
                address="a",
                id="r",
                body=None,
                request_target=None,
                method=None,
                request_headers=Headers(),
            ),
            b"x",
        )
    with pytest.raises(LocalProtocolError, match="at most 100"):
        relay.send_request(
            Request(
                address="a",
                id="r",
                body=True,
                request_target="/",
                method="GET",
                request_headers=Headers(),
            ),
            b"x" * 101,
        )


def test_renewals_reach_the_relay_with_the_token_hidden() -> None:
    listener, relay = control_pair()
    listener.renew_token("SharedAccessSignature fresh", now=1.0)
    (event,) = deliver(listener, relay)
    assert event == TokenRenewed(token="SharedAccessSignature fresh")
    assert "fresh" not in repr(event)


def test_relay_ignores_what_it_does_not_expect_from_a_listener() -> None:
    listener, relay = control_pair()
    text = '{"accept": {"address": "a", "id": "b", "x": 1}}'
    listener._send_message(text[:5], final=False)
    listener._send_message(text[5:], final=True)
    events = deliver(listener, relay)
    assert [e.kind for e in events if isinstance(e, UnknownContentIgnored)] == ["accept", "accept"]


def test_relay_control_channel_faults() -> None:
    listener, relay = control_pair()
    listener._send_message(b"stray", final=False)
    listener._send_message(b"!", final=True)
    assert deliver(listener, relay) == [UnknownContentIgnored(kind="binary")]
    listener._send_message(
        '{"response": {"requestId": "r", "statusCode": 200, "body": true}}', final=True
    )
    listener._send_message("{}", final=True)
    (closed,) = [e for e in deliver(listener, relay) if isinstance(e, ChannelClosed)]
    assert isinstance(closed.error, RemoteProtocolError)

    listener, relay = control_pair()
    listener.send_response(Response(request_id="r", status_code=200), b"x" * 101)
    (too_big,) = deliver(listener, relay)
    assert isinstance(too_big, ChannelClosed)
    assert too_big.code == 1009


def rendezvous_pair() -> tuple[HttpRendezvous, ServiceHttpRendezvous]:
    listener = HttpRendezvous(
        address="ws://relay/$hc/hc1?sb-hc-action=request&sb-hc-id=r", now=0.0, nonce=NONCE
    )
    http = HttpServer()
    http.receive_data(listener.data_to_send())
    http.next_event()
    answer, trailing = http.accept_websocket()
    listener.receive_data(answer, 0.0)
    listener.events()
    return listener, ServiceHttpRendezvous(now=0.0, trailing=trailing)


def test_streamed_exchange_on_an_http_rendezvous() -> None:
    listener, relay = rendezvous_pair()
    request = Request(
        address="a",
        id="q",
        request_target="/hc1",
        method="PUT",
        request_headers=Headers(),
        body=True,
    )
    relay.send_request(request)
    relay.send_body(b"up" * 50_000, final=False)
    relay.send_body(b"!", final=True)
    events = deliver(relay, listener)
    assert isinstance(events[0], RequestReceived)
    assert (
        b"".join(e.data for e in events if isinstance(e, RequestBodyReceived))
        == b"up" * 50_000 + b"!"
    )
    listener.send_response(Response(request_id="q", status_code=200, body=True))
    listener.send_body(b"down", final=False)
    listener.send_body(b"", final=True)
    events = deliver(listener, relay)
    assert isinstance(events[0], ResponseReceived)
    assert events[0].body is None
    assert events[1:] == [
        ResponseBodyReceived(data=b"down", final=False),
        ResponseBodyReceived(data=b"", final=True),
    ]
    relay.send_request(
        Request(
            address="a",
            id="q2",
            request_target="/",
            method="GET",
            request_headers=Headers(),
            body=False,
        )
    )
    deliver(relay, listener)
    listener.send_response(Response(request_id="q2", status_code=304))
    (event,) = deliver(listener, relay)
    assert isinstance(event, ResponseReceived)
    assert event.body == b""


def test_http_rendezvous_ignores_stray_binary_and_renewals() -> None:
    listener, relay = rendezvous_pair()
    listener._send_message(b"x", final=False)
    listener._send_message(b"y", final=True)
    listener._send_message('{"renewToken": {"token": "secret-token"}}', final=True)
    events = deliver(listener, relay)
    assert events[0] == UnknownContentIgnored(kind="binary")
    assert events[1] == UnknownContentIgnored(kind="renewToken", excerpt="")


def test_token_is_taken_from_header_then_query_then_authorization() -> None:
    both = Headers({"ServiceBusAuthorization": "h", "Authorization": "a"})
    assert request_token(both, {"sb-hc-token": "q"}, http=True) == ("h", "ServiceBusAuthorization")
    assert request_token(Headers({"Authorization": "a"}), {"sb-hc-token": "q"}, http=True) == (
        "q",
        None,
    )
    assert request_token(Headers({"Authorization": "a"}), {}, http=True) == ("a", "Authorization")
    assert request_token(Headers({"Authorization": "a"}), {}, http=False) == (None, None)


def test_forwarded_headers_lose_credentials_and_hop_by_hop_headers() -> None:
    headers = Headers(
        {
            "ServiceBusAuthorization": "t",
            "Authorization": "app",
            "Connection": "keep-alive",
            "Content-Length": "3",
            "X-Keep": "1",
        }
    )
    assert list(forwarded_connect_headers(headers)) == [
        "Authorization",
        "Connection",
        "Content-Length",
        "X-Keep",
    ]
    assert list(forwarded_request_headers(headers, token_header=None)) == [
        "Authorization",
        "X-Keep",
    ]
    assert list(forwarded_request_headers(headers, token_header="Authorization")) == ["X-Keep"]


def test_via_names_the_relay() -> None:
    assert add_via(Headers({"A": "1"}), "ns.example")["Via"] == "1.1 ns.example"
    assert add_via(Headers({"via": "1.0 proxy"}), "ns")["via"] == "1.0 proxy, 1.1 ns"


def _read_head(data: bytes) -> IncomingRequest:
    http = HttpServer()
    http.receive_data(data)
    request = http.next_event()
    assert isinstance(request, IncomingRequest)
    return request


def test_a_senders_header_reaches_the_listener_spelled_as_sent() -> None:
    upgrade = _read_head(
        b"GET /$hc/hc1 HTTP/1.1\r\nHost: ns\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"X-Custom-Header: a\r\nx-CUSTOM-header: b\r\nServiceBusAuthorization: t\r\n\r\n"
    )
    assert upgrade.is_websocket
    assert upgrade.headers["x-custom-header"] == "a, b"
    accept = Accept(
        address="wss://ns/$hc/hc1?sb-hc-action=accept&sb-hc-id=1",
        id="1",
        connect_headers=forwarded_connect_headers(upgrade.headers),
    )
    connect_headers = json.loads(encode_message(accept))["accept"]["connectHeaders"]
    assert connect_headers["X-Custom-Header"] == "a, b"
    assert "Sec-WebSocket-Key" in connect_headers
    assert "ServiceBusAuthorization" not in connect_headers

    plain = _read_head(
        b"POST /hc1 HTTP/1.1\r\nHost: ns\r\nContent-Length: 0\r\nX-Custom-Header: c\r\n"
        b"Content-Type: text/plain\r\n\r\n"
    )
    request = Request(
        address="wss://ns/$hc/hc1?sb-hc-action=request&sb-hc-id=2",
        id="2",
        request_target="/hc1",
        method="POST",
        request_headers=forwarded_request_headers(plain.headers, token_header=None),
        body=False,
    )
    request_headers = json.loads(encode_message(request))["request"]["requestHeaders"]
    assert request_headers == {"X-Custom-Header": "c", "Content-Type": "text/plain"}


def _answer(response: Response) -> bytes:
    http = HttpServer()
    http.receive_data(b"GET /hc1 HTTP/1.1\r\nHost: ns\r\n\r\n")
    assert isinstance(http.next_event(), IncomingRequest)
    check_listener_response(response)
    reason = response.status_description or "x"
    headers = list(response.response_headers.items())
    return http.start_response(response.status_code, reason, headers, content_length=0)


def _listener_response(headers: dict[str, str], status: int = 200) -> Response:
    document = {"response": {"requestId": "1", "statusCode": status, "responseHeaders": headers}}
    message = decode_message(json.dumps(document)).message
    assert isinstance(message, Response)
    return message


def test_latin1_header_text_goes_out_as_latin1_bytes_and_other_text_as_utf8() -> None:
    head = _answer(
        _listener_response(
            {
                "Content-Disposition": "attachment; filename=café.txt",
                "X-Euro": "5 €",
                "X-Padded": "  kept inside  ",
            }
        )
    )
    assert b"Content-Disposition: attachment; filename=caf\xe9.txt\r\n" in head
    assert b"X-Euro: 5 \xe2\x82\xac\r\n" in head
    assert b"X-Padded: kept inside\r\n" in head


@pytest.mark.parametrize("status", [200, 204, 404, 599, 600, 999])
def test_final_statuses_up_to_999_pass_on(status: int) -> None:
    assert _answer(_listener_response({}, status)).startswith(f"HTTP/1.1 {status} ".encode())


@pytest.mark.parametrize("status", [100, 101, 103, 199])
def test_a_1xx_status_is_no_answer_to_pass_on(status: int) -> None:
    with pytest.raises(ListenerResponseError, match=str(status)):
        check_listener_response(_listener_response({}, status))


@pytest.mark.parametrize(
    "text", ["a\r\nSet-Cookie: x", "a\nb", "a\rb", "nul\x00", "\x01", "\x7f", "\x85"]
)
def test_control_characters_in_a_listeners_text_are_refused(text: str) -> None:
    with pytest.raises(ListenerResponseError, match="'X-Value' header") as caught:
        check_listener_response(_listener_response({"X-Value": text}))
    assert text not in str(caught.value)
    described = Response(request_id="1", status_code=200, status_description=f"OK{text}")
    with pytest.raises(ListenerResponseError, match="description"):
        check_listener_response(described)
    http = HttpServer()
    http.receive_data(b"GET / HTTP/1.1\r\nHost: ns\r\n\r\n")
    http.next_event()
    with pytest.raises(LocalProtocolError):
        http.start_response(200, "OK", [("X-Value", text)], content_length=0)
    with pytest.raises(LocalProtocolError):
        http.start_response(200, f"OK{text}", [], content_length=0)


def test_tabs_and_non_ascii_descriptions_pass_on() -> None:
    response = Response(
        request_id="1",
        status_code=200,
        status_description="Überprüft 完成",
        response_headers=Headers({"X-Tab": "a\tb"}),
    )
    head = _answer(response)
    assert head.startswith("HTTP/1.1 200 Überprüft 完成\r\n".encode())
    assert b"X-Tab: a\tb\r\n" in head


@given(st.text())
def test_any_listener_text_is_either_refused_or_written(text: str) -> None:
    try:
        response = Response(
            request_id="1",
            status_code=200,
            status_description=text,
            response_headers=Headers({"X-Any": text}),
        )
        check_listener_response(response)
    except ListenerResponseError:
        return
    assert _answer(response).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(("text", "status"), [("200", 200), ("403", 403), ("999", 999)])
def test_a_reject_status_of_a_final_status_is_passed_on(text: str, status: int) -> None:
    assert listener_reject_status(text, "go away now") == status


@pytest.mark.parametrize(
    "text", ["101", "199", "100", "0200", "20", "1000", "+20", "٢٠٠", "", "abc", " 200"]
)
def test_a_reject_status_that_is_not_final_is_refused(text: str) -> None:
    with pytest.raises(ListenerResponseError):
        listener_reject_status(text, "")


def test_a_reject_description_with_a_line_break_is_refused() -> None:
    with pytest.raises(ListenerResponseError, match="description"):
        listener_reject_status("403", "go\r\nSet-Cookie: x")


@pytest.mark.parametrize(
    ("closed", "relayed"),
    [
        ((1000, "bye"), (1000, "bye")),
        ((4001, "app code"), (4001, "app code")),
        ((1005, ""), (1000, "")),
        ((1006, ""), (1011, "The other side's connection was lost")),
        ((1015, ""), (1011, "The other side's connection was lost")),
    ],
)
def test_a_relayed_close_passes_on_but_never_claims_a_lost_side_ended_well(
    closed: tuple[int, str], relayed: tuple[int, str]
) -> None:
    assert relayed_close(*closed) == relayed


def _plain_request(head: bytes) -> IncomingRequest:
    server = HttpServer()
    server.receive_data(head)
    event = server.next_event()
    assert isinstance(event, IncomingRequest)
    return event


@pytest.mark.parametrize(
    ("framing", "header", "inline"),
    [
        (b"", 10, True),
        (b"Content-Length: 65536\r\n", 10, True),
        (b"Content-Length: 65537\r\n", 10, False),
        (b"Transfer-Encoding: chunked\r\n", 10, False),
        (b"", 32 * 1024, False),
    ],
    ids=["no-body", "64-kib", "over-64-kib", "chunked", "headers-over-32-kib"],
)
def test_a_request_goes_inline_only_with_a_known_small_body_and_small_headers(
    framing: bytes, header: int, inline: bool
) -> None:
    request = _plain_request(
        b"POST /hc1 HTTP/1.1\r\nHost: r\r\n" + framing + b"X-Big: " + b"a" * header + b"\r\n\r\n"
    )
    forwarded = forwarded_request_headers(request.headers, token_header=None)
    assert request_fits_inline(request, forwarded) is inline


def test_a_repeated_content_length_is_not_taken_for_a_small_body() -> None:
    request = _plain_request(b"POST /hc1 HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\n\r\n")
    repeated = IncomingRequest(
        method=request.method,
        target=request.target,
        headers=Headers([("Content-Length", "5"), ("Content-Length", "5")]),
        subprotocols=(),
        http_version="1.1",
    )
    assert not request_fits_inline(repeated, Headers())


def test_a_control_channel_closes_with_1008_when_the_newest_token_expires() -> None:
    listener, relay = control_pair()
    keepalive = relay.get_timer()
    relay.expire_token_at(50.0)
    assert relay.get_timer() == min(50.0, keepalive or 50.0)
    relay.expire_token_at(20.0)  # renewed with a shorter-lived token: sooner
    relay.handle_timer(19.9)
    assert relay.data_to_send() == b""  # not yet
    relay.handle_timer(20.0)
    assert relay.state is ChannelState.CLOSING
    closed = [e for e in deliver(relay, listener) if isinstance(e, ChannelClosed)]
    assert [(e.code, e.reason) for e in closed] == [(1008, "The token expired")]


def test_a_renewal_can_move_the_expiry_later_or_clear_it() -> None:
    _listener, relay = control_pair()
    keepalive = relay.get_timer()
    assert keepalive is not None
    relay.expire_token_at(keepalive / 2)
    relay.expire_token_at(None)
    assert relay.get_timer() == keepalive
    relay.expire_token_at(10.0)
    relay.expire_token_at(100.0)  # renewed with a longer-lived token: the old expiry is gone
    relay.handle_timer(50.0)
    assert relay.state is ChannelState.OPEN

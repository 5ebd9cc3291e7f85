"""The relay's side of WebSockets: server channels, ping pass-through."""

from __future__ import annotations

from hyco_core import (
    ChannelClosed,
    ChannelState,
    MessageReceived,
    Opened,
    PingReceived,
    PongReceived,
    RelayedWebSocket,
    ServerHandshake,
    ServerWebSocket,
)

from .scripted_relay import NONCE


def pair(*, passes_pings: bool = False) -> tuple[RelayedWebSocket, ServerWebSocket]:
    """A client channel and the relay's server channel, handshake done, trailing frames kept."""
    client = RelayedWebSocket(url="ws://relay:9090/$hc/hc1", now=0.0, nonce=NONCE)
    handshake = ServerHandshake()
    request = handshake.receive_data(client.data_to_send())
    assert request is not None
    answer, trailing = handshake.accept()
    client.receive_data(answer, 0.0)
    assert [type(e) for e in client.events()] == [Opened]
    server = ServerWebSocket(now=0.0, trailing=trailing, passes_pings=passes_pings)
    return client, server


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
    handshake = ServerHandshake()
    handshake.receive_data(client.data_to_send())
    answer, _ = handshake.accept()
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

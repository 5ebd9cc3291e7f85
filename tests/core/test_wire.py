"""The handshake and framing boundary over h11 and wsproto."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco_core._wire import ClientHandshake, ServerHandshake, accept_key, split_websocket_url
from hyco_core.errors import InvalidUrlError, LocalProtocolError, RemoteProtocolError

from .scripted_relay import NONCE


def test_accept_key_matches_rfc_6455_example() -> None:
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("url", "host", "target"),
    [
        ("wss://ns.example/$hc/hc1?a=1", "ns.example", "/$hc/hc1?a=1"),
        ("wss://ns.example:443/$hc/hc1", "ns.example", "/$hc/hc1"),
        ("ws://localhost:80", "localhost", "/"),
        ("ws://localhost:9000/$hc/x", "localhost:9000", "/$hc/x"),
        ("wss://[::1]:9443/$hc/x", "[::1]:9443", "/$hc/x"),
    ],
)
def test_split_websocket_url(url: str, host: str, target: str) -> None:
    assert split_websocket_url(url) == (host, target)


@pytest.mark.parametrize("url", ["http://ns/$hc/x", "wss:///x", "wss://ns:99999/x", "wss://ns:x/"])
def test_split_websocket_url_refuses_non_websocket_urls(url: str) -> None:
    with pytest.raises(InvalidUrlError):
        split_websocket_url(url)


def upgrade_request() -> bytes:
    return ClientHandshake(url="ws://relay/$hc/hc1", nonce=NONCE, subprotocols=["p"]).request


def test_server_handshake_reads_a_request_fed_byte_by_byte() -> None:
    server = ServerHandshake()
    data = upgrade_request()
    results = [server.receive_data(data[i : i + 1]) for i in range(len(data))]
    assert results[:-1] == [None] * (len(data) - 1)
    request = results[-1]
    assert request is not None
    assert request.is_websocket
    assert request.subprotocols == ("p",)


def test_plain_http_request_is_not_a_websocket() -> None:
    server = ServerHandshake()
    request = server.receive_data(b"GET /hc1 HTTP/1.1\r\nHost: relay\r\n\r\n")
    assert request is not None
    assert not request.is_websocket


def test_malformed_or_truncated_requests_are_remote_errors() -> None:
    with pytest.raises(RemoteProtocolError, match="malformed"):
        ServerHandshake().receive_data(b"\x00\x01 nonsense\r\n\r\n")
    server = ServerHandshake()
    server.receive_data(b"GET / HTTP/1.1\r\n")
    with pytest.raises(RemoteProtocolError, match="closed"):
        server.receive_data(b"")


def test_server_actions_need_a_complete_request() -> None:
    with pytest.raises(LocalProtocolError, match="no request"):
        ServerHandshake().refuse(400, "Bad")
    server = ServerHandshake()
    server.receive_data(
        b"GET / HTTP/1.1\r\nHost: r\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Content-Length: 5\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: a2V5\r\n\r\n"
    )
    with pytest.raises(LocalProtocolError, match="to its end"):
        server.accept()


@given(st.binary(max_size=200))
def test_server_handshake_on_any_bytes_reads_or_raises_remote_errors(data: bytes) -> None:
    server = ServerHandshake()
    try:
        server.receive_data(data)
        server.receive_data(b"")
    except RemoteProtocolError:
        pass

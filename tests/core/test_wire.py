"""The handshake and framing boundary over h11 and wsproto."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco_core._wire import (
    BodyEnd,
    BodyPiece,
    ClientHandshake,
    HandshakeAccepted,
    HandshakeRefused,
    HttpServer,
    IncomingRequest,
    accept_key,
    split_websocket_url,
)
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


def read_request(server: HttpServer, data: bytes) -> IncomingRequest:
    server.receive_data(data)
    event = server.next_event()
    assert isinstance(event, IncomingRequest)
    return event


def test_server_reads_an_upgrade_fed_byte_by_byte() -> None:
    server = HttpServer()
    data = upgrade_request()
    for i in range(len(data) - 1):
        server.receive_data(data[i : i + 1])
        assert server.next_event() is None
    request = read_request(server, data[-1:])
    assert request.is_websocket
    assert request.subprotocols == ("p",)
    assert request.http_version == "1.1"


def test_plain_request_with_body_keep_alive_and_a_second_request() -> None:
    server = HttpServer()
    request = read_request(
        server, b"POST /hc1/x?y=1 HTTP/1.1\r\nHost: relay\r\nContent-Length: 5\r\n\r\nhel"
    )
    assert not request.is_websocket
    assert (request.method, request.target) == ("POST", "/hc1/x?y=1")
    assert server.next_event() == BodyPiece(data=b"hel")
    assert server.next_event() is None
    server.receive_data(b"lo")
    assert server.next_event() == BodyPiece(data=b"lo")
    assert server.next_event() == BodyEnd()
    head = server.start_response(200, "OK", [("X-A", "1")], content_length=None)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert server.send_body(b"") == b""
    body = server.send_body(b"data") + server.end_response()
    assert body == b"4\r\ndata\r\n0\r\n\r\n"
    assert server.start_next_request()
    second = read_request(server, b"GET /hc1 HTTP/1.1\r\nHost: relay\r\n\r\n")
    assert second.method == "GET"
    assert server.next_event() == BodyEnd()


def test_expect_continue_is_answered_only_when_awaited() -> None:
    server = HttpServer()
    read_request(
        server,
        b"PUT /hc1 HTTP/1.1\r\nHost: r\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    )
    assert server.continue_if_expected().startswith(b"HTTP/1.1 100 ")
    assert server.continue_if_expected() == b""


def test_connection_close_forbids_another_request() -> None:
    server = HttpServer()
    read_request(server, b"GET / HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
    assert server.next_event() == BodyEnd()
    server.start_response(204, "No Content", [], content_length=0)
    server.end_response()
    assert not server.start_next_request()


def test_invalid_response_is_a_local_error() -> None:
    server = HttpServer()
    read_request(server, b"GET / HTTP/1.1\r\nHost: r\r\n\r\n")
    with pytest.raises(LocalProtocolError, match="cannot send"):
        server.start_response(200, "OK", [("Bad Name", "x")], content_length=0)


def test_malformed_or_truncated_requests_are_remote_errors() -> None:
    server = HttpServer()
    server.receive_data(b"\x00\x01 nonsense\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="malformed"):
        server.next_event()
    server = HttpServer()
    read_request(server, b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 9\r\n\r\n")
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    server = HttpServer()
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed"):
        server.next_event()


def test_server_actions_need_a_complete_request() -> None:
    with pytest.raises(LocalProtocolError, match="no request"):
        HttpServer().refuse(400, "Bad")
    server = HttpServer()
    read_request(
        server,
        b"GET / HTTP/1.1\r\nHost: r\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Content-Length: 5\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: a2V5\r\n\r\n",
    )
    with pytest.raises(LocalProtocolError, match="to its end"):
        server.accept_websocket()


@given(st.binary(max_size=200))
def test_server_on_any_bytes_reads_or_raises_remote_errors(data: bytes) -> None:
    server = HttpServer()
    try:
        server.receive_data(data)
        for _ in range(4):
            server.next_event()
        server.receive_data(b"")
        server.next_event()
    except RemoteProtocolError:
        pass


def test_a_servers_answer_keeps_the_spelling_of_its_header_names() -> None:
    refused = ClientHandshake(url="ws://relay/$hc/hc1", nonce=NONCE)
    outcome = refused.receive_data(
        b"HTTP/1.1 404 Not Found\r\nX-Tracking-Id: 7\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(outcome, HandshakeRefused)
    assert list(outcome.headers) == ["X-Tracking-Id", "Content-Length"]
    accepted = ClientHandshake(url="ws://relay/$hc/hc1", nonce=NONCE)
    key = accept_key(base64.b64encode(NONCE)).decode()
    outcome = accepted.receive_data(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {key}\r\nX-Relay-Thing: 1\r\n\r\n".encode()
    )
    assert isinstance(outcome, HandshakeAccepted)
    assert "X-Relay-Thing" in list(outcome.headers)
    assert outcome.headers["x-relay-thing"] == "1"

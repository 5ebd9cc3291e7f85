"""The handshake and framing boundary over h11 and wsproto."""

from __future__ import annotations

import base64

import h11
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
from hyco_core.errors import (
    InvalidRequestError,
    InvalidUrlError,
    LocalProtocolError,
    RemoteProtocolError,
)

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
        HttpServer().start_response(400, "Bad", [], content_length=0)
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


def events_of(server: HttpServer, data: bytes, chunk: int) -> list[object]:
    """Feed ``data`` in pieces of ``chunk`` bytes and collect every event until a body ends."""
    events: list[object] = []
    for start in range(0, len(data), chunk):
        server.receive_data(data[start : start + chunk])
        while (event := server.next_event()) is not None:
            events.append(event)
    return events


def refusal_of(data: bytes, chunk: int, **limits: int) -> InvalidRequestError:
    server = HttpServer(**limits)
    with pytest.raises(InvalidRequestError) as caught:
        events_of(server, data, chunk)
    # The refusal stands: nothing after the refused head is ever read.
    server.receive_data(b"GET / HTTP/1.1\r\nHost: r\r\n\r\n")
    with pytest.raises(InvalidRequestError):
        server.next_event()
    return caught.value


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: r\r\n\r\n"
AMBIGUOUS_HEADS = {
    "both": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "te first": b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n",
    "odd case and spacing": b"content-LENGTH:5\r\ntransfer-encoding:   CHUNKED  \r\n",
    "te folded": b"Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n",
    "te folded with a tab": b"Content-Length: 5\r\nTransfer-Encoding: gzip,\r\n\tchunked\r\n",
}


@pytest.mark.parametrize("chunk", [1, 7, 100_000])
@pytest.mark.parametrize("framing", AMBIGUOUS_HEADS)
def test_a_head_with_two_framings_is_refused_before_a_smuggled_request(
    framing: str, chunk: int
) -> None:
    data = (
        b"POST /hc1 HTTP/1.1\r\nHost: r\r\n"
        + AMBIGUOUS_HEADS[framing]
        + b"\r\n0\r\n\r\n"
        + SMUGGLED
    )
    error = refusal_of(data, chunk)
    assert error.status_code == 400
    assert isinstance(error, RemoteProtocolError)


@pytest.mark.parametrize("chunk", [1, 3, 100_000])
@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: r\r\nX-A: b\r\n c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: r\r\nX-A: b\r\n\tc\r\n\r\n",
        b"GET / HTTP/1.1\r\n Host: r\r\n\r\n",
        b"GET / HTTP/1.1\nHost: r\n X-A: b\n\n",
    ],
)
def test_a_folded_header_line_is_refused_with_400(head: bytes, chunk: int) -> None:
    assert refusal_of(head, chunk).status_code == 400


def test_a_body_may_hold_what_would_be_a_fold_in_a_head() -> None:
    data = b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 4\r\n\r\n\n \n "
    events = events_of(HttpServer(), data, 1)
    assert b"".join(e.data for e in events if isinstance(e, BodyPiece)) == b"\n \n "
    assert isinstance(events[-1], BodyEnd)


def big_head(size: int) -> bytes:
    start, end = b"GET / HTTP/1.1\r\nHost: r\r\nX-Big: ", b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("chunk", [1, 1000, 4096, 100_000])
def test_the_head_limit_holds_whatever_the_reads(chunk: int) -> None:
    limit = 2048
    assert isinstance(
        events_of(HttpServer(max_header_bytes=limit), big_head(limit), chunk)[0], IncomingRequest
    )
    assert refusal_of(big_head(limit + 1), chunk, max_header_bytes=limit).status_code == 431


def test_an_89_kb_head_in_one_read_gets_431() -> None:
    assert refusal_of(big_head(89_000), 100_000).status_code == 431


def target_request(length: int) -> bytes:
    return b"GET /" + b"a" * (length - 1) + b" HTTP/1.1\r\nHost: r\r\n\r\n"


@pytest.mark.parametrize("chunk", [1, 5, 100_000])
def test_the_request_target_limit_answers_414(chunk: int) -> None:
    limit = 300
    request = events_of(HttpServer(max_target_bytes=limit), target_request(limit), chunk)[0]
    assert isinstance(request, IncomingRequest)
    assert len(request.target) == limit
    assert refusal_of(target_request(limit + 1), chunk, max_target_bytes=limit).status_code == 414


def test_a_70000_character_target_gets_414_with_the_default_limits() -> None:
    assert refusal_of(target_request(70_000), 100_000).status_code == 414
    assert refusal_of(target_request(70_000), 4096).status_code == 414
    assert isinstance(events_of(HttpServer(), target_request(16 * 1024), 4096)[0], IncomingRequest)


@given(st.integers(1, 64), st.integers(0, 2))
def test_any_reads_give_the_same_request_or_the_same_refusal(chunk: int, case: int) -> None:
    limits = {"max_header_bytes": 256, "max_target_bytes": 64}
    good = b"GET /" + b"t" * 63 + b" HTTP/1.1\r\nHost: r\r\nX-A: b\r\n\r\n"
    expected = events_of(HttpServer(**limits), good, len(good))
    assert [repr(e) for e in events_of(HttpServer(**limits), good, chunk)] == [
        repr(e) for e in expected
    ]
    bad = [target_request(65), big_head(257), b"GET / HTTP/1.1\r\nHost: r\r\n x\r\n\r\n"][case]
    whole = refusal_of(bad, len(bad), **limits).status_code
    assert refusal_of(bad, chunk, **limits).status_code == whole == [414, 431, 400][case]


def test_a_pipelined_second_head_is_checked_too() -> None:
    first = b"GET /a HTTP/1.1\r\nHost: r\r\n\r\n"
    for second, status in [
        (target_request(301), 414),
        (big_head(2049), 431),
        (b"GET / HTTP/1.1\r\nHost: r\r\nX: a\r\n b\r\n\r\n", 400),
    ]:
        server = HttpServer(max_header_bytes=2048, max_target_bytes=300)
        server.receive_data(first + second)
        assert isinstance(server.next_event(), IncomingRequest)
        assert server.next_event() == BodyEnd()
        server.start_response(204, "No Content", [], content_length=0)
        server.end_response()
        assert server.start_next_request()
        with pytest.raises(InvalidRequestError) as caught:
            server.next_event()
        assert caught.value.status_code == status
    server = HttpServer()
    server.receive_data(first + first)
    assert isinstance(server.next_event(), IncomingRequest)
    assert server.next_event() == BodyEnd()
    server.start_response(204, "No Content", [], content_length=0)
    server.end_response()
    assert server.start_next_request()
    assert isinstance(server.next_event(), IncomingRequest)


def test_h11s_refusals_carry_their_status_and_never_quote_the_request() -> None:
    unsupported = refusal_of(b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: gzip\r\n\r\n", 99)
    assert unsupported.status_code == 501
    malformed = refusal_of(b"GET /?sb-hc-token=SECRET\x01 HTTP/1.1\r\nHost: r\r\n\r\n", 99)
    assert malformed.status_code == 400
    assert "SECRET" not in str(malformed)
    assert "malformed" in str(malformed)


def test_a_header_name_that_is_no_ascii_token_is_a_local_error() -> None:
    server = HttpServer()
    read_request(server, b"GET / HTTP/1.1\r\nHost: r\r\n\r\n")
    with pytest.raises(LocalProtocolError, match="ASCII"):
        server.start_response(200, "OK", [("Caf\u00e9", "x")], content_length=0)


def _client_reads(answer: bytes) -> tuple[int, bytes, dict[bytes, bytes], bytes]:
    """Status, reason, headers and body as an HTTP client (h11) reads ``answer``."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "r")]))
    client.receive_data(answer)
    response = client.next_event()
    assert isinstance(response, h11.Response)
    body = b""
    while isinstance(event := client.next_event(), h11.Data):
        body += event.data
    assert isinstance(event, h11.EndOfMessage)
    return response.status_code, response.reason, dict(response.headers), body


def test_a_refused_head_is_answered_with_its_status_and_the_connection_closes() -> None:
    server = HttpServer()
    server.receive_data(b"GET / HTTP/1.1\r\nHost: r\r\nX: " + b"a" * 70_000 + b"\r\n\r\n")
    with pytest.raises(InvalidRequestError) as caught:
        server.next_event()
    answer = server.refuse(
        caught.value.status_code,
        "Request head too large",
        headers=[("Content-Type", "text/plain")],
        body=b"too large",
    )
    status, reason, headers, body = _client_reads(answer)
    assert (status, reason, body) == (431, b"Request head too large", b"too large")
    assert headers[b"connection"] == b"close"
    assert headers[b"content-type"] == b"text/plain"


def test_a_client_turned_away_before_its_head_is_read_gets_a_whole_answer() -> None:
    status, reason, headers, body = _client_reads(HttpServer().refuse(429, "Too many, café"))
    assert (status, reason, body) == (429, "Too many, café".encode("latin-1"), b"")
    assert headers[b"content-length"] == b"0"


@pytest.mark.parametrize(
    ("status", "reason", "headers"),
    [(101, "Switching", []), (1000, "Big", []), (400, "a\r\nb", []), (400, "x", [("a b", "c")])],
)
def test_an_answer_without_a_request_refuses_what_http_cannot_carry(
    status: int, reason: str, headers: list[tuple[str, str]]
) -> None:
    with pytest.raises(LocalProtocolError):
        HttpServer().refuse(status, reason, headers=headers)

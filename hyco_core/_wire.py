"""The only door to h11 and wsproto: the WebSocket upgrade handshake and the frame layer.

Everything above this module speaks hyco's own types. h11 and wsproto exceptions are translated
here into :class:`~hyco_core.errors.RemoteProtocolError`, so a misbehaving peer can never crash the
kernel with a foreign exception.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason

from .errors import InvalidRequestError, InvalidUrlError, LocalProtocolError, RemoteProtocolError
from .messages import Headers

__all__ = [
    "BodyEnd",
    "BodyPiece",
    "ClientHandshake",
    "FrameClose",
    "FrameEvent",
    "FrameMessage",
    "FramePing",
    "FramePong",
    "FrameViolation",
    "Frames",
    "HandshakeAccepted",
    "HandshakeRefused",
    "HttpServer",
    "IncomingRequest",
    "accept_key",
    "encode_header_text",
    "is_sendable_header_text",
    "split_websocket_url",
]

_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_REFUSAL_BODY = 64 * 1024
_DEFAULT_PORTS = {"ws": 80, "wss": 443, "http": 80, "https": 443}
# h11 ends a request head at the first blank line, with or without its CR.
_HEAD_END = re.compile(rb"\n\r?\n")
# A header line that starts with a space or a tab continues the previous one (obs-fold).
_FOLDED_LINE = re.compile(rb"\n[ \t]")
# Control characters (Unicode category Cc) but HTAB, and lone surrogates (no UTF-8 form): CR
# and LF would end the header line, and no HTTP recipient expects the others in a field.
_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
# h11 quotes the offending bytes after ": b'" (or ": bytearray(b'"): they may hold a token
# from the request line.
_QUOTED_BYTES = re.compile(r": (?:bytearray\()?b['\"]")


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value a server derives from the client's key (RFC 6455)."""
    return base64.b64encode(hashlib.sha1(key + _WEBSOCKET_GUID, usedforsecurity=False).digest())


def is_sendable_header_text(text: str) -> bool:
    """Whether ``text`` can be a header value or reason phrase: no control character other
    than HTAB, no lone surrogate."""
    return _UNSENDABLE.search(text) is None


def encode_header_text(text: str) -> bytes:
    """The bytes a header value or reason phrase goes out as.

    Latin-1 when every character has a Latin-1 byte: HTTP clients (browsers' fetch, Python's
    http.client, h11) read header bytes as Latin-1, so ``café`` arrives as ``café``. Other
    text has no such byte form and goes as UTF-8, the encoding a reader can still recover.
    Raises :class:`LocalProtocolError` for text :func:`is_sendable_header_text` refuses.
    """
    if not is_sendable_header_text(text):
        raise LocalProtocolError(
            "header text must not hold control characters other than tab, or lone surrogates"
        )
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def split_websocket_url(url: str) -> tuple[str, str]:
    """Return the ``Host`` header value and the request target of a ``ws://``/``wss://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise InvalidUrlError("expected a ws:// or wss:// URL with a host")
    try:
        port = parts.port
    except ValueError:
        raise InvalidUrlError("the URL's port is not a number from 0 to 65535") from None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return host, target


@dataclass(frozen=True, slots=True)
class HandshakeAccepted:
    """The server switched protocols; ``trailing`` holds frame bytes that came with the answer."""

    subprotocol: str | None
    headers: Headers
    trailing: bytes


@dataclass(frozen=True, slots=True)
class HandshakeRefused:
    """The server answered the upgrade with an ordinary HTTP response."""

    status_code: int
    reason: str
    headers: Headers
    body: bytes


class ClientHandshake:
    """The client half of the HTTP/1.1 upgrade to WebSocket, on h11."""

    def __init__(
        self,
        *,
        url: str,
        nonce: bytes,
        subprotocols: Sequence[str] = (),
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        if len(nonce) != 16:
            raise ValueError("the WebSocket key nonce must be 16 random bytes")
        host, target = split_websocket_url(url)
        self._key = base64.b64encode(nonce)
        self._subprotocols = tuple(subprotocols)
        request_headers: list[tuple[str, str]] = [
            ("Host", host),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", self._key.decode("ascii")),
            ("Sec-WebSocket-Version", "13"),
        ]
        if self._subprotocols:
            request_headers.append(("Sec-WebSocket-Protocol", ", ".join(self._subprotocols)))
        request_headers.extend(headers)
        self._http = h11.Connection(h11.CLIENT)
        self._refusal: h11.Response | None = None
        self._body = bytearray()
        try:
            self.request = self._http.send(
                h11.Request(method="GET", target=target, headers=request_headers)
            ) + self._http.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise ValueError(f"cannot build the handshake request: {exc}") from None

    def receive_data(self, data: bytes) -> HandshakeAccepted | HandshakeRefused | None:
        """Feed bytes from the server (``b""`` at end of stream); return the outcome once known."""
        self._http.receive_data(data)
        try:
            return self._next_outcome()
        except h11.RemoteProtocolError as exc:
            raise RemoteProtocolError(
                f"invalid HTTP answer to the WebSocket upgrade: {exc}"
            ) from None

    def _next_outcome(self) -> HandshakeAccepted | HandshakeRefused | None:
        while True:
            event = self._http.next_event()
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                return self._accepted(event)
            if isinstance(event, h11.Response):
                self._refusal = event
            elif isinstance(event, h11.Data):
                room = _MAX_REFUSAL_BODY - len(self._body)
                self._body += event.data[:room]
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                # h11 only ends a message it has seen start, so the response head is known.
                assert self._refusal is not None
                return HandshakeRefused(
                    status_code=self._refusal.status_code,
                    reason=self._refusal.reason.decode("latin-1"),
                    headers=_headers(self._refusal),
                    body=bytes(self._body),
                )

    def _accepted(self, response: h11.InformationalResponse) -> HandshakeAccepted:
        headers = _headers(response)
        if headers.get("upgrade", "").lower() != "websocket":
            raise RemoteProtocolError("the server switched to a protocol other than WebSocket")
        if headers.get("sec-websocket-accept", "").encode("latin-1") != accept_key(self._key):
            raise RemoteProtocolError("the server's Sec-WebSocket-Accept does not match our key")
        if headers.get("sec-websocket-extensions"):
            raise RemoteProtocolError("the server enabled a WebSocket extension nobody offered")
        subprotocol = headers.get("sec-websocket-protocol") or None
        if subprotocol is not None and subprotocol not in self._subprotocols:
            raise RemoteProtocolError(f"the server chose subprotocol {subprotocol!r}, not offered")
        trailing, _closed = self._http.trailing_data
        return HandshakeAccepted(subprotocol=subprotocol, headers=headers, trailing=trailing)


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """The head of an HTTP request a server received: an upgrade to WebSocket, or plain HTTP."""

    method: str
    target: str
    headers: Headers
    subprotocols: tuple[str, ...]
    http_version: str

    @property
    def is_websocket(self) -> bool:
        """Whether this is an opening handshake as RFC 6455 4.1 requires it: a GET over
        HTTP/1.1 with version 13 and a key of 16 bytes in base64."""
        return (
            self.method == "GET"
            and self.http_version == "1.1"
            and self.headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in self.headers.get("connection", "").lower()
            and self.headers.get("sec-websocket-version") == "13"
            and _is_websocket_key(self.headers.get("sec-websocket-key", ""))
        )


def _is_websocket_key(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == 16
    except ValueError:  # not base64 (binascii.Error is a ValueError), or not ASCII
        return False


@dataclass(frozen=True, slots=True)
class BodyPiece:
    """A piece of the request body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BodyEnd:
    """The request body (possibly empty) is complete."""


class _HeadWatch:
    """Checks the raw bytes of one request head, which h11 does not show, as they arrive.

    A head is refused when it grows beyond ``max_head_bytes`` (431), when its request target
    is longer than ``max_target_bytes`` (414), or when a header line is folded (400), however
    the head is cut into reads. Every search covers only the bytes new in a read.
    """

    __slots__ = (
        "_data",
        "_line_end",
        "_max_head_bytes",
        "_max_target_bytes",
        "_target_end",
        "_target_start",
        "complete",
    )

    def __init__(self, *, max_head_bytes: int, max_target_bytes: int) -> None:
        self._data = bytearray()
        self._line_end = -1
        self._target_start = -1
        self._target_end = -1
        self._max_head_bytes = max_head_bytes
        self._max_target_bytes = max_target_bytes
        self.complete = False

    def feed(self, data: bytes) -> InvalidRequestError | None:
        """Take the next bytes of the head; return why it must be refused, once that shows."""
        start = len(self._data)
        # One byte more than a head may have tells a head that is too large.
        self._data += data[: self._max_head_bytes + 1 - start]
        head = self._data
        end_match = _HEAD_END.search(head, max(0, start - 2))
        end = end_match.end() if end_match else len(head)
        if _FOLDED_LINE.search(head, max(0, start - 1), end):
            return InvalidRequestError(
                "the request folds a header line over two (obs-fold, RFC 9112 5.2)"
            )
        if self._target_too_long(start):
            return InvalidRequestError(
                f"the request target is longer than {self._max_target_bytes} bytes",
                status_code=414,
            )
        if end > self._max_head_bytes:
            return InvalidRequestError(
                f"the request head is larger than {self._max_head_bytes} bytes", status_code=431
            )
        if end_match:
            self.complete = True
        return None

    def _target_too_long(self, start: int) -> bool:
        head = self._data
        if self._line_end < 0:
            self._line_end = head.find(b"\n", start)
        line_stop = self._line_end if self._line_end >= 0 else len(head)
        # The request line is "method SP target SP version": the target lies between the spaces.
        if self._target_start < 0:
            space = head.find(b" ", start, line_stop)
            if space < 0:
                return False
            self._target_start = space + 1
        if self._target_end < 0:
            space = head.find(b" ", max(start, self._target_start), line_stop)
            self._target_end = space
        target_stop = self._target_end if self._target_end >= 0 else line_stop
        return target_stop - self._target_start > self._max_target_bytes


class HttpServer:
    """The server end of one HTTP/1.1 connection, on h11: requests in, responses or an upgrade out.

    A connection carries requests one after the other (keep-alive) until either side closes it or
    it switches to WebSocket. A request head that must be refused makes :meth:`next_event`
    raise :class:`~hyco_core.errors.InvalidRequestError` (now and on every later call), whose
    ``status_code`` is the answer to give before closing: a head larger than
    ``max_header_bytes`` (431) or with a request target longer than ``max_target_bytes`` (414),
    however it is cut into reads; a folded header line, or both ``Content-Length`` and
    ``Transfer-Encoding`` (which could smuggle a second request past a proxy, RFC 9112 6.1), or
    anything else malformed (400).
    """

    def __init__(
        self, *, max_header_bytes: int = 64 * 1024, max_target_bytes: int = 16 * 1024
    ) -> None:
        self._http = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self._max_header_bytes = max_header_bytes
        self._max_target_bytes = max_target_bytes
        self._watch: _HeadWatch | None = self._new_watch()
        self._refusal: InvalidRequestError | None = None
        self._request: IncomingRequest | None = None
        self._bodyless = False

    def _new_watch(self) -> _HeadWatch:
        return _HeadWatch(
            max_head_bytes=self._max_header_bytes, max_target_bytes=self._max_target_bytes
        )

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; ``b""`` means it closed its side."""
        if self._refusal is not None:
            return  # nothing after a refused head is ever read
        if self._watch is not None and data:
            self._watch_head(data)
        self._http.receive_data(data)

    def _watch_head(self, data: bytes) -> None:
        assert self._watch is not None
        self._refusal = self._watch.feed(data)
        if self._watch.complete:
            self._watch = None

    def next_event(self) -> IncomingRequest | BodyPiece | BodyEnd | None:
        """The next thing the client sent, or ``None`` when more bytes are needed first."""
        if self._refusal is not None:
            raise self._refusal
        try:
            event = self._http.next_event()
        except h11.RemoteProtocolError as exc:
            self._refusal = _invalid_request(exc)
            raise self._refusal from None
        if isinstance(event, h11.Request):
            names = {name for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                self._refusal = InvalidRequestError(
                    "the request has both Content-Length and Transfer-Encoding, so its body "
                    "has no single length (RFC 9112 6.1)"
                )
                raise self._refusal
            headers = _headers(event)
            offered = headers.get("sec-websocket-protocol", "")
            self._request = IncomingRequest(
                method=event.method.decode("ascii"),
                target=event.target.decode("ascii"),
                headers=headers,
                subprotocols=tuple(item.strip() for item in offered.split(",") if item.strip()),
                http_version=event.http_version.decode("ascii"),
            )
            return self._request
        if isinstance(event, h11.Data):
            return BodyPiece(data=bytes(event.data))
        if isinstance(event, h11.EndOfMessage):
            return BodyEnd()
        if isinstance(event, h11.ConnectionClosed):
            raise RemoteProtocolError("the client closed the connection before its request ended")
        return None

    def continue_if_expected(self) -> bytes:
        """The ``100 Continue`` a client waiting for it needs before it sends its body."""
        if not self._http.they_are_waiting_for_100_continue:
            return b""
        return self._http.send(h11.InformationalResponse(status_code=100, headers=[]))

    def accept_websocket(self, *, subprotocol: str | None = None) -> tuple[bytes, bytes]:
        """Switch protocols; return the answer's bytes and the frame bytes already received."""
        request = self._require_request()
        try:
            while (event := self._http.next_event()) is not h11.PAUSED:
                if event is h11.NEED_DATA:
                    raise LocalProtocolError("the upgrade request has not been read to its end")
        except h11.RemoteProtocolError as exc:
            raise _invalid_request(exc) from None
        key = request.headers["sec-websocket-key"].encode("latin-1")
        headers = [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", accept_key(key)),
        ]
        if subprotocol is not None:
            # Header values are read as latin-1: an offered subprotocol goes back byte for byte.
            try:
                headers.append((b"Sec-WebSocket-Protocol", subprotocol.encode("latin-1")))
            except UnicodeEncodeError:
                raise LocalProtocolError("a subprotocol must be latin-1 header text") from None
        try:
            answer = self._http.send(h11.InformationalResponse(status_code=101, headers=headers))
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(f"cannot switch protocols: {exc}") from None
        trailing, _closed = self._http.trailing_data
        return answer, trailing

    def refuse(
        self,
        status_code: int,
        reason: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> bytes:
        """Answer with an error status and reason phrase, then close the connection.

        Also the answer to a head that could not be read (the :class:`InvalidRequestError`
        :meth:`next_event` raised), or that was never read (a client turned away at once).
        Raises :class:`LocalProtocolError` for a status outside 200..999 or text with control
        characters."""
        if self._request is None or self._refusal is not None:
            return _answer_without_request(status_code, reason, headers, body)
        return (
            self.start_response(
                status_code,
                reason,
                [*headers, ("Connection", "close")],
                content_length=len(body),
            )
            + self.send_body(body)
            + self.end_response()
        )

    def start_response(
        self,
        status_code: int,
        reason: str,
        headers: Sequence[tuple[str, str]],
        *,
        content_length: int | None,
    ) -> bytes:
        """The response head. Without a known length the body is chunked (or ends with the
        connection, for an HTTP/1.0 client). A response to HEAD, a 204 and a 304 carry no body:
        :meth:`send_body` drops what it is given for them.

        The reason and header values are written as :func:`encode_header_text` says (spaces and
        tabs around a value dropped, RFC 9110 5.5). Raises :class:`LocalProtocolError` for a
        status outside 200..999 or text with control characters; check a listener's response
        with :func:`~hyco_core.service.check_listener_response` first."""
        request = self._require_request()
        self._bodyless = request.method == "HEAD" or status_code in (204, 304)
        all_headers = [
            (_header_name_bytes(name), encode_header_text(value).strip(b" \t"))
            for name, value in headers
        ]
        if content_length is not None:
            all_headers.append((b"Content-Length", str(content_length).encode("ascii")))
        try:
            return self._http.send(
                h11.Response(
                    status_code=status_code,
                    reason=encode_header_text(reason),
                    headers=all_headers,
                )
            )
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(f"cannot send this response: {exc}") from None

    def send_body(self, data: bytes) -> bytes:
        if not data or self._bodyless:
            return b""
        return self._send(h11.Data(data=data))

    def end_response(self) -> bytes:
        return self._send(h11.EndOfMessage())

    def _send(self, event: h11.Data | h11.EndOfMessage) -> bytes:
        try:
            return self._http.send(event)
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(f"cannot send this response: {exc}") from None

    def start_next_request(self) -> bool:
        """After a complete exchange: whether the connection may carry another request."""
        if self._http.our_state is h11.DONE and self._http.their_state is h11.DONE:
            self._http.start_next_cycle()
            self._request = None
            # A pipelining client's next head may already wait in h11's buffer, unwatched.
            self._watch = self._new_watch()
            pending, _closed = self._http.trailing_data
            if pending:
                self._watch_head(pending)
            return True
        return False

    def _require_request(self) -> IncomingRequest:
        if self._request is None:
            raise LocalProtocolError("no request has been read yet")
        return self._request


def _answer_without_request(
    status_code: int, reason: str, headers: Sequence[tuple[str, str]], body: bytes
) -> bytes:
    """A whole response that closes the connection, for a client whose request h11 holds
    no state for: written here, in h11's shape, since h11 answers only requests it read."""
    if not 200 <= status_code <= 999:
        raise LocalProtocolError(f"cannot refuse with {status_code}: a status is 200 to 999")
    try:
        named = Headers([*headers, ("Content-Length", str(len(body))), ("Connection", "close")])
    except ValueError as error:
        raise LocalProtocolError(str(error)) from None
    lines = [b"HTTP/1.1 %d %s" % (status_code, encode_header_text(reason))]
    lines += [
        name.encode("ascii") + b": " + encode_header_text(value).strip(b" \t")
        for name, value in named.items()
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _header_name_bytes(name: str) -> bytes:
    try:
        return name.encode("ascii")
    except UnicodeEncodeError:
        raise LocalProtocolError("a header name must be an ASCII token") from None


def _invalid_request(exc: h11.RemoteProtocolError) -> InvalidRequestError:
    problem = _QUOTED_BYTES.split(str(exc), maxsplit=1)[0]
    return InvalidRequestError(
        f"malformed HTTP request: {problem}", status_code=exc.error_status_hint
    )


def _headers(event: h11.Request | h11.Response | h11.InformationalResponse) -> Headers:
    # h11 lower-cases the names it hands out; raw_items() keeps them as the peer spelled them,
    # which a listener sees in connectHeaders / requestHeaders (lookups ignore case anyway).
    return Headers(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in event.headers.raw_items()
    )


@dataclass(frozen=True, slots=True)
class FrameMessage:
    """A piece of a text or binary message; ``final`` marks its last piece."""

    data: str | bytes
    final: bool


@dataclass(frozen=True, slots=True)
class FramePing:
    """A ping to pass on (only when the frame layer does not answer pings itself)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class FramePong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class FrameClose:
    """The peer sent a close frame."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class FrameViolation:
    """The peer sent frames RFC 6455 forbids; the connection must close with ``code``."""

    code: int
    reason: str


_STATES_BEFORE_REMOTE_CLOSE = (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING)

FrameEvent = FrameMessage | FramePing | FramePong | FrameClose | FrameViolation


class Frames:
    """RFC 6455 framing after the handshake, on wsproto.

    Pings are answered here, unless ``passes_pings``: a relay hands them to the other side, whose
    pong it then passes back.
    """

    __slots__ = ("_connection", "_outgoing", "passes_pings")

    def __init__(self, *, client: bool, passes_pings: bool = False) -> None:
        role = ConnectionType.CLIENT if client else ConnectionType.SERVER
        self._connection = Connection(role)
        self._outgoing = bytearray()
        self.passes_pings = passes_pings

    def receive_data(self, data: bytes) -> None:
        self._connection.receive_data(data)

    def events(self) -> Iterator[FrameEvent]:
        for event in self._connection.events():
            if isinstance(event, TextMessage | BytesMessage):
                data = event.data if isinstance(event.data, str) else bytes(event.data)
                yield FrameMessage(data=data, final=event.message_finished)
            elif isinstance(event, Ping):
                if self.passes_pings:
                    yield FramePing(payload=bytes(event.payload))
                elif self._connection.state is ConnectionState.OPEN:
                    # Once this side has sent its close, a ping goes unanswered (RFC 6455 5.5.1).
                    self._outgoing += self._connection.send(event.response())
            elif isinstance(event, Pong):
                yield FramePong(payload=bytes(event.payload))
            elif isinstance(event, CloseConnection):  # pragma: no branch
                if self._connection.state in _STATES_BEFORE_REMOTE_CLOSE:
                    # wsproto reports a framing violation as a close it did not receive: the
                    # state shows no close frame arrived.
                    yield FrameViolation(code=event.code, reason=event.reason or "")
                else:
                    yield FrameClose(code=event.code, reason=event.reason or "")

    def take_outgoing(self) -> bytes:
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def send_message(self, data: str | bytes, *, final: bool) -> bytes:
        event: TextMessage | BytesMessage
        if isinstance(data, str):
            event = TextMessage(data=data, message_finished=final)
        else:
            event = BytesMessage(data=data, message_finished=final)
        return self._connection.send(event)

    def ping(self, payload: bytes = b"") -> bytes:
        return self._connection.send(Ping(payload=payload))

    def pong(self, payload: bytes = b"") -> bytes:
        return self._connection.send(Pong(payload=payload))

    def close(self, code: int, reason: str) -> bytes:
        if code in (CloseReason.NO_STATUS_RCVD, CloseReason.ABNORMAL_CLOSURE):
            code = CloseReason.NORMAL_CLOSURE
        return self._connection.send(CloseConnection(code=code, reason=reason))

"""The relay's side of the protocol: connections it accepted, and what it forwards.

This module is the one place for the service role: everything a relay needs that
:mod:`hyco_core` (the client role) does not export. Most of it is defined here; the rest is
re-exported from the kernel module it belongs to (addresses, token verification, name folding,
events, errors).

A relay reads each incoming connection with :class:`HttpServer` (an upgrade to WebSocket, or a
plain HTTP request from an HTTP sender). Once it has switched protocols it speaks through
:class:`ServerWebSocket` (a sender, or a listener's accept rendezvous),
:class:`ServiceControlChannel` (a listener's control channel) or :class:`ServiceHttpRendezvous`
(an HTTP rendezvous). The functions below decide what a relay forwards: the token a request
carries, the headers a listener may see, the ``Via`` the relay adds. Like the client role, none
of it does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._wire import (
    BodyEnd,
    BodyPiece,
    Frames,
    HttpServer,
    IncomingRequest,
    is_sendable_header_text,
)
from .channel import ChannelConfig, RelayedWebSocket, TextCollector, _Trigger
from .control import message_kind
from .errors import (
    InvalidRequestError,
    ListenerResponseError,
    LocalProtocolError,
    RemoteProtocolError,
)
from .events import (
    PingReceived,
    PongReceived,
    ResponseBodyReceived,
    ResponseReceived,
    TokenRenewed,
    UnknownContentIgnored,
)
from .http import fits_inline
from .messages import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HOP_BY_HOP_HEADERS,
    INLINE_BODY_LIMIT,
    INLINE_HEADERS_LIMIT,
    Accept,
    Headers,
    RenewToken,
    Request,
    Response,
    decode_message,
    encode_message,
)
from .names import ascii_lower
from .sas import SasOutcome, SasVerdict, verify_sas_token
from .uris import (
    HostedEntities,
    create_rendezvous_uri,
    normalize_namespace,
    strip_relay_query,
    validate_entity_path,
)

__all__ = [
    "AUTHORIZATION_HEADERS",
    "INLINE_HEADERS_LIMIT",
    "RELAY_CONFIG",
    "BodyEnd",
    "BodyPiece",
    "HostedEntities",
    "HttpServer",
    "IncomingRequest",
    "InvalidRequestError",
    "ListenerResponseError",
    "PingReceived",
    "PongReceived",
    "ResponseBodyReceived",
    "ResponseReceived",
    "SasOutcome",
    "SasVerdict",
    "ServerWebSocket",
    "ServiceControlChannel",
    "ServiceHttpRendezvous",
    "TokenRenewed",
    "add_via",
    "ascii_lower",
    "check_listener_response",
    "create_rendezvous_uri",
    "forwarded_connect_headers",
    "forwarded_request_headers",
    "listener_reject_status",
    "normalize_namespace",
    "relayed_close",
    "request_fits_inline",
    "request_token",
    "strip_relay_query",
    "validate_entity_path",
    "verify_sas_token",
]

RELAY_CONFIG = ChannelConfig()

#: Headers that carry relay credentials; a relay never forwards them.
AUTHORIZATION_HEADERS = frozenset({"servicebusauthorization"})

# What a listener may answer an HTTP sender with: a final status, within the protocol's range.
_FINAL_STATUSES = range(200, 1000)
_NO_STATUS = 1005  # a close frame without a status code
_NO_CLOSE_FRAME = frozenset({1006, 1015})  # the connection was lost, or its TLS failed


def request_token(
    headers: Mapping[str, str], relay_parameters: Mapping[str, str], *, http: bool
) -> tuple[str | None, str | None]:
    """The relay token a request carries, and the header it came in (``None`` for the query).

    ``ServiceBusAuthorization`` first, then ``sb-hc-token`` in the query; for plain HTTP senders
    ``Authorization`` counts too, but only when neither of the others is present.
    """
    token = headers.get("servicebusauthorization")
    if token:
        return token, "ServiceBusAuthorization"
    token = relay_parameters.get("sb-hc-token")
    if token:
        return token, None
    token = headers.get("authorization") if http else None
    if token:
        return token, "Authorization"
    return None, None


def forwarded_connect_headers(headers: Headers) -> Headers:
    """A sender's handshake headers as a listener sees them in ``accept``: minus the token."""
    return headers.without(AUTHORIZATION_HEADERS)


def forwarded_request_headers(headers: Headers, *, token_header: str | None) -> Headers:
    """An HTTP sender's headers as a listener sees them: no hop-by-hop, no relay credentials."""
    dropped = HOP_BY_HOP_HEADERS | AUTHORIZATION_HEADERS
    if token_header is not None:
        dropped = dropped | {ascii_lower(token_header)}
    return headers.without(dropped)


def add_via(headers: Headers, namespace_host: str) -> Headers:
    """``headers`` with the relay named in ``Via`` (appended to one already there)."""
    hop = f"1.1 {namespace_host}"
    existing = headers.get("via")
    value = f"{existing}, {hop}" if existing else hop
    return Headers([*headers.without(["via"]).items(), ("Via", value)])


def relayed_close(code: int, reason: str) -> tuple[int, str]:
    """The close a relay sends one side of a relayed WebSocket when the other side closed with
    ``code`` and ``reason`` (as its ``ChannelClosed`` says): passed on as they are, but for a
    close frame without a status (1005), which is a normal close (1000), and for no close frame
    at all (1006, 1015), which is no normal end: 1011."""
    if code == _NO_STATUS:
        return 1000, reason
    if code in _NO_CLOSE_FRAME:
        return 1011, "The other side's connection was lost"
    return code, reason


def request_fits_inline(request: IncomingRequest, forwarded: Headers) -> bool:
    """Whether an HTTP sender's request may reach the listener whole on the control channel:
    a body of known length up to 64 KiB (chunked: unknown) and forwarded headers of at most 32
    KiB. Any other request is announced by its address only, to be read over a rendezvous."""
    if "transfer-encoding" in request.headers:
        return False
    length = request.headers.get("content-length", "0")  # a repeated one reads "5, 5"
    header_bytes = sum(len(name) + len(value) + 4 for name, value in forwarded.items())
    return length.isdigit() and fits_inline(int(length)) and header_bytes <= INLINE_HEADERS_LIMIT


def check_listener_response(response: Response) -> None:
    """Check that a relay can write a listener's ``response`` head to its HTTP sender.

    The status must be final: 200..999 (1xx statuses, 101 included, announce a response that
    follows, never end one). The description and every header value must hold no control
    character other than HTAB (CR and LF would end the line) and no lone surrogate. Any other
    text passes: :meth:`HttpServer.start_response` writes it as Latin-1 bytes when it has
    them, else as UTF-8. Raises :class:`~hyco_core.errors.ListenerResponseError` naming what
    is wrong, never quoting a value; a relay answers the sender 502 then.
    """
    if response.status_code < _FINAL_STATUSES.start:
        raise ListenerResponseError(
            f"the listener answered {response.status_code}, which is not a final status "
            "(200 to 999)"
        )
    if not is_sendable_header_text(response.status_description or ""):
        raise ListenerResponseError(
            "the listener's status description holds a control character or a lone surrogate"
        )
    for name, value in response.response_headers.items():
        if not is_sendable_header_text(value):
            raise ListenerResponseError(
                f"the listener's {name[:64]!r} header holds a control character or a lone surrogate"
            )


def listener_reject_status(status_code: str, description: str) -> int:
    """The status a relay fails a rejected sender's handshake with, from a reject address.

    ``status_code`` is the decoded ``sb-hc-statusCode``: three ASCII digits naming a final
    status, 200..999, as for :func:`check_listener_response`; ``description`` (the decoded
    ``sb-hc-statusDescription``) follows the same text rule. Raises
    :class:`~hyco_core.errors.ListenerResponseError` otherwise; a relay answers the sender 502
    then.
    """
    if not (len(status_code) == 3 and status_code.isascii() and status_code.isdigit()):
        raise ListenerResponseError("the listener's reject status is not a 3-digit number")
    status = int(status_code)
    if status not in _FINAL_STATUSES:
        raise ListenerResponseError(
            f"the listener rejected with {status}, which is not a final status (200 to 999)"
        )
    if not is_sendable_header_text(description):
        raise ListenerResponseError(
            "the listener's reject description holds a control character or a lone surrogate"
        )
    return status


class ServerWebSocket(RelayedWebSocket):
    """The relay's end of a WebSocket whose handshake it accepted; open from the start.

    With ``passes_pings`` the relay does not answer pings: they surface as
    :class:`~hyco_core.events.PingReceived` for the relay to hand to the other side, and pongs as
    :class:`~hyco_core.events.PongReceived`.
    """

    __slots__ = ()

    def __init__(
        self,
        *,
        now: float,
        trailing: bytes = b"",
        config: ChannelConfig = RELAY_CONFIG,
        passes_pings: bool = False,
    ) -> None:
        self._handshake = None
        self._start(now, config, deadline=None)
        self._frames = Frames(client=False, passes_pings=passes_pings)
        self._transition(_Trigger.HANDSHAKE_ACCEPTED)
        self.receive_data(trailing, now)


class _ControlMessages(ServerWebSocket):
    """Shared by the relay's control channel and HTTP rendezvous: text messages are JSON."""

    __slots__ = ("_response", "_text")

    _hears_renewals = False

    def __init__(
        self,
        *,
        now: float,
        trailing: bytes = b"",
        config: ChannelConfig = RELAY_CONFIG,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._text = TextCollector(max_message_size)
        self._response: Response | None = None
        super().__init__(now=now, trailing=trailing, config=config)

    def _on_message(self, data: str | bytes, final: bool) -> None:
        if isinstance(data, bytes):
            self._on_body(data, final)
            return
        text = self._text.add(data, final)
        if text is None:
            return
        if self._response is not None:
            raise RemoteProtocolError("a response's body did not follow it; a text message came")
        decoded = decode_message(text, max_size=self._text.limit)
        message = decoded.message
        if decoded.ignored_fields:
            kind = message_kind(message)
            self._events.append(UnknownContentIgnored(kind=kind, fields=decoded.ignored_fields))
        if isinstance(message, Response):
            self._on_response(message)
        elif isinstance(message, RenewToken) and self._hears_renewals:
            self._events.append(TokenRenewed(token=message.token))
        else:
            self._events.append(
                UnknownContentIgnored(kind=message_kind(message), excerpt=_excerpt(message, text))
            )

    def _on_response(self, response: Response) -> None:
        raise NotImplementedError

    def _on_body(self, data: bytes, final: bool) -> None:
        raise NotImplementedError


def _excerpt(message: object, text: str) -> str:
    # A renewToken carries a secret: never keep its text.
    return "" if isinstance(message, RenewToken) else text[:200]


class ServiceControlChannel(_ControlMessages):
    """The relay's end of a listener's control channel.

    The relay announces senders (:meth:`send_accept`) and HTTP requests (:meth:`send_request`);
    it hears :class:`~hyco_core.events.ResponseReceived` (with the inline body that follows a
    ``response`` as one binary message) and :class:`~hyco_core.events.TokenRenewed`. With
    :meth:`expire_token_at`, it closes itself with 1008 when the listener's token expires.
    """

    __slots__ = ("_body", "_max_inline_body", "_token_expiry")

    _hears_renewals = True

    def __init__(
        self,
        *,
        now: float,
        trailing: bytes = b"",
        config: ChannelConfig = RELAY_CONFIG,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_inline_body: int = INLINE_BODY_LIMIT,
    ) -> None:
        self._max_inline_body = max_inline_body
        self._body = bytearray()
        self._token_expiry: float | None = None
        super().__init__(
            now=now, trailing=trailing, config=config, max_message_size=max_message_size
        )

    def send_accept(self, accept: Accept) -> None:
        self._send_message(encode_message(accept), final=True)

    def expire_token_at(self, deadline: float | None) -> None:
        """Close with 1008 at ``deadline`` (on the clock of ``now``: a monotonic one, so that
        a wall clock set back cannot keep an expired listener on), when the listener's token
        expires. Each call replaces the last: a renewal's expiry rules, sooner or later."""
        self._token_expiry = deadline

    def _timer(self) -> float | None:
        return self._token_expiry

    def _on_timer(self, now: float) -> None:
        if self._token_expiry is not None and now >= self._token_expiry:
            self._token_expiry = None
            self.close(1008, "The token expired", now=now)

    def send_request(self, request: Request, body: bytes = b"") -> None:
        """Announce an HTTP request: whole and inline, or (``request.body`` is ``None``) only its
        address, so that the listener fetches it over a rendezvous."""
        if request.body is None and body:
            raise LocalProtocolError("a request sent for a rendezvous carries no inline body")
        if len(body) > self._max_inline_body:
            raise LocalProtocolError(f"an inline body is at most {self._max_inline_body} bytes")
        self._send_message(encode_message(request), final=True)
        if request.body:
            self._send_message(body, final=True)

    def _on_response(self, response: Response) -> None:
        if response.body:
            self._response = response
        else:
            self._events.append(ResponseReceived(response=response, body=b""))

    def _on_body(self, data: bytes, final: bool) -> None:
        response = self._response
        if response is None:
            if final:
                self._events.append(UnknownContentIgnored(kind="binary"))
            return
        if len(self._body) + len(data) > self._max_inline_body:
            raise RemoteProtocolError(
                f"an inline response body exceeds {self._max_inline_body} bytes", close_code=1009
            )
        self._body += data
        if final:
            self._events.append(ResponseReceived(response=response, body=bytes(self._body)))
            self._body.clear()
            self._response = None


class ServiceHttpRendezvous(_ControlMessages):
    """The relay's end of an HTTP rendezvous: requests go out, streamed responses come back.

    :class:`~hyco_core.events.ResponseReceived` has ``body=None`` when the body follows as
    :class:`~hyco_core.events.ResponseBodyReceived` pieces, ``b""`` when there is none.
    """

    __slots__ = ()

    def send_request(self, request: Request) -> None:
        """The request head; with ``request.body`` set, follow with :meth:`send_body`."""
        self._send_message(encode_message(request), final=True)

    def send_body(self, data: bytes, *, final: bool) -> None:
        self._send_message(data, final=final)

    def _on_response(self, response: Response) -> None:
        if response.body:
            self._response = response
        self._events.append(
            ResponseReceived(response=response, body=None if response.body else b"")
        )

    def _on_body(self, data: bytes, final: bool) -> None:
        if self._response is None:
            if final:
                self._events.append(UnknownContentIgnored(kind="binary"))
            return
        self._events.append(ResponseBodyReceived(data=data, final=final))
        if final:
            self._response = None

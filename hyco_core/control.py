"""The listener's control channel: the long-lived WebSocket on which the relay announces work.

On top of :class:`~hyco_core.channel.WebSocketChannel` it decodes control messages into
:class:`~hyco_core.events.AcceptRequested`, :class:`~hyco_core.events.RequestReceived` (with the
inline body that follows a ``request`` as one binary message) and
:class:`~hyco_core.events.RendezvousRequested`; it answers small requests inline, renews the token
ahead of expiry (announcing :class:`~hyco_core.events.TokenRenewalDue`), and turns the relay's
close codes into typed errors.
"""

from __future__ import annotations

from dataclasses import replace

from .channel import SENDER_CONFIG, ChannelConfig, TextCollector, WebSocketChannel
from .errors import HycoError, LocalProtocolError, RemoteProtocolError, error_from_close
from .events import (
    AcceptRequested,
    RendezvousRequested,
    RequestReceived,
    TokenRenewalDue,
    UnknownContentIgnored,
)
from .messages import (
    DEFAULT_MAX_MESSAGE_SIZE,
    INLINE_BODY_LIMIT,
    Accept,
    ControlMessage,
    RenewToken,
    Request,
    Response,
    UnknownMessage,
    decode_message,
    encode_message,
)
from .timing import renewal_time
from .uris import redact_url

__all__ = ["ControlChannel", "message_kind"]

_MESSAGE_KINDS = {
    Accept: "accept",
    Request: "request",
    Response: "response",
    RenewToken: "renewToken",
}


def message_kind(message: ControlMessage) -> str:
    """The protocol's name for a control message's type (its JSON key)."""
    if isinstance(message, UnknownMessage):
        return message.kind
    return _MESSAGE_KINDS[type(message)]


class ControlChannel(WebSocketChannel):
    """One connection of a listener to the relay (``sb-hc-action=listen``)."""

    __slots__ = (
        "_body",
        "_body_for",
        "_max_inline_body",
        "_renew_at",
        "_renewal_margin",
        "_text",
        "_token_expires_at",
    )

    def __init__(
        self,
        *,
        url: str,
        now: float,
        nonce: bytes,
        token: str | None = None,
        token_expires_at: float | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        config: ChannelConfig = SENDER_CONFIG,
        renewal_margin: float = 300.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_inline_body: int = INLINE_BODY_LIMIT,
    ) -> None:
        auth = (("ServiceBusAuthorization", token),) if token else ()
        super().__init__(url=url, now=now, nonce=nonce, headers=auth + headers, config=config)
        self._renewal_margin = renewal_margin
        self._text = TextCollector(max_message_size)
        self._max_inline_body = max_inline_body
        self._token_expires_at = token_expires_at
        self._renew_at = self._renewal_deadline(now)
        self._body_for: Request | None = None
        self._body = bytearray()

    def renew_token(self, token: str, *, now: float, expires_at: float | None = None) -> None:
        """Send ``renewToken`` with a fresh token. The relay answers only if it rejects it."""
        self._send_message(encode_message(RenewToken(token=token)), final=True)
        self._token_expires_at = expires_at
        self._renew_at = self._renewal_deadline(now)

    def send_response(self, response: Response, body: bytes = b"") -> None:
        """Answer a request on the control channel: the ``response`` message, then its body.

        Only bodies up to the inline limit (64 KiB) may go here; larger or streamed ones need an
        :class:`~hyco_core.http.HttpRendezvous` at the request's address.
        """
        if len(body) > self._max_inline_body:
            raise LocalProtocolError(
                f"a {len(body)}-byte body is too large for the control channel (limit "
                f"{self._max_inline_body}); send it over an HttpRendezvous at the request address"
            )
        self._send_message(encode_message(replace(response, body=bool(body))), final=True)
        if body:
            self._send_message(body, final=True)

    # -- WebSocketChannel hooks ---------------------------------------------------------------

    def _close_error(self, code: int, reason: str) -> HycoError | None:
        # A token echoed in the relay's reason must not reach the logs the error goes to.
        return error_from_close(code, redact_url(reason))

    def _timer(self) -> float | None:
        return self._renew_at

    def _on_timer(self, now: float) -> None:
        if self._renew_at is not None and now >= self._renew_at:
            self._renew_at = None
            assert self._token_expires_at is not None
            self._events.append(TokenRenewalDue(expires_at=self._token_expires_at))

    def _on_message(self, data: str | bytes, final: bool) -> None:
        if isinstance(data, str):
            self._on_text(data, final)
        else:
            self._on_binary(data, final)

    # -- internals ---------------------------------------------------------------------------

    def _renewal_deadline(self, now: float) -> float | None:
        if self._token_expires_at is None:
            return None
        return renewal_time(now, self._token_expires_at, margin=self._renewal_margin)

    def _on_text(self, data: str, final: bool) -> None:
        if self._body_for is not None:
            raise RemoteProtocolError("a request's body did not follow it; a text message came")
        text = self._text.add(data, final)
        if text is not None:
            self._dispatch(text)

    def _dispatch(self, text: str) -> None:
        decoded = decode_message(text, max_size=self._text.limit)
        message = decoded.message
        if isinstance(message, UnknownMessage):
            self._events.append(
                UnknownContentIgnored(
                    kind=message.kind, fields=decoded.ignored_fields, excerpt=message.excerpt
                )
            )
            return
        if decoded.ignored_fields:
            self._events.append(
                UnknownContentIgnored(kind=message_kind(message), fields=decoded.ignored_fields)
            )
        if isinstance(message, Accept):
            self._events.append(AcceptRequested(accept=message))
        elif isinstance(message, Request):
            if message.needs_rendezvous:
                self._events.append(RendezvousRequested(request=message))
            elif message.body:
                self._body_for = message
            else:
                self._events.append(RequestReceived(request=message, body=b""))
        else:
            # A response or renewToken is something a listener sends, never receives.
            self._events.append(
                UnknownContentIgnored(kind=message_kind(message), excerpt=text[:200])
            )

    def _on_binary(self, data: bytes, final: bool) -> None:
        request = self._body_for
        if request is None:
            if final:
                self._events.append(UnknownContentIgnored(kind="binary"))
            return
        if len(self._body) + len(data) > self._max_inline_body:
            raise RemoteProtocolError(
                f"an inline request body exceeds {self._max_inline_body} bytes", close_code=1009
            )
        self._body += data
        if final:
            body = bytes(self._body)
            self._body.clear()
            self._body_for = None
            self._events.append(RequestReceived(request=request, body=body))

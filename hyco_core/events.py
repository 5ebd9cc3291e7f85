"""Events: the facts a kernel object reports after it has been fed bytes or a timer.

Events are immutable values. A transport reads them with ``events()`` after every call into the
kernel and acts on them; it never needs to look inside the kernel's state to know what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .errors import HycoError, RelayError
from .messages import Accept, Headers, Request, Response

__all__ = [
    "AcceptRequested",
    "ChannelClosed",
    "Event",
    "HandshakeRefused",
    "ListenerStatus",
    "ListenerStatusChanged",
    "MessageReceived",
    "Opened",
    "PingReceived",
    "PongReceived",
    "RejectDelivered",
    "RendezvousRequested",
    "RequestBodyReceived",
    "RequestReceived",
    "ResponseBodyReceived",
    "ResponseReceived",
    "TokenRenewalDue",
    "TokenRenewed",
    "UnknownContentIgnored",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """Base of all kernel events."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Opened(Event):
    """The WebSocket handshake succeeded; the channel is open."""

    subprotocol: str | None = None
    headers: Headers = field(default_factory=Headers)


@dataclass(frozen=True, kw_only=True, slots=True)
class HandshakeRefused(Event):
    """The relay answered the handshake with an HTTP status instead of switching protocols.

    Terminal: the channel is closed. ``error`` is the typed error to raise, with the status,
    reason phrase and tracking id.
    """

    status_code: int
    reason: str
    headers: Headers
    body: bytes = field(repr=False)
    error: RelayError


@dataclass(frozen=True, kw_only=True, slots=True)
class MessageReceived(Event):
    """A piece of a WebSocket message arrived; ``final`` marks the end of the message.

    Text arrives as ``str``, binary as ``bytes``. A message may arrive in several pieces when the
    peer fragmented it or when it arrived in several reads; pieces are handed over as they come,
    so nothing large is buffered in the kernel.
    """

    data: str | bytes = field(repr=False)
    final: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class PingReceived(Event):
    """A ping arrived on a channel that passes pings on (a relay's); answer it with ``pong``."""

    payload: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class PongReceived(Event):
    """A pong arrived on a channel that passes pings on."""

    payload: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class ChannelClosed(Event):
    """Terminal: the channel is closed and the transport should close its socket.

    ``code`` and ``reason`` are the close frame's (1006 when the connection dropped without one).
    ``error`` is set when the close means something went wrong; ``None`` for an orderly close.
    """

    code: int
    reason: str = ""
    error: HycoError | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RejectDelivered(Event):
    """The relay confirmed (HTTP 410) that the sender was told of the rejection. Terminal."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AcceptRequested(Event):
    """A sender wants a WebSocket: accept it at ``accept.address`` or reject it."""

    accept: Accept


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestReceived(Event):
    """An HTTP request arrived.

    ``body`` is the whole body when the request travelled inline on the control channel (``b""``
    when it has none). On a rendezvous, ``body`` is ``None`` when the body follows as
    :class:`RequestBodyReceived` events.
    """

    request: Request
    body: bytes | None = field(default=b"", repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestBodyReceived(Event):
    """A piece of a streamed request body; ``final`` marks its end."""

    data: bytes = field(repr=False)
    final: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class RendezvousRequested(Event):
    """A request too large for the control channel waits at ``request.address``.

    Open an :class:`~hyco_core.http.HttpRendezvous` there to read it and answer it.
    """

    request: Request


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseReceived(Event):
    """A listener answered an HTTP request (seen by a relay).

    ``body`` is the whole body for an inline answer (``b""`` when it has none), or ``None`` when
    it follows as :class:`ResponseBodyReceived` pieces on a rendezvous.
    """

    response: Response
    body: bytes | None = field(default=b"", repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseBodyReceived(Event):
    """A piece of a streamed response body (seen by a relay); ``final`` marks its end."""

    data: bytes = field(repr=False)
    final: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenRenewed(Event):
    """A listener sent ``renewToken`` (seen by a relay, which must verify the token)."""

    token: str = field(repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenRenewalDue(Event):
    """The control channel's token expires at ``expires_at``; call ``renew_token`` soon."""

    expires_at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class UnknownContentIgnored(Event):
    """The relay sent something this version does not know; it was ignored, as the protocol asks.

    ``kind`` names the message type, or ``"binary"`` for an unexpected binary message;
    ``fields`` lists unknown fields of a known message; ``excerpt`` is at most 200 characters.
    """

    kind: str
    fields: tuple[str, ...] = ()
    excerpt: str = ""


class ListenerStatus(Enum):
    """Where a listener stands across reconnects."""

    IDLE = "idle"
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    CLOSED = "closed"


@dataclass(frozen=True, kw_only=True, slots=True)
class ListenerStatusChanged(Event):
    """The listener went ``connecting``, ``online``, ``offline`` or ``closed``.

    ``error`` is what took it offline or closed it (``None`` when the program closed it);
    ``retry_in`` is the delay before the next attempt when offline.
    """

    status: ListenerStatus
    error: HycoError | None = None
    retry_in: float | None = None

"""A listener's decisions, made once for every transport.

A transport does a listener's I/O: it opens the sockets, fetches tokens, runs the application's
handlers in tasks or threads, keeps time. One :class:`ListenerSupervisor` per listener decides
everything else, across all the control channels of the listener's life:

- when to connect and to reconnect (:class:`~hyco_core.lifecycle.ListenerLifecycle`: the first
  open fails fast, later losses are retried on the backoff schedule, a deleted hybrid
  connection ends it) and the status the program hears;
- the control channel to open: its address carrying the listener's tracking id, its token, its
  timeouts and keep-alive, and those of every rendezvous;
- what a token provider's failure is (:class:`~hyco_core.errors.AuthorizationError`);
- what each piece of work the relay announces becomes (:meth:`~ListenerSupervisor.dispatch`):
  a sender offered to the accept handler, or refused with 503 while the listener closes; a
  request to answer, with the default answer when there is one (503 while closing, 501 without
  a request handler); a rendezvous to serve; a token to renew;
- whether an answer travels inline on the control channel or over a rendezvous, and each HTTP
  request's deadline;
- when the control channel may close once the listener is closing: after every request that
  arrived on it is answered, since the answers travel on it.

Time and randomness come in as arguments; nothing here does I/O.

The answers and close codes a listener uses without asking the application are named on
:class:`ListenerSupervisor` too, so that every transport words them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from .channel import (
    RENDEZVOUS_CONFIG,
    ChannelConfig,
    RejectChannel,
    RelayedWebSocket,
    accept_connection,
    reject_connection,
)
from .control import ControlChannel
from .errors import AuthorizationError, ConnectionLostError, HycoError
from .events import (
    AcceptRequested,
    Event,
    ListenerStatus,
    ListenerStatusChanged,
    RendezvousRequested,
    RequestReceived,
    TokenRenewalDue,
)
from .handling import AcceptContext
from .http import fits_inline
from .lifecycle import ListenerLifecycle
from .messages import Accept, Request
from .observer import ListenerObserver
from .timing import Backoff, KeepAlive
from .uris import create_relay_listen_uri

__all__ = [
    "AnswerRequest",
    "DefaultAnswer",
    "ListenerSupervisor",
    "OfferSender",
    "RefreshToken",
    "ServeRendezvous",
    "Work",
    "tracking_id_from",
]


@dataclass(frozen=True, slots=True)
class DefaultAnswer:
    """An HTTP answer a listener gives without asking the application."""

    status: int
    body: bytes
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class OfferSender:
    """Run the accept handler for this sender with :meth:`context`, unless ``refusal`` already
    decides (the listener is closing); then open
    :meth:`ListenerSupervisor.rendezvous_channel`, and report how that went with
    :meth:`ListenerSupervisor.rendezvous_opened` or :meth:`ListenerSupervisor.rendezvous_failed`.
    ``offered_at`` is when the relay's offer arrived."""

    accept: Accept
    refusal: tuple[int, str] | None
    offered_at: float

    def context(self) -> AcceptContext:
        """What the accept handler sees, rejected already when ``refusal`` is set. Raises
        :class:`~hyco_core.errors.InvalidUrlError` when the relay's address is unusable: there
        is nothing to answer then."""
        context = AcceptContext(self.accept)
        if self.refusal is not None:
            context.reject(*self.refusal)
        return context


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    """Answer a request that came on the control channel: with ``default`` when there is one,
    else with the request handler's response. Report it with
    :meth:`ListenerSupervisor.answered` once sent (or given up)."""

    request: Request
    body: bytes
    default: DefaultAnswer | None


@dataclass(frozen=True, slots=True)
class ServeRendezvous:
    """Open this request's rendezvous and serve the exchanges on it until the relay closes it;
    each request on it gets :meth:`ListenerSupervisor.default_answer` first."""

    request: Request


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """Fetch a fresh token and renew it on the control channel (a failure is only logged: the
    relay closes the channel at expiry, and the listener reconnects)."""


Work = OfferSender | AnswerRequest | ServeRendezvous | RefreshToken


def tracking_id_from(random_bytes: bytes) -> str:
    """A listener's tracking id from 16 random bytes, in the GUID form the relay uses for its
    own tracking ids."""
    if len(random_bytes) != 16:
        raise ValueError("a tracking id takes 16 random bytes")
    text = random_bytes.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class ListenerSupervisor:
    """The decisions of one listener (see the module's notes); transports call it from one
    task or under one lock."""

    REQUEST_TIMEOUT: ClassVar[float] = 60.0
    """Seconds a listener has to answer an HTTP request: the relay answers the sender 504 then."""
    RETRY_AFTER: ClassVar[int] = 5
    """Seconds a sender refused by a closing listener is told to wait (``Retry-After``): about
    what a service manager takes to start the listener again, and long enough for the relay to
    pass the retry to another listener, if there is one, once this one is offline."""
    CLOSING: ClassVar[DefaultAnswer] = DefaultAnswer(
        503,
        b"This listener is closing.",
        "The listener is closing",
        (("Content-Type", "text/plain; charset=utf-8"), ("Retry-After", str(RETRY_AFTER))),
    )
    """For a request that arrives while the listener closes (it drains the work under way); a
    sender then is refused with its status and reason."""
    NOT_SERVED: ClassVar[DefaultAnswer] = DefaultAnswer(
        501, b"This listener does not accept HTTP requests."
    )
    """For a request to a listener without a request handler."""
    HANDLER_FAILED: ClassVar[DefaultAnswer] = DefaultAnswer(500, b"")
    """For a request whose handler raised."""
    ACCEPT_HANDLER_FAILED: ClassVar[tuple[int, str]] = (
        502,
        "The listener failed to handle the connection",
    )
    """The rejection of a sender whose accept handler raised."""
    CONNECTION_HANDLER_FAILED: ClassVar[tuple[int, str]] = (1011, "The listener failed")
    """The close of a connection whose handler raised."""
    RESPONSE_FAILED: ClassVar[tuple[int, str]] = (1011, "The response failed")
    """The close of a rendezvous whose response body raised: the sender sees a cut, never a
    truncated body that passes for whole."""
    UNCLAIMED: ClassVar[tuple[int, str]] = (1001, "The listener closed")
    """The close of an accepted connection the program never took, once the listener closes."""

    def __init__(
        self,
        *,
        namespace: str,
        path: str,
        secure: bool,
        tracking_id: str,
        serves_http: bool,
        keepalive: KeepAlive | None = None,
        backoff: Backoff | None = None,
        observer: ListenerObserver | None = None,
    ) -> None:
        self.tracking_id = tracking_id
        self.observer = observer if observer is not None else ListenerObserver()
        """Told of each sender's outcome and each reconnection (see :mod:`hyco_core.observer`)."""
        self._serves_http = serves_http
        self._lifecycle = ListenerLifecycle(backoff if backoff is not None else Backoff(jitter=0.1))
        keepalive = keepalive if keepalive is not None else KeepAlive()
        self.control_config = ChannelConfig(keepalive=keepalive)
        """Timeouts and keep-alive of the control channel."""
        self.rendezvous_config = replace(RENDEZVOUS_CONFIG, keepalive=keepalive)
        """Timeouts and keep-alive of accepted WebSockets and HTTP rendezvous."""
        self.control_url = create_relay_listen_uri(
            namespace, path, tracking_id=tracking_id, secure=secure
        )
        """The control channel's address (no token: that goes in a header)."""
        self._closing = False
        self._unanswered = 0

    def __repr__(self) -> str:
        return f"<ListenerSupervisor {self.status.value}>"

    # -- the listener's life -----------------------------------------------------------------

    @property
    def status(self) -> ListenerStatus:
        return self._lifecycle.status

    @property
    def last_error(self) -> HycoError | None:
        """What took the listener offline or closed it last."""
        return self._lifecycle.last_error

    @property
    def closing(self) -> bool:
        """Whether the program has closed the listener."""
        return self._closing

    def status_changes(self) -> list[ListenerStatusChanged]:
        """The status changes since the last call, for the program's status handler."""
        return self._lifecycle.events()

    def connecting(self) -> None:
        """A connection attempt starts (fetch a token, then open :meth:`control_channel`)."""
        self._lifecycle.connecting()

    def control_channel(
        self, token: str | None, token_expires_at: float | None, *, now: float, nonce: bytes
    ) -> ControlChannel:
        """The control channel to open now, with the token just fetched (its expiry on the
        clock ``now`` is read from)."""
        return ControlChannel(
            url=self.control_url,
            now=now,
            nonce=nonce,
            token=token,
            token_expires_at=token_expires_at,
            config=self.control_config,
        )

    def token_failure(self, error: Exception) -> AuthorizationError:
        """What a token provider's exception other than a hyco error means (raise it from
        ``error``): an authorization failure naming the exception's type, not its text, which
        may hold a secret."""
        return AuthorizationError(f"the token provider failed ({type(error).__name__})")

    def online(self) -> bool:
        """The control channel is open. ``False`` when the listener was closed meanwhile: then
        close the channel at once, and the listener's life is over."""
        if self._closing:
            return False
        self._lifecycle.online()
        return True

    def lost(self, error: HycoError | None, *, random_fraction: float) -> float | None:
        """The control channel failed to open, or ended (``error`` ``None``: the relay closed it
        without saying why). Returns the seconds to wait before connecting again, or ``None``
        when the listener's life is over (:attr:`last_error` says why, unless it was closed)."""
        if self._closing:
            return None
        cause = error or ConnectionLostError("the relay closed the control channel")
        delay = self._lifecycle.lost(cause, random_fraction=random_fraction)
        if delay is not None:
            self.observer.reconnecting(cause)
        return delay

    def close(self) -> bool:
        """The program closes the listener; ``True`` the first time. Close the control channel
        once :attr:`control_may_close`."""
        if self._closing:
            return False
        self._closing = True
        self._lifecycle.close()
        return True

    @property
    def control_may_close(self) -> bool:
        """Whether the listener is closing and every request that came on the control channel
        has been answered."""
        return self._closing and not self._unanswered

    # -- the work the relay announces --------------------------------------------------------

    def dispatch(self, event: Event, *, now: float) -> Work | None:
        """What to do with an event of the control channel, arrived at ``now``; ``None`` for the
        events that are not work (the channel's own, and ignored content)."""
        if isinstance(event, AcceptRequested):
            closing = self.CLOSING
            refusal = (closing.status, closing.reason or "") if self._closing else None
            return OfferSender(event.accept, refusal, now)
        if isinstance(event, RequestReceived):
            self._unanswered += 1
            return AnswerRequest(event.request, event.body or b"", self.default_answer())
        if isinstance(event, RendezvousRequested):
            return ServeRendezvous(event.request)
        if isinstance(event, TokenRenewalDue):
            return RefreshToken()
        return None

    def default_answer(self) -> DefaultAnswer | None:
        """The answer for a request arriving now, if the application is not to be asked."""
        if self._closing:
            return self.CLOSING
        if not self._serves_http:
            return self.NOT_SERVED
        return None

    def answered(self) -> bool:
        """A request of :class:`AnswerRequest` is answered (or given up). ``True`` when the
        control channel is to close now: the listener is closing and that was the last."""
        self._unanswered -= 1
        return self.control_may_close

    def rendezvous_channel(
        self, context: AcceptContext, *, now: float, nonce: bytes
    ) -> RelayedWebSocket | RejectChannel:
        """The rendezvous that carries the decision on a sender: its accepted WebSocket, or the
        delivery of its rejection. Raises :class:`~hyco_core.errors.InvalidUrlError` when the
        relay's address is no WebSocket address: the sender cannot be answered then."""
        accept = context.accept_message
        if context.rejection is not None:
            status, description = context.rejection
            return reject_connection(
                accept, status_code=status, description=description, now=now, nonce=nonce
            )
        return accept_connection(
            accept,
            subprotocol=context.subprotocol,
            now=now,
            nonce=nonce,
            config=self.rendezvous_config,
        )

    def rendezvous_opened(self, work: OfferSender, context: AcceptContext, *, now: float) -> None:
        """The rendezvous of :meth:`rendezvous_channel` for ``context`` opened at ``now``: the
        sender's WebSocket is open, or its rejection delivered."""
        if context.rejection is not None:
            self.observer.sender_rejected(context.rejection[0])
        else:
            self.observer.sender_accepted(now - work.offered_at)

    def rendezvous_failed(self, error: HycoError) -> None:
        """The offered sender cannot be answered: the relay's address was unusable, or its
        rendezvous did not open."""
        self.observer.sender_failed(error)

    @staticmethod
    def answers_inline(body: bytes | None) -> bool:
        """Whether a response body (``None``: streamed) goes inline on the control channel;
        otherwise over a rendezvous, which the relay then keeps for the sender's next requests."""
        return fits_inline(None if body is None else len(body))

    @staticmethod
    def request_deadline(now: float) -> float:
        """When a request arriving at ``now`` must be answered."""
        return now + ListenerSupervisor.REQUEST_TIMEOUT

"""The client side of one relay WebSocket: the base every channel of the protocol builds on.

A channel is fed bytes (``receive_data``, ``receive_eof``) and time (``handle_timer``); it answers
with bytes (``data_to_send``) and facts (``events``). Its life is one table of transitions:

    CONNECTING --handshake accepted--> OPEN --close sent--> CLOSING --close received--> CLOSED
        |                               |  \\--close received / connection lost---------> CLOSED
        \\--refused / lost / timeout------------------------------------------------------> CLOSED

Subclasses give meaning to messages: :class:`RelayedWebSocket` (a sender's connection, or an
accepted one) passes them through, :class:`~hyco_core.control.ControlChannel` decodes control
messages, :class:`~hyco_core.http.HttpRendezvous` carries HTTP exchanges, and
:class:`RejectChannel` only delivers a rejection.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from ._wire import (
    ClientHandshake,
    FrameClose,
    FrameMessage,
    FramePing,
    FramePong,
    Frames,
    HandshakeAccepted,
    HandshakeRefused,
)
from .errors import (
    ConnectionClosed,
    ConnectionLostError,
    HycoError,
    LocalProtocolError,
    RelayError,
    RelayTimeoutError,
    RemoteProtocolError,
    error_from_status,
)
from .events import (
    ChannelClosed,
    Event,
    MessageReceived,
    Opened,
    PingReceived,
    PongReceived,
    RejectDelivered,
)
from .events import HandshakeRefused as HandshakeRefusedEvent
from .handling import offered_subprotocols
from .messages import Accept
from .timing import KeepAlive
from .uris import create_reject_uri, create_relay_send_uri, redact_url

__all__ = [
    "RENDEZVOUS_CONFIG",
    "SENDER_CONFIG",
    "ChannelConfig",
    "ChannelState",
    "MessageAssembly",
    "RejectChannel",
    "RelayedWebSocket",
    "TextCollector",
    "WebSocketChannel",
    "accept_connection",
    "connection_closed",
    "handshake_outcome",
    "reject_connection",
    "sender_channel",
]

ABNORMAL_CLOSURE = 1006


class ChannelState(Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class _Trigger(Enum):
    HANDSHAKE_ACCEPTED = "handshake accepted"
    HANDSHAKE_FAILED = "handshake failed"
    CLOSE_SENT = "close sent"
    CLOSE_RECEIVED = "close received"
    CONNECTION_LOST = "connection lost"


_TRANSITIONS: dict[tuple[ChannelState, _Trigger], ChannelState] = {
    (ChannelState.CONNECTING, _Trigger.HANDSHAKE_ACCEPTED): ChannelState.OPEN,
    (ChannelState.CONNECTING, _Trigger.HANDSHAKE_FAILED): ChannelState.CLOSED,
    (ChannelState.CONNECTING, _Trigger.CONNECTION_LOST): ChannelState.CLOSED,
    (ChannelState.OPEN, _Trigger.CLOSE_SENT): ChannelState.CLOSING,
    (ChannelState.OPEN, _Trigger.CLOSE_RECEIVED): ChannelState.CLOSED,
    (ChannelState.OPEN, _Trigger.CONNECTION_LOST): ChannelState.CLOSED,
    (ChannelState.CLOSING, _Trigger.CLOSE_RECEIVED): ChannelState.CLOSED,
    (ChannelState.CLOSING, _Trigger.CONNECTION_LOST): ChannelState.CLOSED,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class ChannelConfig:
    """Timeouts and liveness of one channel. ``keepalive=None`` turns pings off."""

    handshake_timeout: float = 70.0
    close_timeout: float = 10.0
    keepalive: KeepAlive | None = field(default_factory=KeepAlive)

    def __post_init__(self) -> None:
        if self.handshake_timeout <= 0 or self.close_timeout <= 0:
            raise LocalProtocolError("handshake_timeout and close_timeout must be positive")


SENDER_CONFIG = ChannelConfig()


class TextCollector:
    """Joins the pieces of a text message, refusing messages longer than ``limit`` characters."""

    __slots__ = ("_parts", "_size", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[str] = []
        self._size = 0

    def add(self, data: str, final: bool) -> str | None:
        """Add a piece; return the whole message once ``final``."""
        self._size += len(data)
        if self._size > self.limit:
            raise RemoteProtocolError(f"a message exceeds {self.limit} characters", close_code=1009)
        self._parts.append(data)
        if not final:
            return None
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        return text


class MessageAssembly:
    """Joins the pieces of an application's messages (text or binary), refusing one longer
    than ``limit``.

    The piece that makes a message too long raises; the rest of that message is then dropped
    as it arrives, so that no tail of it is ever taken for a message of its own (the close that
    follows the refusal may take a while to stop the pieces).
    """

    __slots__ = ("_dropping", "_parts", "_size", "limit")

    TOO_BIG = (1009, "message too big")
    """The close a transport answers a refused message with."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[str | bytes] = []
        self._size = 0
        self._dropping = False

    def add(self, data: str | bytes, final: bool) -> str | bytes | None:
        """Add a piece; return the whole message once ``final`` (``None`` before, and for the
        pieces of a refused message). Raises :class:`RemoteProtocolError` (close code 1009)
        when the message grows beyond ``limit``."""
        if self._dropping:
            self._dropping = not final
            return None
        self._size += len(data)
        if self._size > self.limit:
            self._parts.clear()
            self._size = 0
            self._dropping = not final
            raise RemoteProtocolError(f"a message exceeds {self.limit} bytes", close_code=1009)
        self._parts.append(data)
        if not final:
            return None
        parts, self._parts, self._size = self._parts, [], 0
        if isinstance(parts[0], str):
            return "".join(part for part in parts if isinstance(part, str))
        return b"".join(part for part in parts if isinstance(part, bytes))


RENDEZVOUS_CONFIG = ChannelConfig(handshake_timeout=20.0)


class WebSocketChannel:
    """Handshake, framing, keep-alive and closing of one client WebSocket to the relay."""

    __slots__ = (
        "_config",
        "_deadline",
        "_events",
        "_frames",
        "_handshake",
        "_last_received",
        "_outgoing",
        "_ping_sent_at",
        "_state",
    )

    def __init__(
        self,
        *,
        url: str,
        now: float,
        nonce: bytes,
        subprotocols: Sequence[str] = (),
        headers: Sequence[tuple[str, str]] = (),
        config: ChannelConfig = SENDER_CONFIG,
    ) -> None:
        self._handshake: ClientHandshake | None = ClientHandshake(
            url=url, nonce=nonce, subprotocols=subprotocols, headers=headers
        )
        self._start(now, config, deadline=now + config.handshake_timeout)
        self._outgoing += self._handshake.request

    def _start(self, now: float, config: ChannelConfig, *, deadline: float | None) -> None:
        self._config = config
        self._frames: Frames | None = None
        self._state = ChannelState.CONNECTING
        self._outgoing = bytearray()
        self._events: list[Event] = []
        self._deadline = deadline
        self._last_received = now
        self._ping_sent_at: float | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state.value}>"

    @property
    def state(self) -> ChannelState:
        return self._state

    def data_to_send(self) -> bytes:
        """Bytes to write to the socket now (possibly empty)."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def events(self) -> list[Event]:
        """The events produced since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    # -- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the socket."""
        if self._state is ChannelState.CLOSED or not data:
            return
        self._last_received = now
        self._ping_sent_at = None
        try:
            if self._frames is None:
                self._advance_handshake(data)
            else:
                self._frames.receive_data(data)
                self._process_frames()
        except RemoteProtocolError as error:
            self._fail(error)

    def receive_eof(self) -> None:
        """The peer closed its side of the TCP connection."""
        if self._state is ChannelState.CLOSED:
            return
        if self._frames is None:
            try:
                self._advance_handshake(b"")
            except RemoteProtocolError as error:
                self._lose(ConnectionLostError(str(error)))
                return
        self._lose(ConnectionLostError("the connection dropped without a close handshake"))

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or ``None`` for never."""
        if self._state is ChannelState.OPEN:
            return min(
                (t for t in (self._keepalive_deadline(), self._timer()) if t is not None),
                default=None,
            )
        return self._deadline if self._state is not ChannelState.CLOSED else None

    def handle_timer(self, now: float) -> None:
        """Act on every deadline that has passed at ``now``."""
        if self._state is ChannelState.CONNECTING and self._deadline is not None:
            if now >= self._deadline:
                timeout = self._config.handshake_timeout
                self._lose(
                    RelayTimeoutError(f"the relay did not answer the handshake in {timeout:g} s")
                )
        elif self._state is ChannelState.CLOSING and self._deadline is not None:
            if now >= self._deadline:
                self._lose(None)
        elif self._state is ChannelState.OPEN:
            self._handle_keepalive(now)
            if self._state is ChannelState.OPEN:
                self._on_timer(now)

    # -- actions -----------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "", *, now: float) -> None:
        """Start an orderly close; before the handshake completes, abandon the connection."""
        if self._state is ChannelState.CONNECTING:
            self._lose(None, reason="closed before the handshake completed")
        elif self._state is ChannelState.OPEN:
            assert self._frames is not None
            self._outgoing += self._frames.close(code, reason)
            self._transition(_Trigger.CLOSE_SENT)
            self._deadline = now + self._config.close_timeout

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping now; the answering pong counts as a sign of life."""
        self._outgoing += self._open_frames().ping(payload)

    def pong(self, payload: bytes = b"") -> None:
        """Send a pong: the answer to a ping passed through from the other side of a relay."""
        self._outgoing += self._open_frames().pong(payload)

    # -- for subclasses ----------------------------------------------------------------------

    def _send_message(self, data: str | bytes, *, final: bool) -> None:
        self._outgoing += self._open_frames().send_message(data, final=final)

    def _open_frames(self) -> Frames:
        if self._state is not ChannelState.OPEN or self._frames is None:
            raise LocalProtocolError(f"cannot send on a channel that is {self._state.value}")
        return self._frames

    def _on_open(self, accepted: HandshakeAccepted) -> None:
        self._events.append(Opened(subprotocol=accepted.subprotocol, headers=accepted.headers))

    def _on_refused(self, refused: HandshakeRefused) -> None:
        error = refusal_error(refused)
        self._events.append(
            HandshakeRefusedEvent(
                status_code=refused.status_code,
                reason=refused.reason,
                headers=refused.headers,
                body=refused.body,
                error=error,
            )
        )

    def _on_message(self, data: str | bytes, final: bool) -> None:
        """What a message means depends on the channel; the base class has no use for one."""

    def _close_error(self, code: int, reason: str) -> HycoError | None:
        return None

    def _timer(self) -> float | None:
        return None

    def _on_timer(self, now: float) -> None:
        """Subclass deadlines; called from :meth:`handle_timer` while open."""

    def _fail(self, error: RemoteProtocolError) -> None:
        """The peer broke the protocol: close with the error's code and report it."""
        if self._frames is not None and self._state is ChannelState.OPEN:
            self._outgoing += self._frames.close(error.close_code, str(error)[:120])
        self._finish(error.close_code, str(error), error)

    # -- internals ---------------------------------------------------------------------------

    def _transition(self, trigger: _Trigger) -> None:
        self._state = _TRANSITIONS[(self._state, trigger)]

    def _advance_handshake(self, data: bytes) -> None:
        assert self._handshake is not None
        outcome = self._handshake.receive_data(data)
        if isinstance(outcome, HandshakeAccepted | HandshakeRefused):
            self._handshake = None  # its HTTP state is no use any more
        if isinstance(outcome, HandshakeAccepted):
            self._frames = Frames(client=True)
            self._transition(_Trigger.HANDSHAKE_ACCEPTED)
            self._deadline = None
            self._on_open(outcome)
            if outcome.trailing and self._state is ChannelState.OPEN:
                self._frames.receive_data(outcome.trailing)
                self._process_frames()
        elif isinstance(outcome, HandshakeRefused):
            self._transition(_Trigger.HANDSHAKE_FAILED)
            self._deadline = None
            self._on_refused(outcome)

    def _process_frames(self) -> None:
        assert self._frames is not None
        for event in self._frames.events():
            if isinstance(event, FrameMessage):
                self._on_message(event.data, event.final)
            elif isinstance(event, FramePing):
                self._events.append(PingReceived(payload=event.payload))
            elif isinstance(event, FramePong):
                if self._frames.passes_pings:
                    self._events.append(PongReceived(payload=event.payload))
            elif isinstance(event, FrameClose):
                self._on_close_frame(event)
            else:
                self._fail(RemoteProtocolError(event.reason, close_code=event.code))
            if self._state is ChannelState.CLOSED:
                break
        if self._state is not ChannelState.CLOSED:
            self._outgoing += self._frames.take_outgoing()

    def _on_close_frame(self, event: FrameClose) -> None:
        assert self._frames is not None
        if self._state is ChannelState.OPEN:
            self._outgoing += self._frames.close(event.code, event.reason)
        self._transition(_Trigger.CLOSE_RECEIVED)
        self._deadline = None
        self._events.append(
            ChannelClosed(
                code=event.code,
                reason=event.reason,
                error=self._close_error(event.code, event.reason),
            )
        )

    def _keepalive_deadline(self) -> float | None:
        keepalive = self._config.keepalive
        if keepalive is None:
            return None
        if self._ping_sent_at is not None:
            return self._ping_sent_at + keepalive.pong_timeout
        return self._last_received + keepalive.ping_interval

    def _handle_keepalive(self, now: float) -> None:
        keepalive = self._config.keepalive
        deadline = self._keepalive_deadline()
        if keepalive is None or deadline is None or now < deadline:
            return
        if self._ping_sent_at is None:
            self.ping()
            self._ping_sent_at = now
        else:
            self._lose(
                RelayTimeoutError(
                    f"no sign of life from the relay within {keepalive.pong_timeout:g} s of a "
                    "ping; the connection is dead"
                )
            )

    def _lose(self, error: HycoError | None, *, reason: str = "") -> None:
        self._finish(ABNORMAL_CLOSURE, reason or (str(error) if error else ""), error)

    def _finish(self, code: int, reason: str, error: HycoError | None) -> None:
        if self._state is not ChannelState.CLOSED:
            self._transition(_Trigger.CONNECTION_LOST)
            self._deadline = None
            self._events.append(ChannelClosed(code=code, reason=reason, error=error))


def refusal_error(refused: HandshakeRefused) -> RelayError:
    """The typed error for a refused handshake; the body's message stands in for a bare status.

    A token the relay (or a proxy) echoes in its reason is hidden: errors end up in logs.
    """
    reason = refused.reason
    if not reason.strip():
        reason = _error_body_message(refused.body) or reason
    return error_from_status(refused.status_code, redact_url(reason))


def _error_body_message(body: bytes) -> str | None:
    try:
        document = json.loads(body)
        message = document["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None
    return message if isinstance(message, str) else None


class RelayedWebSocket(WebSocketChannel):
    """An end-to-end WebSocket through the relay: a sender's connection, or an accepted one.

    Messages, their types and fragmentation, and close codes pass through unchanged; a close by
    the peer is not an error, whatever its code.
    """

    __slots__ = ()

    def send_message(self, data: str | bytes, *, final: bool = True) -> None:
        """Send a text (``str``) or binary message, or a piece of one with ``final=False``."""
        self._send_message(data, final=final)

    def _on_message(self, data: str | bytes, final: bool) -> None:
        self._events.append(MessageReceived(data=data, final=final))


def sender_channel(
    namespace: str,
    path: str,
    *,
    token: str | None,
    now: float,
    nonce: bytes,
    token_in_query: bool = False,
    tracking_id: str | None = None,
    suffix: str = "",
    query: str = "",
    headers: Sequence[tuple[str, str]] = (),
    subprotocols: Sequence[str] = (),
    secure: bool = True,
    config: ChannelConfig = SENDER_CONFIG,
) -> tuple[str, RelayedWebSocket]:
    """A sender's WebSocket to the hybrid connection ``path``, and the address to open it at.

    The token goes in the ``ServiceBusAuthorization`` header, or with ``token_in_query`` in
    the address (for clients that cannot set headers); ``headers`` and ``subprotocols`` reach
    the listener.
    """
    url = create_relay_send_uri(
        namespace,
        path,
        token if token_in_query else None,
        tracking_id,
        suffix=suffix,
        query=query,
        secure=secure,
    )
    extra = list(headers)
    if token and not token_in_query:
        extra.insert(0, ("ServiceBusAuthorization", token))
    channel = RelayedWebSocket(
        url=url, now=now, nonce=nonce, subprotocols=list(subprotocols), headers=extra, config=config
    )
    return url, channel


def handshake_outcome(events: Sequence[Event]) -> tuple[Opened | None, list[Event]] | None:
    """What a channel's events say about its opening handshake: ``None`` while it is under way
    (read on); the ``Opened`` event and the events that followed it; ``(None, [])`` once a
    rejection was delivered. Raises the typed error of a refused or failed handshake."""
    for index, event in enumerate(events):
        if isinstance(event, Opened):
            return event, list(events[index + 1 :])
        if isinstance(event, HandshakeRefusedEvent):
            raise event.error
        if isinstance(event, RejectDelivered):
            return None, []
        if isinstance(event, ChannelClosed):
            raise event.error or ConnectionLostError("closed during the handshake")
    return None


def connection_closed(
    closed: ChannelClosed | None, *, closed_here: tuple[int, str] | None = None
) -> ConnectionClosed:
    """What a relayed WebSocket's user is told once it is closed: the peer's close code and
    reason, with the failure as the cause when the close means one; 1006 when the connection
    dropped without a close; or, closed here with the peer's answer still on its way, the code
    and reason this side sent."""
    if closed is None and closed_here is not None:
        return ConnectionClosed(*closed_here)
    if closed is None:
        return ConnectionClosed(ABNORMAL_CLOSURE)
    error = ConnectionClosed(closed.code, closed.reason)
    error.__cause__ = closed.error
    return error


def accept_connection(
    accept: Accept,
    *,
    now: float,
    nonce: bytes,
    subprotocol: str | None = None,
    config: ChannelConfig = RENDEZVOUS_CONFIG,
) -> RelayedWebSocket:
    """Accept a sender: open the rendezvous WebSocket at ``accept.address``.

    ``subprotocol`` must be one the sender offered; the relay completes the sender's handshake
    with it.
    """
    offered = offered_subprotocols(accept)
    if subprotocol is not None and subprotocol not in offered:
        raise LocalProtocolError(
            f"subprotocol {subprotocol!r} was not offered by the sender (offered: {offered})"
        )
    return RelayedWebSocket(
        url=accept.address,
        now=now,
        nonce=nonce,
        subprotocols=[subprotocol] if subprotocol else [],
        config=config,
    )


class RejectChannel(WebSocketChannel):
    """Delivers a rejection: the relay answers 410 Gone once it has told the sender."""

    __slots__ = ()

    def _on_refused(self, refused: HandshakeRefused) -> None:
        if refused.status_code == 410:
            self._events.append(RejectDelivered())
        else:
            super()._on_refused(refused)

    def _on_open(self, accepted: HandshakeAccepted) -> None:
        self._fail(
            RemoteProtocolError("the relay opened a WebSocket instead of confirming the rejection")
        )


def reject_connection(
    accept: Accept,
    *,
    status_code: int = 400,
    description: str = "Rejected by user code",
    now: float,
    nonce: bytes,
    config: ChannelConfig = RENDEZVOUS_CONFIG,
) -> RejectChannel:
    """Reject a sender with an HTTP status and description, which the relay passes on to it."""
    return RejectChannel(
        url=create_reject_uri(accept.address, status_code, description),
        now=now,
        nonce=nonce,
        config=config,
    )

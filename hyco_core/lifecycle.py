"""A listener's life across reconnects: when to try again, and when to give up.

One :class:`ListenerLifecycle` outlives the control channels it supervises:

    IDLE --connect--> CONNECTING --online--> ONLINE --lost--> OFFLINE --connect--> CONNECTING
                          \\--lost--> OFFLINE (after having been online) or CLOSED (first open)
    any --close--> CLOSED

The first open fails fast: its error goes to the program. Once a listener has been online, every
loss is retried on the backoff schedule, forever, except when the hybrid connection is gone
(HTTP 404 other than "no listener") or the program closes the listener.
"""

from __future__ import annotations

from enum import Enum

from .errors import EndpointNotFoundError, HycoError, ListenerUnavailableError, LocalProtocolError
from .events import ListenerStatus, ListenerStatusChanged
from .timing import Backoff

__all__ = ["ListenerLifecycle"]


class _Change(Enum):
    CONNECT = "connect"
    ONLINE = "online"
    LOST = "lost"
    CLOSE = "close"


_S = ListenerStatus
_TRANSITIONS: dict[tuple[ListenerStatus, _Change], ListenerStatus] = {
    (_S.IDLE, _Change.CONNECT): _S.CONNECTING,
    (_S.OFFLINE, _Change.CONNECT): _S.CONNECTING,
    (_S.CONNECTING, _Change.ONLINE): _S.ONLINE,
    (_S.CONNECTING, _Change.LOST): _S.OFFLINE,
    (_S.ONLINE, _Change.LOST): _S.OFFLINE,
    **{(status, _Change.CLOSE): _S.CLOSED for status in _S if status is not _S.CLOSED},
}


class ListenerLifecycle:
    """Reconnect policy and status reporting for one listener."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self._backoff = backoff if backoff is not None else Backoff()
        self._status = ListenerStatus.IDLE
        self._been_online = False
        self._events: list[ListenerStatusChanged] = []
        self.last_error: HycoError | None = None

    def __repr__(self) -> str:
        return f"<ListenerLifecycle {self._status.value}>"

    @property
    def status(self) -> ListenerStatus:
        return self._status

    def events(self) -> list[ListenerStatusChanged]:
        events, self._events = self._events, []
        return events

    def connecting(self) -> None:
        """A connection attempt starts."""
        self._change(_Change.CONNECT)

    def online(self) -> None:
        """The control channel is open: the listener receives work; the backoff starts over."""
        self._change(_Change.ONLINE)
        self._been_online = True
        self._backoff.reset()

    def lost(self, error: HycoError | None, *, random_fraction: float = 0.5) -> float | None:
        """The control channel ended or failed to open.

        Returns the delay in seconds before the next attempt, or ``None`` when the listener must
        stop; ``error`` is then what to report to the program.
        """
        if self._status is ListenerStatus.CLOSED:
            return None
        gone = isinstance(error, EndpointNotFoundError) and not isinstance(
            error, ListenerUnavailableError
        )
        if not self._been_online or gone:
            self._change(_Change.CLOSE, error=error)
            return None
        self._next_status(_Change.LOST)
        delay = self._backoff.next_delay(random_fraction)
        self._change(_Change.LOST, error=error, retry_in=delay)
        return delay

    def close(self) -> None:
        """The program closes the listener."""
        if self._status is not ListenerStatus.CLOSED:
            self._change(_Change.CLOSE)

    def _change(
        self, change: _Change, *, error: HycoError | None = None, retry_in: float | None = None
    ) -> None:
        self._status = self._next_status(change)
        if error is not None:
            self.last_error = error
        self._events.append(
            ListenerStatusChanged(status=self._status, error=error, retry_in=retry_in)
        )

    def _next_status(self, change: _Change) -> ListenerStatus:
        status = _TRANSITIONS.get((self._status, change))
        if status is None:
            raise LocalProtocolError(
                f"a listener that is {self._status.value} cannot {change.value}"
            )
        return status

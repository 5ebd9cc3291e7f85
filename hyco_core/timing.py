"""Time policy, kept pure: reconnect backoff, token renewal moments, keep-alive settings.

The kernel never reads a clock or a random source. Callers pass ``now`` (seconds, any monotonic
or wall clock as long as it is used consistently) and, for jitter, a number in ``[0, 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import LocalProtocolError

__all__ = [
    "DEFAULT_RECONNECT_SCHEDULE",
    "Backoff",
    "KeepAlive",
    "renewal_time",
]

DEFAULT_RECONNECT_SCHEDULE = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class KeepAlive:
    """How a channel proves its connection is alive.

    After ``ping_interval`` seconds without receiving anything, a ping is sent; if still nothing
    has arrived ``pong_timeout`` seconds later, the connection is declared dead. Anything received
    counts as a sign of life, so busy connections send no pings at all.
    """

    ping_interval: float = 30.0
    pong_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.ping_interval <= 0 or self.pong_timeout <= 0:
            raise LocalProtocolError("ping_interval and pong_timeout must be positive")


class Backoff:
    """The delays between reconnect attempts: the schedule in order, then its last value forever.

    ``jitter`` spreads each delay by up to that fraction either way, so that many listeners cut
    off at once do not all come back in the same instant.
    """

    __slots__ = ("_attempt", "jitter", "schedule")

    def __init__(
        self, schedule: Sequence[float] = DEFAULT_RECONNECT_SCHEDULE, *, jitter: float = 0.0
    ) -> None:
        if not schedule or any(delay < 0 for delay in schedule):
            raise LocalProtocolError("a backoff schedule needs at least one delay, none negative")
        if not 0.0 <= jitter <= 1.0:
            raise LocalProtocolError("jitter is a fraction from 0 to 1")
        self.schedule = tuple(float(delay) for delay in schedule)
        self.jitter = jitter
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many delays were handed out since the last reset."""
        return self._attempt

    def next_delay(self, random_fraction: float = 0.5) -> float:
        """The delay before the next attempt; ``random_fraction`` in ``[0, 1)`` drives jitter."""
        if not 0.0 <= random_fraction <= 1.0:
            raise LocalProtocolError("random_fraction must lie in [0, 1]")
        delay = self.schedule[min(self._attempt, len(self.schedule) - 1)]
        self._attempt += 1
        return delay * (1.0 + self.jitter * (2.0 * random_fraction - 1.0))

    def reset(self) -> None:
        """Start the schedule over, as after a connection that came online."""
        self._attempt = 0


def renewal_time(now: float, expires_at: float, *, margin: float = 300.0) -> float:
    """When to renew a token that expires at ``expires_at``, seen at ``now``.

    Renewal happens ``margin`` seconds ahead of expiry, or halfway through the remaining
    lifetime when the token is too short for that margin, so that a token of a few seconds is
    renewed in time too. An expired token is due at once.
    """
    remaining = max(expires_at - now, 0.0)
    return now + max(remaining - margin, remaining / 2)

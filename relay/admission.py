"""Admission: which connections the relay takes on. A cap on the connections each client
address holds, a rate of new connections per address, and shedding the idlest connections
when descriptors run out."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import anyio
import anyio.abc

from hyco_core import RemoteEndpoint
from hyco_core.service import HttpServer
from hyco_transports.pump import STREAM_ERRORS

from .config import RelayConfig
from .refusals import Refusal, refusal_answer

_SHED_AT_ONCE = 16  # at least this many idle connections are shed when descriptors run out
_MAX_CLIENT_BUCKETS = 10_000  # client addresses whose connection rate is tracked


class Bucket:
    """A token bucket: ``rate`` per second, at most ``burst`` at once."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def level(self) -> float:
        """How many connections its client could open right now."""
        return min(self.burst, self.tokens + (time.monotonic() - self.stamp) * self.rate)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class ConnectionRates:
    """How fast each client address opens connections, in a table kept bounded."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: dict[str, Bucket] = {}

    def admit(self, remote: RemoteEndpoint | None, config: RelayConfig) -> None:
        """Count a connection from ``remote``; refuse it (429) over ``connection_rate``."""
        rate = config.connection_rate
        if not rate or remote is None:
            return
        if len(self._buckets) > _MAX_CLIENT_BUCKETS:
            self._forget_idle_clients()
        bucket = self._buckets.get(remote.address)
        if bucket is None:
            bucket = self._buckets[remote.address] = Bucket(rate, config.connection_burst)
        if not bucket.take():
            raise Refusal(429, "Too many connections from this address; slow down and retry")

    def _forget_idle_clients(self) -> None:
        """Keep the table of client addresses bounded without forgiving anyone being limited:
        the addresses whose buckets are fullest are forgotten, down to half the bound."""
        buckets = self._buckets
        fullest_first = sorted(buckets, key=lambda address: buckets[address].level(), reverse=True)
        for address in fullest_first[: len(buckets) - _MAX_CLIENT_BUCKETS // 2]:
            del buckets[address]


class Admission:
    """Who holds the relay's connections: how many each client address has open, and which
    are still waiting for their request head (oldest first), to be shed first when the relay
    runs out of descriptors: they have shown nothing, and hold one each."""

    __slots__ = ("_held", "_waiting")

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._waiting: dict[anyio.CancelScope, None] = {}

    def enter(self, address: str | None, limit: int) -> bool:
        """Count a new connection from ``address``; ``False`` if that is over ``limit``."""
        if address is None:
            return True
        held = self._held.get(address, 0)
        if limit and held >= limit:
            return False
        self._held[address] = held + 1
        return True

    def leave(self, address: str | None) -> None:
        if address is None:
            return
        held = self._held.pop(address, 1) - 1
        if held:
            self._held[address] = held

    @contextmanager
    def awaiting_head(self) -> Iterator[anyio.CancelScope]:
        """A scope around reading a request head, which :meth:`shed` may cancel."""
        with anyio.CancelScope() as scope:
            self._waiting[scope] = None
            try:
                yield scope
            finally:
                self._waiting.pop(scope, None)

    def shed(self) -> int:
        """End the oldest connections still waiting for their head; return how many."""
        count = max(_SHED_AT_ONCE, len(self._waiting) // 8)
        oldest = list(itertools.islice(self._waiting, count))
        for scope in oldest:
            del self._waiting[scope]
            scope.cancel()
        return len(oldest)


def half_the_descriptors() -> int:
    """Half the descriptors this process may open (0, no limit, where that is unknown)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return 0
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 0 if soft == resource.RLIM_INFINITY else max(1, soft // 2)


TOO_MANY_CONNECTIONS = 429
"""The status :func:`turn_away` answers with."""


async def turn_away(stream: anyio.abc.SocketStream, secure: bool) -> None:
    """Answer a client over its address's connection cap with 429 before its request is read
    (holding the connection open to read one is what the cap prevents; on TLS, the handshake
    too), then close."""
    refusal = Refusal(
        TOO_MANY_CONNECTIONS,
        "Too many connections from this address: close some, or ask the relay's operator to "
        "raise max_connections_per_address",
    )
    with anyio.move_on_after(1.0), suppress(*STREAM_ERRORS):
        if not secure:
            await stream.send(refusal_answer(HttpServer(), refusal, "", websocket=False))
    await anyio.aclose_forcefully(stream)

"""The anyio byte pump: one stream, one kernel channel, serialised writes, the channel's timers.

Both the anyio transport and the local relay run every WebSocket through :class:`ChannelSocket`.
A relay holds two of them per relayed connection, so an idle one keeps little: the events it
needs to wait on are made only when somebody waits.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext

import anyio
import anyio.abc
import anyio.lowlevel

from hyco_core import ChannelState, Event, WebSocketChannel

__all__ = ["READ_SIZE", "STREAM_ERRORS", "ChannelSocket", "Clock", "LazyEvent", "MessageQueue"]

logger = logging.getLogger("hyco.transports")

_NO_SCOPE: AbstractContextManager[None] = nullcontext()  # a reader whose clock keeps its time

READ_SIZE = 256 * 1024
STREAM_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class LazyEvent:
    """A one-shot event that costs next to nothing until somebody waits on it.

    Most of a connection's events are set long before, or without, anybody waiting, and an
    idle connection must be cheap. On asyncio each waiter waits on a plain future (an asyncio
    event would carry a deque of its own); elsewhere the waiters share an :class:`anyio.Event`.
    """

    __slots__ = ("_is_set", "_waiting")

    def __init__(self) -> None:
        self._is_set = False
        self._waiting: list[asyncio.Future[None]] | anyio.Event | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        self._is_set = True
        waiting, self._waiting = self._waiting, None
        if isinstance(waiting, list):
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        elif waiting is not None:
            waiting.set()

    def wake(self) -> LazyEvent:
        """For an event that is set again and again: wake whoever waits and return the event to
        wait on next (this one, if nobody was waiting)."""
        if self._waiting is None:
            return self
        self.set()
        return LazyEvent()

    async def wait(self) -> None:
        if self._is_set:
            return
        if not _running_asyncio():
            if not isinstance(self._waiting, anyio.Event):
                self._waiting = anyio.Event()
            await self._waiting.wait()
            return
        future = asyncio.get_running_loop().create_future()
        if not isinstance(self._waiting, list):
            self._waiting = []
        self._waiting.append(future)
        try:
            await future
        finally:
            if isinstance(self._waiting, list):
                self._waiting.remove(future)


def _running_asyncio() -> bool:
    try:
        import sniffio
    except ImportError:  # trio needs sniffio: without it, anyio can only be running asyncio
        return True
    return sniffio.current_async_library() == "asyncio"


class MessageQueue:
    """Whole messages from a reader task to whoever calls :meth:`get`.

    At most ``capacity`` messages wait: :meth:`put` then waits, so a slow consumer slows the peer
    down. :meth:`end` lets the consumer take what is queued, then see the end; :meth:`discard`
    drops what is queued and frees a waiting producer.
    """

    __slots__ = ("_arrived", "_capacity", "_discarded", "_ended", "_messages", "_taken")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._messages: list[str | bytes] = []
        self._ended = False
        self._discarded = False
        self._arrived = LazyEvent()
        self._taken = LazyEvent()

    async def put(self, message: str | bytes) -> None:
        while len(self._messages) >= self._capacity and not self._discarded:
            await self._taken.wait()
        if not self._discarded:
            self._messages.append(message)
            self._arrived = self._arrived.wake()

    async def get(self) -> str | bytes | None:
        """The next message, or ``None`` once the queue has ended (or was discarded)."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        while not self._messages:
            if self._ended or self._discarded:
                return None
            await self._arrived.wait()
        message = self._messages.pop(0)
        self._taken = self._taken.wake()
        return message

    def end(self) -> None:
        self._ended = True
        self._arrived = self._arrived.wake()

    def discard(self) -> None:
        self._discarded = True
        self._messages.clear()
        self._arrived = self._arrived.wake()
        self._taken = self._taken.wake()


class Clock:
    """Keeps the time of many sockets in one task, so that their readers wait on their streams
    alone.

    A reader keeping its own time waits inside a cancel scope that wakes it at its channel's
    next deadline; with thousands of idle connections, that scope is among the largest things
    each one holds. A socket given a clock leaves its deadlines to the clock's :meth:`run` task:
    due pings are sent from there, and a deadline that ends the channel (no sign of life, no
    answer to a close) closes the stream, which wakes the reader to report the end. That fits
    WebSockets, whose timers only ping or end them; not control channels, whose timers have
    the reader act (renew a token).
    """

    def __init__(self) -> None:
        # Weak references: a socket its owner is done with leaves no trace until its entry is due.
        self._due: list[tuple[float, int, weakref.ref[ChannelSocket]]] = []
        self._order = itertools.count()
        self._sleep: anyio.CancelScope | None = None
        self._sleeping_until: float | None = None

    def keep(self, socket: ChannelSocket) -> None:
        """Note the socket's next deadline (a later one is found when the earlier comes due)."""
        deadline = socket.channel.get_timer()
        if deadline is None or (socket._kept_until is not None and socket._kept_until <= deadline):
            return
        socket._kept_until = deadline
        heapq.heappush(self._due, (deadline, next(self._order), weakref.ref(socket)))
        if self._sleep is not None and (
            self._sleeping_until is None or deadline < self._sleeping_until
        ):
            self._sleep.cancel()

    async def run(self) -> None:
        """Serve deadlines until cancelled."""
        while True:
            until = self._due[0][0] if self._due else None
            delay = None if until is None else max(0.0, until - time.monotonic())
            with anyio.move_on_after(delay) as self._sleep:
                self._sleeping_until = until
                await anyio.sleep_forever()
            self._sleep = None
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                deadline, _, reference = heapq.heappop(self._due)
                socket = reference()
                if socket is not None and socket._kept_until == deadline:  # else superseded
                    socket._kept_until = None
                    try:
                        await socket._on_clock(now)
                    except Exception:
                        logger.exception("a connection's timer failed; the others carry on")


class ChannelSocket:
    """A stream and the kernel channel that speaks on it.

    With a :class:`Clock`, the clock keeps the channel's time; otherwise the reader does.
    With ``write_timeout``, a peer that leaves a write unread that long is taken for dead: the
    stream is closed (which ends the reader too) and :attr:`stalled` says why.
    :meth:`mark_released` tells :meth:`wait_released` that the task owning the socket is done
    with it.
    """

    __slots__ = (
        "__weakref__",
        "_kept_until",
        "_released",
        "_stalled",
        "_wait",
        "_wait_until",
        "_writer_done",
        "_writing",
        "channel",
        "clock",
        "stream",
        "write_timeout",
    )

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        channel: WebSocketChannel,
        clock: Clock | None = None,
        *,
        write_timeout: float | None = None,
    ) -> None:
        self.stream = stream
        self.channel = channel
        self.clock = clock
        self.write_timeout = write_timeout
        self._stalled = False
        self._kept_until: float | None = None
        self._writing = False
        self._writer_done = LazyEvent()
        self._released = LazyEvent()
        self._wait: anyio.CancelScope | None = None
        self._wait_until: float | None = None

    async def flush(self) -> None:
        """Write what the kernel has queued, waiting for the stream (backpressure).

        One writer at a time: it keeps writing until the kernel has nothing left, so bytes
        queued meanwhile by the reader (pongs, close answers) go out without it waiting.
        """
        while self._writing:
            await self._writer_done.wait()
        self._writing = True
        try:
            while data := self.channel.data_to_send():
                try:
                    if self.write_timeout is None:
                        await self.stream.send(data)
                    else:
                        with anyio.fail_after(self.write_timeout):
                            await self.stream.send(data)
                except TimeoutError:
                    self._stalled = True
                    self.channel.receive_eof()
                    await anyio.aclose_forcefully(self.stream)
                    return
                except STREAM_ERRORS:
                    self.channel.receive_eof()
                    return
        finally:
            self._writing = False
            self._writer_done = self._writer_done.wake()
            self._rearm()

    async def _flush_from_reader(self) -> None:
        # The reader must never wait for a writer: the writer may be waiting, through the peer,
        # for this very reader to drain the other direction.
        if not self._writing:
            await self.flush()

    async def run(self, on_event: Callable[[Event], Awaitable[None]]) -> None:
        """Read, feed the kernel and keep its time until the channel is closed."""
        channel = self.channel
        while True:
            for event in channel.events():
                await on_event(event)
            await self._flush_from_reader()
            if channel.state is ChannelState.CLOSED:
                # It may have closed meanwhile, by a write that failed (here, or in a task
                # writing to this socket): the event saying so must still be heard.
                while events := channel.events():
                    for event in events:
                        await on_event(event)
                return
            waiting: AbstractContextManager[anyio.CancelScope | None]
            if self.clock is not None:
                self.clock.keep(self)
                waiting = _NO_SCOPE
            else:
                deadline = channel.get_timer()
                self._wait_until = deadline
                waiting = anyio.move_on_after(
                    None if deadline is None else max(0.0, deadline - time.monotonic())
                )
            with waiting as self._wait:
                try:
                    data = await self.stream.receive(READ_SIZE)
                except STREAM_ERRORS:
                    channel.receive_eof()
                else:
                    channel.receive_data(data, time.monotonic())
            if self._wait is not None and self._wait.cancelled_caught:
                channel.handle_timer(time.monotonic())

    async def _on_clock(self, now: float) -> None:
        channel = self.channel
        deadline = channel.get_timer()
        if deadline is None:
            return
        if deadline > now:
            self._rearm()
            return
        channel.handle_timer(now)
        if channel.state is ChannelState.CLOSED:
            await anyio.aclose_forcefully(self.stream)  # the reader wakes and reports the end
        elif self._writing:
            self._rearm()  # the writer at work sends the ping too
        else:
            await self.flush()

    def _rearm(self) -> None:
        """Wake the reader when an action moved the kernel's next deadline earlier (a token
        renewal, a close): it is waiting for the old one."""
        if self.clock is not None:
            self.clock.keep(self)
            return
        deadline = self.channel.get_timer()
        if self._wait is None or deadline is None:
            return
        if self._wait_until is None or deadline < self._wait_until:
            self._wait.cancel()

    async def release(self, code: int = 1000, reason: str = "") -> None:
        """Close the channel if still open, and mark the socket as no longer owned."""
        if self.channel.state is ChannelState.OPEN:
            self.channel.close(code, reason, now=time.monotonic())
            await self.flush()
        self.mark_released()

    @property
    def stalled(self) -> bool:
        """Whether the peer left a write unread past ``write_timeout``, and so was cut off."""
        return self._stalled

    def mark_released(self) -> None:
        self._released.set()

    async def wait_released(self) -> None:
        """Return once :meth:`mark_released` has been called."""
        await self._released.wait()

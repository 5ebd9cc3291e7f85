"""The anyio byte pump: one stream, one kernel channel, serialised writes, the channel's timers.

Both the anyio transport and the local relay run every WebSocket through :class:`ChannelSocket`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from hyco_core import ChannelState, Event, WebSocketChannel

__all__ = ["READ_SIZE", "STREAM_ERRORS", "ChannelSocket"]

READ_SIZE = 256 * 1024
STREAM_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class ChannelSocket:
    """A stream and the kernel channel that speaks on it.

    ``released`` is set once the task that owns the socket is done with it.
    """

    def __init__(self, stream: anyio.abc.ByteStream, channel: WebSocketChannel) -> None:
        self.stream = stream
        self.channel = channel
        self.released = anyio.Event()
        self._lock = anyio.Lock()
        self._wait: anyio.CancelScope | None = None
        self._wait_until: float | None = None

    async def flush(self) -> None:
        """Write what the kernel has queued, waiting for the stream (backpressure).

        The writer holding the lock keeps writing until the kernel has nothing left, so bytes
        queued meanwhile by the reader (pongs, close answers) go out without it waiting.
        """
        async with self._lock:
            while data := self.channel.data_to_send():
                try:
                    await self.stream.send(data)
                except STREAM_ERRORS:
                    self.channel.receive_eof()
                    return
        self._rearm()

    async def _flush_from_reader(self) -> None:
        # The reader must never wait for a writer: the writer may be waiting, through the peer,
        # for this very reader to drain the other direction.
        if not self._lock.locked():
            await self.flush()

    async def run(self, on_event: Callable[[Event], Awaitable[None]]) -> None:
        """Read, feed the kernel and keep its time until the channel is closed."""
        channel = self.channel
        while True:
            for event in channel.events():
                await on_event(event)
            await self._flush_from_reader()
            if channel.state is ChannelState.CLOSED:
                return
            deadline = channel.get_timer()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            with anyio.move_on_after(timeout) as self._wait:
                self._wait_until = deadline
                try:
                    data = await self.stream.receive(READ_SIZE)
                except STREAM_ERRORS:
                    channel.receive_eof()
                else:
                    channel.receive_data(data, time.monotonic())
                continue
            channel.handle_timer(time.monotonic())

    def _rearm(self) -> None:
        """Wake the reader when an action moved the kernel's next deadline earlier (a token
        renewal, a close): it is waiting for the old one."""
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
        self.released.set()

"""Stopping a command that keeps an anyio listener online, in order: the drain.

Cancelled (a signal came), :func:`serve_until_cancelled` closes the listener (what the relay
still passes it is refused with 503 and ``Retry-After``, and it goes offline once its inline
answers are out, for the relay to send the rest elsewhere), lets the work under way (requests
being answered, connections being carried) finish for up to the drain timeout, then closes the
connections still open with 1001 (going away) and, :data:`GOODBYE_TIMEOUT` later, cuts what is
left: a sender then sees an error, never a truncated body passed off as whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import anyio.abc

from hyco_core import HycoError
from hyco_transports.anyio import Listener

__all__ = ["GOODBYE_TIMEOUT", "WorkUnderWay", "serve_until_cancelled"]

GOODBYE_TIMEOUT = 1.0
"""Seconds the connections still open at the drain's limit get to be told 1001 (going away),
before what is left is cut."""


class WorkUnderWay:
    """What a command is doing for senders, counted so that a stop can wait for it to end."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = anyio.Event()

    def __len__(self) -> int:
        return self._count

    @contextmanager
    def one(self) -> Iterator[None]:
        """For the duration of the block, one more piece of work is under way."""
        self._count += 1
        try:
            yield
        finally:
            self._count -= 1
            if not self._count:
                self._idle.set()

    async def finished(self) -> None:
        """Wait until no work is under way."""
        while self._count:
            self._idle = anyio.Event()
            await self._idle.wait()


async def serve_until_cancelled(
    listener: Listener,
    work: WorkUnderWay,
    *,
    drain_timeout: float,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``listener`` online (``task_status.started()`` once it is) until cancelled, then
    drain (see the module's notes) for up to ``drain_timeout`` seconds, and return. Raises the
    relay's reason when the listener ends for good (the hybrid connection was deleted)."""
    stop = anyio.Event()
    limit = anyio.CancelScope()
    started = False
    failure: Exception | None = None

    async def stop_when_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            stop.set()
            if not started:  # still opening: nothing to drain
                limit.cancel()

    async with anyio.create_task_group() as watcher:
        watcher.start_soon(stop_when_cancelled)
        # Shielded: a cancellation becomes the drain (through the watcher), not an abort.
        with anyio.CancelScope(shield=True), limit:
            try:
                async with listener:
                    started = True
                    task_status.started()
                    gone = await _until_stopped_or_gone(listener, stop)
                    limit.deadline = anyio.current_time() + drain_timeout + GOODBYE_TIMEOUT
                    await listener.close()
                    with anyio.move_on_after(drain_timeout):
                        await work.finished()
                if gone is not None:
                    raise gone
            except Exception as error:
                # Raised outside the task group, which would wrap it in an ExceptionGroup.
                failure = error
        watcher.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _until_stopped_or_gone(listener: Listener, stop: anyio.Event) -> HycoError | None:
    """Wait for ``stop``, or for the listener to end for good: then return why."""
    gone: list[HycoError] = []

    async def watch() -> None:
        try:
            await listener.wait_closed()
        except HycoError as error:
            gone.append(error)
        stop.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch)
        await stop.wait()
        tasks.cancel_scope.cancel()
    return gone[0] if gone else None

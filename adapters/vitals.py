"""What a long-running command knows of its own health, for whoever asks: ``/readyz``, the
listener-online gauge and the service manager's READY all read one :class:`Vitals`.

A command runs *parts*: each listener it keeps online, each local port it accepts on, the relay's
own listening socket. A part is up or down; the command is ready while it has at least one part
and every part is up. A listener's part follows its status (up only while ``online``), so that
readiness drops while it reconnects after the relay went away and comes back with it.

Once the command starts to stop (:meth:`Vitals.stopping`, on SIGTERM or Ctrl-C) it is not ready
any more, whatever its parts say, so that nothing new is sent its way while it drains.

*Beats* prove that the command's own event loop still runs: a beat (the service manager's
watchdog ping) is called from :meth:`Vitals.keep_beating`, a task of that loop, so a wedged loop
stops them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hyco_core import ListenerStatus, ListenerStatusChanged

__all__ = ["Beat", "ReadinessWatcher", "Vitals"]

logger = logging.getLogger("hyco.adapters.vitals")

StatusHandler = Callable[[ListenerStatusChanged], None]
ReadinessWatcher = Callable[[bool], None]
Beat = Callable[[], object]


class Vitals:
    """The parts of a command and whether each is up. Safe to use from any thread: listeners
    report from their event loop or threads, and health endpoints read from their own."""

    def __init__(self) -> None:
        # Reentrant, and held while watchers are told, so that they hear the changes in order
        # and may read the vitals back.
        self._lock = threading.RLock()
        self._parts: dict[str, bool] = {}
        self._statuses: dict[str, ListenerStatus] = {}
        self._watchers: list[ReadinessWatcher] = []
        self._stopping_watchers: list[Callable[[], object]] = []
        self._beats: list[tuple[Beat, float]] = []
        self._ready = False
        self._stopping = False

    def __repr__(self) -> str:
        state = "stopping" if self.is_stopping else "ready" if self.ready else "not ready"
        return f"<Vitals {state} {self.parts()}>"

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._ready

    @property
    def is_stopping(self) -> bool:
        """Whether the command has started to stop."""
        with self._lock:
            return self._stopping

    def stopping(self) -> None:
        """The command starts to stop (a signal came): tell the watchers of :meth:`on_stopping`
        (once, however often this is called), then those of readiness, which is lost for good."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            for watcher in self._stopping_watchers:
                try:
                    watcher()
                except Exception:
                    logger.exception("a stopping watcher failed")
        self._changed()

    def on_stopping(self, watcher: Callable[[], object]) -> None:
        """Call ``watcher()`` once, when the command starts to stop (from the thread that said
        so); a failing watcher is logged."""
        with self._lock:
            self._stopping_watchers.append(watcher)

    def on_beat(self, beat: Beat, every: float) -> None:
        """Call ``beat()`` every ``every`` seconds from the command's event loop, while
        :meth:`keep_beating` runs there."""
        if every <= 0:
            raise ValueError(f"a beat's interval is above 0 seconds, not {every}")
        with self._lock:
            self._beats.append((beat, every))

    async def keep_beating(self) -> None:
        """Run in the command's event loop beside its job: call each beat at its interval until
        cancelled. A failing beat is logged and keeps its schedule."""
        import anyio

        async def keep(beat: Beat, every: float) -> None:
            while True:
                self._beat(beat)
                await anyio.sleep(every)

        with self._lock:
            beats = list(self._beats)
        async with anyio.create_task_group() as tasks:
            for beat, every in beats:
                tasks.start_soon(keep, beat, every)

    @contextmanager
    def beating_in_thread(self) -> Iterator[None]:
        """For a command with no event loop of its own (WSGI on threads): the beats come from
        a thread of their own for the duration of the block, which proves only that the process
        lives."""
        with self._lock:
            beats = list(self._beats)
        done = threading.Event()

        def keep(beat: Beat, every: float) -> None:
            while not done.is_set():
                self._beat(beat)
                done.wait(every)

        threads = [
            threading.Thread(target=keep, args=pair, name="hyco-beat", daemon=True)
            for pair in beats
        ]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            done.set()

    @staticmethod
    def _beat(beat: Beat) -> None:
        try:
            beat()
        except Exception:
            logger.exception("a beat failed")

    def parts(self) -> dict[str, bool]:
        """Each part's name, and whether it is up."""
        with self._lock:
            return dict(self._parts)

    def listener_statuses(self) -> dict[str, ListenerStatus]:
        """The last status of each listener part."""
        with self._lock:
            return dict(self._statuses)

    def watch(self, watcher: ReadinessWatcher) -> None:
        """Call ``watcher(ready)`` whenever readiness changes (from the thread that changed
        it); a failing watcher is logged, never let through to the part that reported."""
        with self._lock:
            self._watchers.append(watcher)

    def set(self, name: str, up: bool) -> None:
        """Record that part ``name`` is up or down (adding it the first time)."""
        with self._lock:
            self._parts[name] = up
        self._changed()

    def remove(self, name: str) -> None:
        """Forget part ``name`` (it was stopped on purpose, not lost)."""
        with self._lock:
            self._parts.pop(name, None)
            self._statuses.pop(name, None)
        self._changed()

    def follow(self, name: str, then: StatusHandler | None = None) -> StatusHandler:
        """A listener's ``on_status`` handler that keeps part ``name`` up while the listener is
        online, and hands the change to ``then`` before the watchers hear what it did to
        readiness (so that a command's "online" line comes before READY=1). The part is down
        until it first is online."""
        with self._lock:
            self._parts.setdefault(name, False)
            self._statuses.setdefault(name, ListenerStatus.CONNECTING)

        def on_status(event: ListenerStatusChanged) -> None:
            with self._lock:
                self._statuses[name] = event.status
                if name in self._parts:
                    self._parts[name] = event.status is ListenerStatus.ONLINE
            if then is not None:
                then(event)
            self._changed()

        return on_status

    def _changed(self) -> None:
        with self._lock:
            ready = not self._stopping and bool(self._parts) and all(self._parts.values())
            if ready == self._ready:
                return
            self._ready = ready
            for watcher in self._watchers:
                try:
                    watcher(ready)
                except Exception:
                    logger.exception("a readiness watcher failed")

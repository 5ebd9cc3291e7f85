"""What a long-running command knows of its own health, for whoever asks: ``/readyz``, the
listener-online gauge and the service manager's READY all read one :class:`Vitals`.

A command runs *parts*: each listener it keeps online, each local port it accepts on, the relay's
own listening socket. A part is up or down; the command is ready while it has at least one part
and every part is up. A listener's part follows its status (up only while ``online``), so that
readiness drops while it reconnects after the relay went away and comes back with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from hyco_core import ListenerStatus, ListenerStatusChanged

__all__ = ["ReadinessWatcher", "Vitals"]

logger = logging.getLogger("hyco.adapters.vitals")

StatusHandler = Callable[[ListenerStatusChanged], None]
ReadinessWatcher = Callable[[bool], None]


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
        self._ready = False

    def __repr__(self) -> str:
        return f"<Vitals {'ready' if self.ready else 'not ready'} {self.parts()}>"

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._ready

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
        online, and then hands the change to ``then``. The part is down until it first is."""
        with self._lock:
            self._parts.setdefault(name, False)
            self._statuses.setdefault(name, ListenerStatus.CONNECTING)

        def on_status(event: ListenerStatusChanged) -> None:
            with self._lock:
                self._statuses[name] = event.status
                if name in self._parts:
                    self._parts[name] = event.status is ListenerStatus.ONLINE
            self._changed()
            if then is not None:
                then(event)

        return on_status

    def _changed(self) -> None:
        with self._lock:
            ready = bool(self._parts) and all(self._parts.values())
            if ready == self._ready:
                return
            self._ready = ready
            for watcher in self._watchers:
                try:
                    watcher(ready)
                except Exception:
                    logger.exception("a readiness watcher failed")

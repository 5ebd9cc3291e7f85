"""Telling systemd how a long-running command is doing, over its notification socket and with no
library: one datagram per message, ``NAME=value`` lines, to the ``AF_UNIX`` socket
``$NOTIFY_SOCKET`` names (a leading ``@`` names one in the abstract namespace).

What a command sends (:func:`tell_service_manager`, which every long-running command starts):

- ``READY=1``, with a ``STATUS=`` saying what is online, the first time the command is ready
  (every part of its vitals up), so that a ``Type=notify`` unit counts as started only then;
  ``STATUS=`` again whenever readiness is lost or regained (``reconnecting: hyco is offline``);
- ``STOPPING=1`` as soon as a signal starts the stop, before the drain rather than after it;
- ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC``, when that is set (and ``$WATCHDOG_PID``, if
  set, names this process).

The watchdog's pings come from the command's own event loop (a beat of its vitals), not from a
thread of their own: such a thread pings on while the loop that does the work is wedged, by an
app's blocking call or a deadlock, which is what the watchdog is there to notice. A wedged loop
stops the pings, and systemd restarts the service ``WatchdogSec=`` later. (``hyco serve
--wsgi`` has no loop of its own: its pings come from a thread, which proves only that the
process lives.)

Nothing here may break or slow the command: without ``$NOTIFY_SOCKET`` nothing is sent, the
socket never blocks (a full queue drops the message), and a send that fails is logged, once as
a warning and later at debug level, never raised.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType

from .vitals import Vitals

__all__ = [
    "Notifier",
    "describe",
    "notification",
    "socket_address",
    "tell_service_manager",
    "watchdog_interval",
]

logger = logging.getLogger("hyco.adapters.systemd")

_NAME = re.compile(r"[A-Z0-9_]+")


def notification(fields: Mapping[str, str]) -> bytes:
    """One message: a ``NAME=value`` line per field, in order. Names are upper-case letters,
    digits and ``_``; a value holds no newline (``ValueError`` otherwise)."""
    if not fields:
        raise ValueError("a notification has at least one field")
    lines = []
    for name, value in fields.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"a notification field's name is A-Z, 0-9 and _, not {name!r}")
        if "\n" in value:
            raise ValueError(f"the value of notification field {name} has a newline")
        lines.append(f"{name}={value}\n")
    return "".join(lines).encode()


def socket_address(name: str) -> bytes:
    """The ``AF_UNIX`` address ``$NOTIFY_SOCKET`` names: an absolute path, or ``@name`` for
    ``name`` in the abstract namespace (a leading NUL byte). ``ValueError`` for anything else."""
    if name.startswith("@") and len(name) > 1:
        return b"\0" + os.fsencode(name[1:])
    if name.startswith("/"):
        return os.fsencode(name)
    raise ValueError(f"not an absolute path or an @abstract name: {name!r}")


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between watchdog pings, half of ``$WATCHDOG_USEC``; ``None`` when there is no
    watchdog for process ``pid`` (unset, not a positive number, or ``$WATCHDOG_PID`` names
    another process)."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    watched = environ.get("WATCHDOG_PID")
    if watched is not None and watched.strip() != str(pid):
        return None
    return int(usec) / 2_000_000


class Notifier:
    """A client of the service manager's notification socket. :meth:`send` never raises and
    never blocks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._address: bytes | None = None
        self._socket: socket.socket | None = None
        self._warned = False
        try:
            self._address = socket_address(name)
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)
        except (ValueError, OSError, AttributeError) as error:  # AttributeError: no AF_UNIX
            self._failed(error)

    def __repr__(self) -> str:
        return f"<Notifier {self.name!r}>"

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, fields: Mapping[str, str]) -> bool:
        """Send one message; ``False`` when it could not be (logged, not raised)."""
        data = notification(fields)
        if self._socket is None or self._address is None:
            return False
        try:
            self._socket.sendto(data, self._address)
        except OSError as error:
            self._failed(error)
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _failed(self, error: Exception) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        logger.log(
            level,
            "cannot notify the service manager at NOTIFY_SOCKET=%s (%s); the command runs on",
            self.name,
            error,
        )


def describe(vitals: Vitals) -> str:
    """What ``STATUS=`` says of ``vitals``: what is online, or what is not and why."""
    parts = vitals.parts()
    if vitals.is_stopping:
        return "stopping: finishing the work under way"
    if vitals.ready:
        return "online: " + ", ".join(parts)
    statuses = vitals.listener_statuses()
    down = [name for name, up in parts.items() if not up]
    if down and all(name in statuses for name in down):
        return "reconnecting: " + ", ".join(f"{name} is {statuses[name].value}" for name in down)
    return "not ready: " + (", ".join(f"{name} is down" for name in down) or "starting")


@contextmanager
def tell_service_manager(
    vitals: Vitals, environ: Mapping[str, str] | None = None
) -> Iterator[Notifier | None]:
    """For the duration of the block, tell the service manager ``$NOTIFY_SOCKET`` names (in
    ``environ``, by default the process's) what ``vitals`` say: ready, status, stopping, and
    the watchdog's pings as one of their beats. Without ``$NOTIFY_SOCKET``, nothing."""
    environment = os.environ if environ is None else environ
    name = environment.get("NOTIFY_SOCKET")
    if not name:
        yield None
        return
    with Notifier(name) as notifier:
        told_ready = False

        def on_readiness(ready: bool) -> None:
            nonlocal told_ready
            if vitals.is_stopping:
                return  # STOPPING=1 said it
            fields = {"STATUS": describe(vitals)}
            if ready and not told_ready:
                told_ready = True
                fields = {"READY": "1", **fields}
            notifier.send(fields)

        vitals.watch(on_readiness)
        vitals.on_stopping(lambda: notifier.send({"STOPPING": "1", "STATUS": describe(vitals)}))
        every = watchdog_interval(environment, os.getpid())
        if every is not None:
            vitals.on_beat(lambda: notifier.send({"WATCHDOG": "1"}), every)
        yield notifier

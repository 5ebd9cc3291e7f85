"""What hosting an app on a hybrid connection needs whatever the app's interface (ASGI or WSGI):
finding the app an import string names, headers as the relay carries them, telling when the
listener is online or gone for good, stopping on signals, and worker processes.

Headers: the protocol's header object cannot carry framing headers (the relay frames the body)
or a name twice, so hop-by-hop response headers are dropped, and of several ``Set-Cookie``
headers only the last is sent (joining them would break every cookie whose ``Expires`` holds a
comma).

Signals: SIGINT (Ctrl-C) and SIGTERM both stop a server in order (the listener goes offline once
the answers under way are out); later signals are ignored while it stops. The entry points then
return the signal that stopped them, so that a command can exit 130 after Ctrl-C and 0 after a
service manager's SIGTERM.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any, TextIO

from hyco_core import (
    HOP_BY_HOP_HEADERS,
    Headers,
    HycoError,
    ListenerStatus,
    ListenerStatusChanged,
    LocalProtocolError,
)

__all__ = [
    "AppImportError",
    "ListenerFate",
    "OnlineAnnouncement",
    "StatusHandler",
    "Stopped",
    "header_bytes",
    "import_app",
    "relayed_response_headers",
    "run_worker_processes",
    "stop_on_signals",
]

logger = logging.getLogger("hyco.adapters.hosting")

StatusHandler = Callable[[ListenerStatusChanged], None]


class AppImportError(HycoError, ImportError):
    """The import string names no importable, callable app."""


def import_app(import_string: str, kind: str) -> object:
    """Import ``"package.module:attribute"`` (the attribute may be dotted); ``kind`` ("ASGI",
    "WSGI") only words the errors.

    A string that names nothing importable is the user's mistake and raises
    :class:`AppImportError` with what to fix; an import that fails *inside* the app's own code
    is the app's, and propagates unchanged with its traceback.
    """
    module_name, _, attribute = import_string.partition(":")
    if not module_name or not attribute:
        raise AppImportError(
            f"{import_string!r} is not of the form 'module:attribute' (for example main:app)"
        )
    try:
        target: object = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not _names_part_of(module_name, error.name):
            raise
        raise AppImportError(
            f"no module named {error.name!r} on the import path: check the name, and run from "
            "the app's directory (hyco serve also takes --app-dir)"
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppImportError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise AppImportError(f"{import_string!r} is not callable, so not an {kind} application")
    return target


def _names_part_of(module_name: str, missing: str) -> bool:
    """Whether the module not found is ``module_name`` or one of its parent packages."""
    return module_name == missing or module_name.startswith(f"{missing}.")


def header_bytes(text: str) -> bytes:
    """A header string as bytes: latin-1 as HTTP has it, UTF-8 for what latin-1 cannot hold."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")
_DIGITS = re.compile(r"[0-9]+")


def relayed_response_headers(
    headers: Iterable[tuple[str, str]], logger: logging.Logger
) -> tuple[list[tuple[str, str]], int | None]:
    """The headers as the relay can carry them, and the Content-Length the app declared."""
    pairs: list[tuple[str, str]] = []
    cookies: list[tuple[str, str]] = []
    length: int | None = None
    for name, value in headers:
        if _FORBIDDEN_IN_VALUE.search(value):
            raise LocalProtocolError(f"the value of response header {name!r} has CR, LF or NUL")
        lowered = name.lower()
        if lowered == "content-length":
            length = int(value) if _DIGITS.fullmatch(value.strip()) else None
        if lowered in HOP_BY_HOP_HEADERS:
            continue
        (cookies if lowered == "set-cookie" else pairs).append((name, value))
    if len(cookies) > 1:
        logger.warning(
            "a relayed response carries one Set-Cookie header: %d were set, the last one is sent",
            len(cookies),
        )
    pairs.extend(cookies[-1:])
    try:
        Headers(pairs)
    except ValueError as error:
        raise LocalProtocolError(f"invalid response header: {error}") from None
    return pairs, length


class ListenerFate:
    """A server's view of its listener's status: whether it closed for good, and why.

    ``on_gone`` is called (once) when the listener closes with an error, such as the hybrid
    connection being deleted; ``on_status``, the server user's own handler, sees every change.
    """

    def __init__(self, on_gone: Callable[[], None], on_status: StatusHandler | None) -> None:
        self.gone: HycoError | None = None
        self._on_gone = on_gone
        self._on_status = on_status

    def __call__(self, event: ListenerStatusChanged) -> None:
        if event.status is ListenerStatus.CLOSED and event.error is not None:
            self.gone = event.error
            self._on_gone()
        if self._on_status is not None:
            self._on_status(event)

    def raise_if_gone(self) -> None:
        if self.gone is not None:
            raise self.gone


class OnlineAnnouncement:
    """A status handler printing ``text`` to ``out`` (by default standard output) the first
    time the listener is online; later reconnections are the transport's to log. Without
    ``out`` it is picklable, for worker processes."""

    def __init__(self, text: str, out: TextIO | None = None) -> None:
        self.text = text
        self._out = out
        self._told = False

    def __call__(self, event: ListenerStatusChanged) -> None:
        if event.status is ListenerStatus.ONLINE and not self._told:
            self._told = True
            print(self.text, file=self._out or sys.stdout, flush=True)


class Stopped:
    """Which signal stopped a server (``None``: none did), recorded as it arrives; ``on_stop``
    hears the first one at once, before the stop (the service manager's STOPPING=1)."""

    def __init__(self, on_stop: Callable[[], None] | None = None) -> None:
        self.signal: signal.Signals | None = None
        self._on_stop = on_stop

    def record(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum)
            logger.info("%s: stopping", self.signal.name)
            if self._on_stop is not None:
                self._on_stop()


@contextmanager
def stop_on_signals(on_stop: Callable[[], None] | None = None) -> Iterator[Stopped]:
    """For blocking servers: while inside, SIGINT and SIGTERM interrupt the main thread
    (``KeyboardInterrupt``), for the block to stop in order, and are recorded (``on_stop`` is
    called at the first). Off the main thread, where no handler can be installed, signals are
    left alone."""
    stopped = Stopped(on_stop)
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        stopped.record(signum)
        # Later signals are ignored while the server completes the answers under way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number in previous:
        signal.signal(number, interrupt)
    try:
        yield stopped
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_worker_processes(
    target: Callable[..., None],
    arguments: Sequence[Any],
    count: int,
    *,
    shutdown_timeout: float,
    on_stop: Callable[[], None] | None = None,
) -> signal.Signals | None:
    """Run ``target(*arguments, number)`` in ``count`` spawned processes (numbered from 1) until
    a signal; each is one more listener on the same hybrid connection (the relay spreads
    senders across listeners; at most 25 per hybrid connection).

    SIGINT or SIGTERM stops them in order (SIGTERM to each, then SIGKILL after
    ``shutdown_timeout``); the signal is returned, and ``on_stop`` called as it arrives. If one
    exits on its own with an error, the others are stopped and :class:`HycoError` raised.
    """
    if count < 1:
        raise ValueError(f"workers must be at least 1, not {count}")
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=target, args=(*arguments, number), name=f"hyco-worker-{number}")
        for number in range(1, count + 1)
    ]
    failed: list[str] = []
    running: list[multiprocessing.process.BaseProcess] = []
    with stop_on_signals(on_stop) as stopped:
        try:
            for process in processes:
                process.start()
                running.append(process)
            while running and not failed:
                multiprocessing.connection.wait([process.sentinel for process in running])
                for ended in [worker for worker in running if not worker.is_alive()]:
                    running.remove(ended)
                    if ended.exitcode != 0:
                        failed.append(f"{ended.name} exited with code {ended.exitcode}")
        except KeyboardInterrupt:
            logger.info("stopping %d workers", count)
        finally:
            _stop_processes(running, shutdown_timeout + 5.0)
    if failed:
        raise HycoError(f"a worker failed ({failed[0]}); the others were stopped")
    return stopped.signal


def _stop_processes(
    processes: Sequence[multiprocessing.process.BaseProcess], timeout: float
) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()

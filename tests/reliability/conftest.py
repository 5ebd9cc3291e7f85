"""What the reliability tests share: the local relay (in a thread, or a process of its own that a
test may kill), listeners of either transport driven from blocking test code, and status logs.

The relay in a thread is served as ``hyco_conformance.harness`` serves it; the one in a process
is the ``hyco relay`` command, so that a test can kill it for real (SIGKILL: no close frame, the
system just drops its connections) and so that it runs on the other core.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from hyco_conformance.harness import relay_config
from hyco_core import KeepAlive, ListenerStatus, ListenerStatusChanged
from hyco_core.timing import Backoff
from hyco_relay.config import RelayConfig, connection_string_for, parse_config
from hyco_relay.server import Relay, serve_relay
from hyco_transports import anyio as anyio_transport
from hyco_transports import sync

from .fault_proxy import FaultProxy

Transport = Literal["anyio", "sync"]
TRANSPORTS: tuple[Transport, ...] = ("anyio", "sync")

REQUEST_TIMEOUT = 2.0
"""The relay answers 504 when a listener has not answered within this many seconds."""

CONFIG = relay_config(request_timeout=REQUEST_TIMEOUT, rendezvous_timeout=5.0)

# Short reconnect delays, so that a test sees several of them in a second or two.
SHORT_BACKOFF = (0.0, 0.05, 0.1, 0.2, 0.4)

# Dead connections noticed in about a second instead of a minute.
QUICK_KEEPALIVE = KeepAlive(ping_interval=0.4, pong_timeout=0.6)


# -- the relay ---------------------------------------------------------------------------------


class ThreadRelay:
    """The local relay on an event loop in a background thread."""

    def __init__(self, portal: BlockingPortal, config: RelayConfig) -> None:
        self.portal = portal
        self.config = config
        self._running: AbstractContextManager[Relay] | None = None
        self._relay: Relay | None = None
        self.port = 0

    def start(self, port: int | None = None) -> None:
        config = replace(self.config, port=self.port if port is None else port)
        running = self.portal.wrap_async_context_manager(serve_relay(config))
        self._relay = running.__enter__()
        self._running = running
        self.port = self._relay.port

    def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.__exit__(None, None, None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def listener_count(self, entity: str = "hc1") -> int:
        relay = self._relay
        assert relay is not None
        return self.portal.call(relay.listener_count, "localhost", entity)

    def reach_through(self, address: str) -> None:
        """Have the relay hand out rendezvous addresses at ``address`` (a proxy in front of
        it), as an operator does with ``public_url``; kept across restarts."""
        relay = self._relay
        assert relay is not None
        self.config = replace(self.config, public_url=f"ws://{address}")
        self.portal.call(relay.reconfigure, self.config)


# Imports the command's modules, says so, then waits for a line on stdin before running the
# command, so that a relay prepared ahead binds its port within milliseconds of being told to.
_WARM_START = (
    "import sys\n"
    "from hyco_adapters import cli, relay_command\n"
    "from hyco_relay import server\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
    "sys.exit(cli.main())\n"
)


class ProcessRelay:
    """``hyco relay`` in a process of its own, serving :data:`CONFIG`'s entities."""

    def __init__(self, directory: Path, config: str = CONFIG) -> None:
        self._config = directory / "relay.toml"
        self._config.write_text(config)
        self._log = directory / "relay.log"
        self.process: subprocess.Popen[str] | None = None
        self._spares: deque[tuple[subprocess.Popen[str], int]] = deque()
        self.port = 0

    def prepare(self, count: int = 1, *, wait: bool = True) -> None:
        """Have the next ``count`` relays' processes started, on the current port; with
        ``wait``, until the next one is ready to serve the moment :meth:`start` tells it to."""
        while len(self._spares) < count:
            self._spares.append((self._spawn(self.port), self.port))
        if wait:
            _read_line(self._spares[0][0], "ready")

    def start(self, port: int | None = None) -> None:
        """Start the relay (the prepared one, if it is for this port) and wait until it serves."""
        port = self.port if port is None else port
        spare = self._spares.popleft() if self._spares else None
        if spare is not None and spare[1] != port:
            _end(spare[0], signal.SIGKILL)
            spare = None
        process = spare[0] if spare is not None else self._spawn(port)
        self.process = process
        try:
            _read_line(process, "ready")
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
            words = _read_line(process, "listening").split()
        except RuntimeError:
            self.kill()
            raise RuntimeError(
                f"hyco relay did not start: {self._log.read_text()[-2000:]}"
            ) from None
        self.port = int(words[words.index("on") + 1].rsplit(":", 1)[1])

    def _spawn(self, port: int) -> subprocess.Popen[str]:
        command = [sys.executable, "-c", _WARM_START, "relay"]
        command += ["--config", str(self._config), "--port", str(port)]
        with self._log.open("a") as log:
            return subprocess.Popen(  # noqa: S603 - our own command, no shell
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )

    def kill(self) -> None:
        """SIGKILL: the kernel closes the relay's sockets, the relay says nothing."""
        process, self.process = self.process, None
        if process is not None:
            _end(process, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: the relay tells its listeners to reconnect (close 1001) and exits."""
        process, self.process = self.process, None
        if process is not None:
            _end(process, signal.SIGTERM)

    def close(self) -> None:
        """Kill the relay and the prepared one."""
        self.kill()
        while self._spares:
            _end(self._spares.popleft()[0], signal.SIGKILL)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def memory(self) -> tuple[int, int]:
        """The relay's resident memory now and at its peak, in bytes."""
        assert self.process is not None
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            fields[name] = value.split()
        return int(fields["VmRSS"][0]) * 1024, int(fields["VmHWM"][0]) * 1024


_lines_read: dict[int, list[str]] = {}


def _read_line(process: subprocess.Popen[str], word: str) -> str:
    """The first line of the process's output holding ``word`` (read once, remembered)."""
    seen = _lines_read.setdefault(process.pid, [])
    for line in seen:
        if word in line.split():
            return line
    assert process.stdout is not None
    stdout = process.stdout
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(30)
    if not lines or word not in lines[0].split():
        raise RuntimeError(f"expected {word!r} from the relay process, got {lines!r}")
    seen.append(lines[0])
    return lines[0]


def _end(process: subprocess.Popen[str], how: signal.Signals) -> None:
    _lines_read.pop(process.pid, None)
    process.send_signal(how)
    process.wait(30)
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def connection_string(address: str, entity: str = "hc1") -> str:
    """The root rule's connection string for a relay (or a proxy in front of it) at ``address``."""
    config = parse_config(CONFIG)
    namespace = config.namespaces[0]
    target = namespace.entity(entity)
    assert target is not None
    rule = next(rule for rule in namespace.rules if rule.name == "root")
    return connection_string_for(config, namespace, target, rule, address=address)


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal("asyncio") as running:
        yield running


@pytest.fixture
def relay(portal: BlockingPortal) -> Iterator[ThreadRelay]:
    running = ThreadRelay(portal, parse_config(CONFIG))
    running.start(0)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def proxy(relay: ThreadRelay) -> Iterator[FaultProxy]:
    """A fault proxy in front of the relay, where its rendezvous addresses point."""
    with FaultProxy(relay.port) as running:
        relay.reach_through(running.address)
        yield running


# -- listeners ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusEntry:
    at: float
    status: ListenerStatus
    retry_in: float | None
    error: str | None


class StatusLog:
    """Every status change a listener reported, with the monotonic time it was heard."""

    def __init__(self) -> None:
        self.entries: list[StatusEntry] = []
        self._changed = threading.Condition()

    def record(self, event: ListenerStatusChanged) -> None:
        error = type(event.error).__name__ if event.error is not None else None
        with self._changed:
            self.entries.append(StatusEntry(time.monotonic(), event.status, event.retry_in, error))
            self._changed.notify_all()

    def count(self, status: ListenerStatus) -> int:
        with self._changed:
            return sum(entry.status is status for entry in self.entries)

    def wait_for(self, status: ListenerStatus, count: int, timeout: float = 30.0) -> StatusEntry:
        """The ``count``-th entry with ``status``, once it came."""

        def found() -> list[StatusEntry]:
            return [entry for entry in self.entries if entry.status is status]

        with self._changed:
            if not self._changed.wait_for(lambda: len(found()) >= count, timeout):
                raise AssertionError(
                    f"the listener reported {status.value} {len(found())} time(s), not {count}, "
                    f"within {timeout:g} s: {self.statuses()}"
                )
            return found()[count - 1]

    def since(self, index: int) -> list[StatusEntry]:
        with self._changed:
            return self.entries[index:]

    def statuses(self, since: int = 0) -> list[str]:
        return [entry.status.value for entry in self.since(since)]


async def _anyio_echo(ws: anyio_transport.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


def _sync_echo(ws: sync.WebSocket) -> None:
    for message in ws:
        ws.send(message)


@contextmanager
def open_listener(
    transport: Transport,
    connection_string: str,
    *,
    log: StatusLog | None = None,
    backoff: Backoff | Literal["own"] | None = None,
    keepalive: KeepAlive | None = None,
    connection_handler: Callable[..., Any] | None = None,
    request_handler: Callable[..., Any] | None = None,
) -> Iterator[StatusLog]:
    """A listener of ``transport`` on ``connection_string``, open for the block.

    Without a ``connection_handler`` it echoes every message; handlers are the transport's
    own kind (coroutine functions for anyio, plain callables for sync). Without ``backoff`` it
    reconnects on :data:`SHORT_BACKOFF`; ``"own"`` leaves the listener its default schedule.
    The anyio listener runs on an event loop in a thread of its own, so that the test's code
    blocks as it likes.
    """
    log = log or StatusLog()
    options: dict[str, Any] = {
        "on_status": log.record,
        "backoff": (None if backoff == "own" else backoff or Backoff(SHORT_BACKOFF, jitter=0.1)),
        "keepalive": keepalive,
        "request_handler": request_handler,
    }
    if transport == "sync":
        options["connection_handler"] = connection_handler or _sync_echo
        with sync.Listener.from_connection_string(connection_string, **options):
            yield log
        return
    options["connection_handler"] = connection_handler or _anyio_echo
    with start_blocking_portal("asyncio") as portal:
        listener = portal.call(
            lambda: anyio_transport.Listener.from_connection_string(connection_string, **options)
        )
        with portal.wrap_async_context_manager(listener):
            yield log

"""``hyco agent``: many tunnels in one process, from one file (see :mod:`.agent_file`).

Each entry runs as its own task, the way its single-purpose command would run it, and is a part
of the process's :class:`~hyco_adapters.vitals.Vitals` under its name. An entry that fails (the
relay refuses its token, its port is taken, its app fails to start) is logged with its name and
started again after a backoff, while the others carry on: a service must not die because one
tunnel cannot open yet.

SIGHUP, or a change of the file, reloads it. A file that no longer reads keeps the entries as
they run (the error is logged once); otherwise entries that left the file are stopped, new ones
started, and those whose settings changed restarted; the others are left alone, with their
connections. SIGINT and SIGTERM stop every entry in order (each as its command does) and are
returned.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TextIO

import anyio
import anyio.abc
import anyio.to_thread

from hyco_core import HycoError, ListenerObserver, ListenerStatusChanged
from hyco_relay.config import ConfigError, ConfigWatcher

from ._cli_errors import alone, bind_failure
from .agent_file import AgentConfig, Entry, ExposeEntry, ForwardEntry, ServeEntry, load_agent_config
from .hosting import OnlineAnnouncement, import_app
from .long_running import Running
from .vitals import Vitals

__all__ = ["Agent", "describe_entry", "read_agent_file"]

logger = logging.getLogger("hyco.agent")

_POLL_INTERVAL = 1.0
_FIRST_RETRY = 1.0
_LAST_RETRY = 60.0
_STEADY = 60.0  # an entry that ran this long starts its backoff afresh when it fails


@dataclass(frozen=True)
class _Listening:
    """What an entry's listener is given: its status handler, its observer (``None`` without
    metrics) and its drain timeout."""

    on_status: Callable[[ListenerStatusChanged], None]
    observer: ListenerObserver | None
    drain_timeout: float


@dataclass
class _Running:
    entry: Entry
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    ended: anyio.Event = field(default_factory=anyio.Event)


class Agent:
    """Runs the entries of the agent file at ``path`` until a signal, reporting each to
    ``vitals`` and printing a line to ``out`` when one is online."""

    def __init__(
        self, path: str, command: Running, out: TextIO, *, drain_timeout: float = 10.0
    ) -> None:
        """Read the file once; raises :class:`ConfigError` when it is invalid. Each entry is a
        part of the ``command``'s vitals and counted in its metrics under the entry's name;
        stopping, each drains for up to ``drain_timeout`` seconds, as its command does."""
        self._watcher = ConfigWatcher(path, load=read_agent_file)
        self._command = command
        self._vitals = command.vitals
        self._drain_timeout = drain_timeout
        self._out = out
        self._running: dict[str, _Running] = {}
        self._tasks: anyio.abc.TaskGroup | None = None
        self._reported: ConfigError | None = None

    @property
    def config(self) -> AgentConfig:
        return self._watcher.config

    async def run(self) -> signal.Signals:
        """Run until SIGINT or SIGTERM, and return it; SIGHUP reloads the file. The vitals hear
        of the stop as the signal arrives, and beat in this event loop meanwhile."""
        wanted = [signal.SIGINT, signal.SIGTERM]
        if hasattr(signal, "SIGHUP"):
            wanted.append(signal.SIGHUP)
        with anyio.open_signal_receiver(*wanted) as signals:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                tasks.start_soon(self._vitals.keep_beating)
                count = len(self.config.entries)
                self._say(
                    f"agent: {count} {'entry' if count == 1 else 'entries'} from "
                    f"{self._watcher.path}; Ctrl-C to stop"
                )
                await self._apply(self.config)
                tasks.start_soon(self._watch_file)
                async for signum in signals:
                    if signum != signal.SIGINT and signum != signal.SIGTERM:
                        await self._reload(self._watcher.reload())
                        continue
                    self._vitals.stopping()
                    logger.info(
                        "%s: stopping %d entries", signal.Signals(signum).name, len(self._running)
                    )
                    await self._stop(list(self._running))
                    tasks.cancel_scope.cancel()
                    return signal.Signals(signum)
        raise AssertionError("the signal receiver ended")  # pragma: no cover - it never does

    async def _watch_file(self) -> None:
        while True:
            await anyio.sleep(_POLL_INTERVAL)
            await self._reload(self._watcher.poll())

    async def _reload(self, config: AgentConfig | None) -> None:
        if config is None:
            error = self._watcher.last_error
            # A new error object means a new change that failed: told once, not every poll.
            if error is not None and error is not self._reported:
                logger.error("%s; the entries run on as they were", error)
            self._reported = error
            return
        self._reported = None
        changes = await self._apply(config)
        self._say(f"reloaded {self._watcher.path}: {changes}")

    async def _apply(self, config: AgentConfig) -> str:
        """Make the running entries those of ``config``; say what changed."""
        gone = [
            name
            for name, running in self._running.items()
            if config.entries.get(name) != running.entry
        ]
        changed = [name for name in gone if name in config.entries]
        await self._stop(gone)
        started = []
        for name, entry in config.entries.items():
            if name not in self._running:
                self._start(entry)
                started.append(name)
        stopped = [name for name in gone if name not in changed]
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("restarted", changed),
                ("started", [n for n in started if n not in changed]),
                ("stopped", stopped),
            )
            if names
        ]
        return "; ".join(parts) or "nothing changed"

    def _start(self, entry: Entry) -> None:
        assert self._tasks is not None
        running = _Running(entry)
        self._running[entry.name] = running
        self._tasks.start_soon(self._keep_running, running)

    async def _stop(self, names: list[str]) -> None:
        stopping = [self._running.pop(name) for name in names]
        for running in stopping:
            running.scope.cancel()
        for running in stopping:
            await running.ended.wait()
            self._vitals.remove(running.entry.name)

    async def _keep_running(self, running: _Running) -> None:
        entry = running.entry
        delay = _FIRST_RETRY
        try:
            with running.scope:
                while True:
                    started = anyio.current_time()
                    try:
                        await _run_entry(entry, self._command, self._out, self._drain_timeout)
                        problem = "its listener closed"
                    except Exception as raised:
                        problem = _problem(entry, raised)
                    if running.scope.cancel_called:
                        return  # stopped on purpose: an orderly stop returns, not raises
                    self._vitals.set(entry.name, False)
                    if anyio.current_time() - started > _STEADY:
                        delay = _FIRST_RETRY
                    logger.error(
                        "entry %r (line %d): %s; starting it again in %.0f s",
                        entry.name,
                        entry.line,
                        problem,
                        delay,
                    )
                    await anyio.sleep(delay)
                    delay = min(delay * 2, _LAST_RETRY)
        finally:
            running.ended.set()

    def _say(self, text: str) -> None:
        print(text, file=self._out, flush=True)


def read_agent_file(path: str) -> AgentConfig:
    """The agent file at ``path``, with every app a serve entry names imported: an app that
    cannot be imported is an error of the file, located at its entry. Raises
    :class:`ConfigError`."""
    config = load_agent_config(path)
    for entry in config.entries.values():
        if isinstance(entry, ServeEntry):
            _import(entry, config.source)
    return config


def _import(entry: ServeEntry, source: str) -> object:
    from .hosting import AppImportError

    directory = str(entry.app_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        return import_app(entry.app, "WSGI" if entry.wsgi else "ASGI")
    except AppImportError as error:
        raise ConfigError(f"{source}:{entry.line}: entry {entry.name!r}: {error}") from None


def _problem(entry: Entry, raised: Exception) -> str:
    """Why an entry stopped, in a line; with the traceback, logged, when it is a bug."""
    error = alone(raised)
    if isinstance(error, HycoError):
        return str(error)
    if isinstance(error, OSError) and isinstance(entry, ForwardEntry):
        return bind_failure(entry.host, entry.port, error, "bind")  # binding its local port
    logger.error("entry %r failed", entry.name, exc_info=error)
    return "it failed (the traceback is above)"


async def _run_entry(entry: Entry, command: Running, out: TextIO, drain_timeout: float) -> None:
    """Run ``entry`` until cancelled, then drain for up to ``drain_timeout`` seconds (or until
    it fails, raising why)."""
    if isinstance(entry, ForwardEntry):
        await _forward(entry, command.vitals, out)
        return
    online = OnlineAnnouncement(f"online: {entry.name} ({describe_entry(entry)})", out=out)
    listening = _Listening(
        command.vitals.follow(entry.name, online), command.observe(entry.name), drain_timeout
    )
    if isinstance(entry, ExposeEntry):
        await _expose(entry, listening)
    elif entry.wsgi:
        await _serve_wsgi(entry, listening)
    else:
        from .asgi import serve

        app = _import(entry, "the agent file")
        await serve(
            app,  # type: ignore[arg-type]
            entry.connection_string,
            lifespan=entry.lifespan,
            root_path=entry.root_path,
            shutdown_timeout=listening.drain_timeout,
            on_status=listening.on_status,
            observer=listening.observer,
        )


def describe_entry(entry: Entry) -> str:
    """What an entry does, in a few words."""
    if isinstance(entry, ExposeEntry):
        if entry.http is not None:
            return f"{entry.endpoint.http_url} -> {entry.http}"
        return "exposing " + ", ".join(f"{t.name}={t.host}:{t.port}" for t in entry.targets)
    if isinstance(entry, ForwardEntry):
        return f"{entry.host}:{entry.port} -> {entry.target!r}"
    return f"{entry.app} serves {entry.endpoint.http_url}"


async def _expose(entry: ExposeEntry, listening: _Listening) -> None:
    if entry.http is not None:
        from .http_proxy import expose_http

        await expose_http(
            entry.connection_string,
            entry.http,
            strip_prefix=entry.strip_prefix,
            preserve_host=entry.preserve_host,
            on_status=listening.on_status,
            observer=listening.observer,
            drain_timeout=listening.drain_timeout,
        )
        return
    from .forward import expose

    await expose(
        entry.connection_string,
        list(entry.targets),
        on_status=listening.on_status,
        observer=listening.observer,
        drain_timeout=listening.drain_timeout,
    )


async def _forward(entry: ForwardEntry, vitals: Vitals, out: TextIO) -> None:
    from .forward import forward

    async with anyio.create_task_group() as tasks:
        bound = await tasks.start(
            partial(
                forward, entry.connection_string, entry.target, host=entry.host, port=entry.port
            )
        )
        vitals.set(entry.name, True)
        print(
            f"online: {entry.name} ({entry.host}:{bound} -> {entry.target!r})", file=out, flush=True
        )


async def _serve_wsgi(entry: ServeEntry, listening: _Listening) -> None:
    """A WSGI app on threads, as ``hyco serve --wsgi`` runs it; cancelling stops it in order
    (the answers under way are completed)."""
    from .wsgi import Server

    server = Server(
        _import(entry, "the agent file"),  # type: ignore[arg-type]
        entry.endpoint,
        workers=entry.workers,
        script_name=entry.root_path,
        shutdown_timeout=listening.drain_timeout,
        on_status=listening.on_status,
        observer=listening.observer,
    )

    async def stop_when_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            server.stop()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(stop_when_cancelled)
        # Shielded: a cancellation becomes an orderly stop (through the task above), and the
        # thread is always waited for.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(server.serve_forever)
            finally:
                tasks.cancel_scope.cancel()

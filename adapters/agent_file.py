"""The agent's file: which tunnels ``hyco agent`` runs, read from TOML and checked whole before
anything starts, every error naming its line.

The file reads::

    [[expose]]                       # hyco expose: TCP targets ...
    name = "ssh"                     # optional: the hybrid connection's name by default
    connection_string = "${SSH_CONNECTION_STRING}"
    targets = ["ssh=127.0.0.1:22"]

    [[expose]]                       # ... or an HTTP server (hyco expose --http)
    name = "web"
    connection_string = "${WEB_CONNECTION_STRING}"
    http = "http://127.0.0.1:8080"
    strip_prefix = true              # the defaults of hyco expose --http
    preserve_host = false

    [[forward]]                      # hyco forward
    connection_string = "${DB_CONNECTION_STRING}"
    target = "postgres"
    bind = "127.0.0.1:15432"         # name: the target's by default

    [[serve]]                        # hyco serve
    connection_string = "${API_CONNECTION_STRING}"
    app = "main:app"
    app_dir = "."                    # relative to this file's directory
    wsgi = false
    lifespan = "auto"                # ASGI only
    root_path = "/api"               # optional
    workers = 16                     # WSGI only: requests handled at once

The keys are the options of the single-purpose commands, with ``_`` for ``-``. In every string,
``${NAME}`` is the environment variable ``NAME`` (so that keys stay out of the file) and ``$$``
is a ``$``; a variable that is not set is an error. Each entry has a name, unique in the file: it
names the entry in logs, in readiness and in metrics, and a reload restarts exactly the entries
whose settings changed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hyco_core import HycoError
from hyco_relay.config import ConfigError
from hyco_relay.config.file import parse_toml, read_text
from hyco_transports.auth import RelayEndpoint

from .forward import Target, parse_bind, parse_target

__all__ = [
    "AgentConfig",
    "Entry",
    "ExposeEntry",
    "ForwardEntry",
    "ServeEntry",
    "load_agent_config",
    "parse_agent_config",
]

_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|(\$)|([^$]{0,8}))")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KINDS = ("expose", "forward", "serve")
_COMMON_KEYS = ("name", "connection_string")
_KEYS: Mapping[str, tuple[str, ...]] = {
    "expose": (*_COMMON_KEYS, "targets", "http", "strip_prefix", "preserve_host"),
    "forward": (*_COMMON_KEYS, "target", "bind"),
    "serve": (*_COMMON_KEYS, "app", "app_dir", "wsgi", "lifespan", "root_path", "workers"),
}
_LIFESPANS = ("auto", "on", "off")


@dataclass(frozen=True, slots=True)
class _Base:
    name: str
    connection_string: str = field(repr=False)
    line: int = field(compare=False)
    """Where the entry starts in the file (not part of its identity: moving it restarts
    nothing)."""

    @property
    def endpoint(self) -> RelayEndpoint:
        return RelayEndpoint.from_connection_string(self.connection_string)


@dataclass(frozen=True, slots=True)
class ExposeEntry(_Base):
    """``hyco expose``: TCP ``targets``, or the HTTP server at ``http``."""

    targets: tuple[Target, ...] = ()
    http: str | None = None
    strip_prefix: bool = True
    preserve_host: bool = False


@dataclass(frozen=True, slots=True)
class ForwardEntry(_Base):
    """``hyco forward``: local connections on ``host:port`` carried to ``target``."""

    target: str = ""
    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True, slots=True)
class ServeEntry(_Base):
    """``hyco serve``: the ASGI (or WSGI) ``app``, imported from ``app_dir`` first."""

    app: str = ""
    app_dir: Path = Path()
    wsgi: bool = False
    lifespan: Literal["auto", "on", "off"] = "auto"
    root_path: str | None = None
    workers: int = 16


Entry = ExposeEntry | ForwardEntry | ServeEntry


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The entries of an agent file, by name, in the file's order."""

    source: str
    entries: Mapping[str, Entry]


def load_agent_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read the agent file at ``path``, with ``${NAME}`` taken from this process's environment.

    Raises :class:`ConfigError` (its message names the file and line) when the file cannot be
    read or any entry is invalid.
    """
    source = os.fspath(path)
    return parse_agent_config(read_text(source), source=source)


def parse_agent_config(
    text: str,
    *,
    source: str = "<string>",
    environ: Mapping[str, str] | None = None,
    base: Path | None = None,
) -> AgentConfig:
    """Read an agent file's ``text``; ``source`` names it in errors, ``environ`` (by default
    ``os.environ``) fills ``${NAME}``, and relative ``app_dir`` values are taken from ``base``
    (by default the file's directory)."""
    document = parse_toml(text, source=source)
    where = _Lines(text, source)
    directory = base if base is not None else Path(source).resolve().parent
    reader = _Reader(where, os.environ if environ is None else environ, directory)
    for key, value in document.items():
        if key not in _KINDS:
            raise where.error(
                where.top(key),
                f"unknown table {key!r}: an agent file has [[expose]], [[forward]] and "
                "[[serve]] entries",
            )
        if not isinstance(value, list):
            raise where.error(
                where.top(key), f"{key} is an array of tables: write [[{key}]], not [{key}]"
            )
    entries: dict[str, Entry] = {}
    lines: dict[str, int] = {}
    for kind in _KINDS:
        for index, table in enumerate(document.get(kind, [])):
            entry = reader.entry(kind, index, table)
            if entry.name in entries:
                raise where.error(
                    entry.line,
                    f"the name {entry.name!r} is taken by the entry at line "
                    f'{lines[entry.name]}: give each entry its own name = "..."',
                )
            entries[entry.name] = entry
            lines[entry.name] = entry.line
    if not entries:
        raise where.error(None, "has no entries: add an [[expose]], [[forward]] or [[serve]]")
    ordered = dict(sorted(entries.items(), key=lambda item: item[1].line))
    _check_binds(ordered, where)
    return AgentConfig(source=source, entries=ordered)


def _check_binds(entries: Mapping[str, Entry], where: _Lines) -> None:
    bound: dict[tuple[str, int], str] = {}
    for entry in entries.values():
        if isinstance(entry, ForwardEntry) and entry.port != 0:
            address = (entry.host, entry.port)
            if address in bound:
                raise where.error(
                    entry.line,
                    f"{entry.host}:{entry.port} is also the bind of entry {bound[address]!r}: "
                    "give each forward entry its own port",
                )
            bound[address] = entry.name


class _Lines:
    """Where tables and keys are in the file: tomllib gives values, not positions, so each
    ``[[kind]]`` header is found by counting, and a key by its ``key =`` line inside it."""

    _HEADER = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_-]+)\s*\]\]")
    _TABLE = re.compile(r"^\s*\[")

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self._lines = text.splitlines()
        self._headers: dict[str, list[int]] = {}
        for number, line in enumerate(self._lines, start=1):
            match = self._HEADER.match(line)
            if match:
                self._headers.setdefault(match.group(1), []).append(number)

    def error(self, line: int | None, problem: str) -> ConfigError:
        at = self.source if line is None else f"{self.source}:{line}"
        return ConfigError(f"{at}: {problem}")

    def top(self, key: str) -> int | None:
        pattern = re.compile(rf"^\s*(\[\[?\s*{re.escape(key)}\s*\]|{re.escape(key)}\s*=)")
        return next((n for n, line in enumerate(self._lines, start=1) if pattern.match(line)), None)

    def entry(self, kind: str, index: int) -> int:
        headers = self._headers.get(kind, [])
        return headers[index] if index < len(headers) else 1

    def key(self, kind: str, index: int, key: str) -> int:
        start = self.entry(kind, index)
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for number in range(start + 1, len(self._lines) + 1):
            line = self._lines[number - 1]
            if self._TABLE.match(line):
                break
            if pattern.match(line):
                return number
        return start


class _Reader:
    def __init__(self, where: _Lines, environ: Mapping[str, str], base: Path) -> None:
        self.where = where
        self._environ = environ
        self._base = base

    def entry(self, kind: str, index: int, table: Any) -> Entry:
        line = self.where.entry(kind, index)
        if not isinstance(table, dict):
            raise self.where.error(line, f"[[{kind}]] entries are tables")
        unknown = [key for key in table if key not in _KEYS[kind]]
        if unknown:
            raise self.where.error(
                self.where.key(kind, index, unknown[0]),
                f"unknown key {unknown[0]!r} in [[{kind}]]: the keys there are "
                f"{', '.join(_KEYS[kind])}",
            )
        values = _Values(self, kind, index, table)
        connection_string = values.string("connection_string", required=True)
        assert connection_string is not None
        endpoint = values.check(
            "connection_string", lambda: RelayEndpoint.from_connection_string(connection_string)
        )
        common: dict[str, Any] = {"connection_string": connection_string, "line": line}
        if kind == "expose":
            return self._expose(values, endpoint, common)
        if kind == "forward":
            return self._forward(values, common)
        return self._serve(values, endpoint, common)

    def _expose(
        self, values: _Values, endpoint: RelayEndpoint, common: dict[str, Any]
    ) -> ExposeEntry:
        http = values.string("http")
        texts = values.strings("targets")
        if (http is None) == (texts is None):
            raise values.error(
                None, 'an [[expose]] entry has either targets = [...] (TCP) or http = "URL"'
            )
        targets = tuple(values.check("targets", lambda: [parse_target(t) for t in texts or ()]))
        if texts is not None and not targets:
            raise values.error("targets", "targets is empty: name at least one name=host:port")
        if http is not None:
            from .http_proxy import parse_upstream

            upstream = http
            http = values.check("http", lambda: parse_upstream(upstream).url)
        return ExposeEntry(
            name=values.name(endpoint.path),
            targets=targets,
            http=http,
            strip_prefix=values.boolean("strip_prefix", True),
            preserve_host=values.boolean("preserve_host", False),
            **common,
        )

    def _forward(self, values: _Values, common: dict[str, Any]) -> ForwardEntry:
        target = values.string("target", required=True)
        assert target is not None
        bind = values.string("bind", required=True)
        assert bind is not None
        host, port = values.check("bind", lambda: parse_bind(bind))
        return ForwardEntry(name=values.name(target), target=target, host=host, port=port, **common)

    def _serve(
        self, values: _Values, endpoint: RelayEndpoint, common: dict[str, Any]
    ) -> ServeEntry:
        app = values.string("app", required=True)
        assert app is not None
        if ":" not in app:
            raise values.error(
                "app", f"app is 'module:attribute' (for example main:app), not {app!r}"
            )
        lifespan = values.string("lifespan") or "auto"
        if lifespan not in _LIFESPANS:
            raise values.error("lifespan", f"lifespan is one of {', '.join(_LIFESPANS)}")
        workers = values.integer("workers", 16)
        if workers < 1:
            raise values.error("workers", "workers is at least 1")
        wsgi = values.boolean("wsgi", False)
        for key, meant_for in (("lifespan", False), ("workers", True)):
            if key in values and wsgi != meant_for:
                kind = "WSGI" if meant_for else "ASGI"
                raise values.error(key, f"{key} is for {kind} apps only: remove it here")
        return ServeEntry(
            name=values.name(endpoint.path),
            app=app,
            app_dir=self._base / (values.string("app_dir") or "."),
            wsgi=wsgi,
            lifespan=lifespan,  # type: ignore[arg-type]
            root_path=values.string("root_path"),
            workers=workers,
            **common,
        )

    def substitute(self, text: str, line: int) -> str:
        def value(match: re.Match[str]) -> str:
            name, dollar, broken = match.groups()
            if dollar:
                return "$"
            if broken is not None:
                raise self.where.error(
                    line,
                    f"{'$' + broken!r}... is not a variable: write ${{NAME}} (letters, digits "
                    "and _), or $$ for a $",
                )
            if name not in self._environ:
                raise self.where.error(
                    line,
                    f"${{{name}}} is not set in the environment: set it, or write the value "
                    "($$ for a $)",
                )
            return self._environ[name]

        return _VARIABLE.sub(value, text)


class _Values:
    """One entry's values, each checked for its type and located when wrong."""

    def __init__(self, reader: _Reader, kind: str, index: int, table: dict[str, Any]) -> None:
        self._reader = reader
        self._kind = kind
        self._index = index
        self._table = table

    def __contains__(self, key: str) -> bool:
        return key in self._table

    def line(self, key: str | None) -> int:
        where = self._reader.where
        if key is None:
            return where.entry(self._kind, self._index)
        return where.key(self._kind, self._index, key)

    def error(self, key: str | None, problem: str) -> ConfigError:
        return self._reader.where.error(self.line(key), problem)

    def check(self, key: str, build: Callable[[], Any]) -> Any:
        """``build()``, with its refusal located at ``key``."""
        try:
            return build()
        except (ValueError, HycoError) as error:
            raise self.error(key, f"{key}: {error}") from None

    def _typed(self, key: str, kind: type, described: str) -> Any:
        value = self._table.get(key)
        # TOML's booleans are Python's, and bool is a kind of int: true is no number here.
        if value is not None and (
            not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
        ):
            raise self.error(key, f"{key} is {described}")
        return value

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self._typed(key, str, "a string (in quotes)")
        if value is None:
            if required:
                raise self.error(None, f'[[{self._kind}]] needs {key} = "..."')
            return None
        return self._reader.substitute(value, self.line(key))

    def strings(self, key: str) -> list[str] | None:
        value = self._typed(key, list, "an array of strings")
        if value is None:
            return None
        if not all(isinstance(item, str) for item in value):
            raise self.error(key, f"{key} is an array of strings")
        return [self._reader.substitute(item, self.line(key)) for item in value]

    def boolean(self, key: str, default: bool) -> bool:
        value = self._typed(key, bool, "true or false")
        return default if value is None else bool(value)

    def integer(self, key: str, default: int) -> int:
        value = self._typed(key, int, "a whole number")
        return default if value is None else int(value)

    def name(self, default: str) -> str:
        name = self.string("name") or default
        if not _NAME.fullmatch(name):
            raise self.error(
                "name",
                f"{name!r} is no entry name: use up to 64 letters, digits, '.', '-' and '_'",
            )
        return name

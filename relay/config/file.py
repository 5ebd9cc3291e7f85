"""The configuration file: TOML read into the model, every error located in the file, and a
watcher that reloads it when it changes."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tests run on one interpreter at a time
    import tomli as tomllib

from .model import AccessRule, EntityConfig, NamespaceConfig, RelayConfig, Right
from .values import SETTINGS, ConfigError, check_setting, shown

__all__ = ["ConfigWatcher", "load_config", "parse_config", "parse_toml", "read_text"]

C = TypeVar("C")


def load_config(path: str | os.PathLike[str]) -> RelayConfig:
    """Read the relay's configuration from the TOML file at ``path`` (UTF-8, BOM allowed).

    Raises :class:`ConfigError` when the file cannot be read or is invalid.
    """
    source = os.fspath(path)
    return parse_config(read_text(source), source=source)


def read_text(source: str) -> str:
    """The text of the configuration file ``source`` (UTF-8, a byte order mark allowed).

    Raises :class:`ConfigError` when it cannot be read or is not UTF-8.
    """
    try:
        data = Path(source).read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"{source}: cannot be read ({reason}): check the path and its permissions"
        ) from None
    try:
        # Windows editors start UTF-8 files with a byte order mark.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: is not UTF-8 text: save it as UTF-8") from None
    return text


def parse_config(text: str, *, source: str = "<string>") -> RelayConfig:
    """Read the relay's configuration from TOML ``text``; ``source`` names it in errors.

    Raises :class:`ConfigError` for invalid TOML, unknown keys, values of the wrong type and
    everything the value objects refuse.
    """
    return _Reader(source).relay_config(parse_toml(text, source=source))


def parse_toml(text: str, *, source: str) -> dict[str, Any]:
    """The TOML document ``text``; ``source`` names it in errors.

    Raises :class:`ConfigError` when it is not valid TOML, with the line tomllib names.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(
            f"{source}: is not valid TOML ({error}): fix the syntax, see https://toml.io"
        ) from None
    except RecursionError:
        # tomllib reads nested arrays and inline tables recursively.
        raise ConfigError(
            f"{source}: nests arrays or inline tables too deeply to be read: flatten them"
        ) from None
    return document


_TOP_KEYS = ("relay", "namespace")
_WHOLE_SETTINGS = (
    "port",
    "max_listeners_per_entity",
    "connection_burst",
    "message_burst",
    "max_connections_per_address",
)
_NAMESPACE_KEYS = ("name", "default", "public_url", "rule", "entity")
_ENTITY_KEYS = ("name", "requires_client_authorization", "rule")
_RULE_KEYS = ("name", "primary_key", "secondary_key", "rights")
_NUMBER_TYPES = (int, float)


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def _seconds(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf


class _Reader:
    """Turns a TOML document into a :class:`RelayConfig`, locating every error in the file."""

    def __init__(self, source: str) -> None:
        self._source = source

    def _error(self, where: str | None, problem: str) -> ConfigError:
        prefix = f"{self._source}: " if where is None else f"{self._source}: {where}: "
        return ConfigError(prefix + problem)

    @contextmanager
    def _at(self, where: str | None) -> Iterator[None]:
        try:
            yield
        except ConfigError as error:
            raise self._error(where, str(error)) from None

    def _known(self, table: dict[str, Any], where: str, allowed: tuple[str, ...]) -> None:
        unknown = [key for key in table if key not in allowed]
        if unknown:
            raise self._error(
                where,
                f"unknown key{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(shown(key) for key in unknown)}: the keys here are "
                f"{', '.join(allowed)}",
            )

    def _value(
        self, table: dict[str, Any], key: str, where: str, kinds: tuple[type, ...], kind: str
    ) -> Any:
        value = table[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self._error(where, f"{key!r} must be {kind}, not {_type_of(value)}")
        return value

    def _required(self, table: dict[str, Any], key: str, where: str) -> str:
        if key not in table:
            raise self._error(where, f"{key!r} is missing: add it")
        value: str = self._value(table, key, where, (str,), "a string")
        return value

    def _tables(
        self, table: dict[str, Any], key: str, where: str, header: str
    ) -> list[dict[str, Any]]:
        tables = table.get(key, [])
        if not isinstance(tables, list) or not all(isinstance(item, dict) for item in tables):
            raise self._error(where, f"{key!r} must be tables written {header}")
        return tables

    def relay_config(self, document: dict[str, Any]) -> RelayConfig:
        self._known(document, "top level", _TOP_KEYS)
        relay = document.get("relay", {})
        if not isinstance(relay, dict):
            raise self._error("top level", "'relay' must be a table written [relay]")
        self._known(relay, "[relay]", tuple(SETTINGS))
        settings: dict[str, Any] = {}
        for key in relay:
            if key in ("host", "public_url"):
                settings[key] = self._value(relay, key, "[relay]", (str,), "a string")
            elif key == "stats_requires_manage":
                settings[key] = self._value(relay, key, "[relay]", (bool,), "true or false")
            elif key in _WHOLE_SETTINGS:
                settings[key] = self._value(relay, key, "[relay]", (int,), "an integer")
            else:
                number = self._value(relay, key, "[relay]", _NUMBER_TYPES, "a number")
                settings[key] = _seconds(number)
            with self._at("[relay]"):
                check_setting(key, settings[key])
        namespaces = tuple(
            self._namespace(table, f"namespace #{index}{self._named(table)}")
            for index, table in enumerate(
                self._tables(document, "namespace", "top level", "[[namespace]]"), start=1
            )
        )
        with self._at(None):
            return RelayConfig(namespaces=namespaces, **settings)

    @staticmethod
    def _named(table: dict[str, Any]) -> str:
        name = table.get("name")
        return f" ({shown(name)})" if isinstance(name, str) and name else ""

    def _namespace(self, table: dict[str, Any], where: str) -> NamespaceConfig:
        self._known(table, where, _NAMESPACE_KEYS)
        name = self._required(table, "name", where)
        default = False
        if "default" in table:
            default = self._value(table, "default", where, (bool,), "true or false")
        public_url = None
        if "public_url" in table:
            public_url = self._value(table, "public_url", where, (str,), "a string")
        rules = self._rules(table, where, "[[namespace.rule]]")
        entities = tuple(
            self._entity(entity, f"{where} > entity #{index}{self._named(entity)}")
            for index, entity in enumerate(
                self._tables(table, "entity", where, "[[namespace.entity]]"), start=1
            )
        )
        with self._at(where):
            return NamespaceConfig(
                name=name, default=default, rules=rules, entities=entities, public_url=public_url
            )

    def _entity(self, table: dict[str, Any], where: str) -> EntityConfig:
        self._known(table, where, _ENTITY_KEYS)
        name = self._required(table, "name", where)
        requires_client_authorization = True
        if "requires_client_authorization" in table:
            requires_client_authorization = self._value(
                table, "requires_client_authorization", where, (bool,), "true or false"
            )
        rules = self._rules(table, where, "[[namespace.entity.rule]]")
        with self._at(where):
            return EntityConfig(
                name=name, requires_client_authorization=requires_client_authorization, rules=rules
            )

    def _rules(self, table: dict[str, Any], where: str, header: str) -> tuple[AccessRule, ...]:
        return tuple(
            self._rule(rule, f"{where} > rule #{index}{self._named(rule)}")
            for index, rule in enumerate(self._tables(table, "rule", where, header), start=1)
        )

    def _rule(self, table: dict[str, Any], where: str) -> AccessRule:
        self._known(table, where, _RULE_KEYS)
        name = self._required(table, "name", where)
        primary_key = self._required(table, "primary_key", where)
        secondary_key = None
        if "secondary_key" in table:
            secondary_key = self._value(table, "secondary_key", where, (str,), "a string")
        if "rights" not in table:
            raise self._error(where, "'rights' is missing: add a list such as [\"Send\"]")
        names = self._value(table, "rights", where, (list,), "an array of strings")
        if not all(isinstance(item, str) for item in names):
            raise self._error(where, "'rights' must hold only strings, such as \"Listen\"")
        with self._at(where):
            return AccessRule(
                name=name,
                primary_key=primary_key,
                secondary_key=secondary_key,
                rights=Right.parse(names),
            )


class ConfigWatcher(Generic[C]):
    """Reloads a configuration file when it changes, keeping the last good config on errors.

    ``load`` reads the file into a configuration (by default the relay's), raising
    :class:`ConfigError` when it is invalid. A change is a new ``(st_mtime_ns, st_size)`` from
    ``stat``. Not thread-safe: poll from one task or thread.
    """

    @overload
    def __init__(
        self: ConfigWatcher[RelayConfig],
        path: str | os.PathLike[str],
        *,
        stat: Callable[[str], os.stat_result] = ...,
    ) -> None: ...

    @overload
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        load: Callable[[str], C],
        stat: Callable[[str], os.stat_result] = ...,
    ) -> None: ...

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        load: Callable[[str], Any] = load_config,
        stat: Callable[[str], os.stat_result] = os.stat,
    ) -> None:
        """Load ``path`` once; raises :class:`ConfigError` when that fails."""
        self.path = os.fspath(path)
        self._load: Callable[[str], C] = load
        self._stat = stat
        # Taken before reading, so that a write during the read shows up at the next poll.
        self._signature = self._read_signature()
        self._config = self._load(self.path)
        self.last_error: ConfigError | None = None
        """Why the latest reload failed; ``None`` once a reload succeeds."""

    @property
    def config(self) -> C:
        """The latest configuration that loaded."""
        return self._config

    def reload(self) -> C | None:
        """Read the file again whether or not it seems changed (a SIGHUP asks for this); what
        :meth:`poll` returns."""
        self._signature = (-1, -1)
        return self.poll()

    def poll(self) -> C | None:
        """Reload if the file changed; return the new config, or ``None``.

        ``None`` means unchanged, or changed into something invalid: then :attr:`config` stays
        as it was, :attr:`last_error` says why, and the file is read again at its next change.
        """
        signature = self._read_signature()
        if signature == self._signature:
            return None
        self._signature = signature
        try:
            config = self._load(self.path)
        except ConfigError as error:
            self.last_error = error
            return None
        self._config = config
        self.last_error = None
        return config

    def _read_signature(self) -> tuple[int, int] | None:
        try:
            result = self._stat(self.path)
        except OSError:
            return None
        return result.st_mtime_ns, result.st_size

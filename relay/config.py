"""The local relay's configuration: namespaces, hybrid connections and their SAS rules, from TOML.

One relay serves many namespaces on one port, as the Azure Relay service does; this module says
which namespaces and hybrid connections exist, which keys grant which rights, and how the relay
listens. Every value object checks itself when built, so a configuration that exists is valid;
:func:`parse_config` adds to those checks the file's structure (unknown keys, wrong types) and
says where in the file each problem is. No error message ever contains a key.

The file reads::

    [relay]                     # optional; these are the defaults
    host = "127.0.0.1"
    port = 9090                 # 0 = any free port
    public_url = "wss://relay.example.com"  # where clients reach it (default: host and port)
    max_listeners_per_entity = 25
    rendezvous_timeout = 30.0
    request_timeout = 60.0
    write_timeout = 10.0        # seconds a peer may leave the relay's writes unread
    max_connections_per_address = 500  # default: half the descriptor limit; 0 = no limit
    max_token_lifetime = 0      # seconds a token may have left; 0 = no limit
    stats_requires_manage = false

    [[namespace]]
    name = "contoso.servicebus.windows.net"
    default = true
    public_url = "wss://contoso.example.com:8443"  # optional, for this namespace only

      [[namespace.rule]]        # valid for every entity of the namespace
      name = "RootManageSharedAccessKey"
      primary_key = "..."
      secondary_key = "..."     # optional
      rights = ["Manage"]

      [[namespace.entity]]
      name = "hc1"
      requires_client_authorization = true

        [[namespace.entity.rule]]   # valid for this entity only
        name = "send-only"
        primary_key = "..."
        rights = ["Send"]
"""

from __future__ import annotations

import base64
import enum
import math
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyco_core.connection_string import ConnectionString
from hyco_core.errors import HycoError, InvalidUrlError, LocalProtocolError
from hyco_core.names import ascii_lower as _fold
from hyco_core.uris import HostedEntities, normalize_namespace, validate_entity_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tests run on one interpreter at a time
    import tomli as tomllib

__all__ = [
    "AccessRule",
    "ConfigError",
    "ConfigWatcher",
    "EntityConfig",
    "NamespaceConfig",
    "PublicAddress",
    "RelayConfig",
    "Right",
    "connection_string_for",
    "default_config",
    "load_config",
    "parse_config",
    "parse_public_url",
]

_SHOWN_LIMIT = 60
_ENTITY_CHARACTERS = re.compile(r"[A-Za-z0-9._/-]+")
# Visible ASCII without '%', '&', ';' and '=': a rule name travels verbatim in SAS tokens
# (skn=...) and in connection strings (SharedAccessKeyName=...).
_RULE_NAME = re.compile(r"[!-$'-:<>-~]+")
_DEFAULT_NAMESPACE = "localhost"
_DEFAULT_ENTITY = "hyco"
_ROOT_RULE = "RootManageSharedAccessKey"
_DEFAULT_KEY_BYTES = 32


class ConfigError(HycoError, ValueError):
    """The relay's configuration is invalid.

    The message names the file, the table and the key, says what is wrong and what to do, and
    never contains a key.
    """


def _shown(text: str) -> str:
    if len(text) > _SHOWN_LIMIT:
        return repr(text[:_SHOWN_LIMIT]) + "..."
    return repr(text)


def _host_key(authority: str) -> str:
    """Return the host of ``host[:port]`` or ``[v6][:port]``, without brackets, lower-cased."""
    if authority.startswith("["):
        host = authority[1:].partition("]")[0]
    else:
        host = authority.partition(":")[0]
    return _fold(host)


def _check_unique(names: Iterable[str], what: str) -> None:
    seen: dict[str, str] = {}
    for name in names:
        folded = _fold(name)
        if folded in seen:
            spellings = {seen[folded], name}
            raise ConfigError(
                f"two {what} are named {' and '.join(_shown(n) for n in sorted(spellings))} "
                "(names are compared case-insensitively): rename or remove one"
            )
        seen[folded] = name


class Right(enum.Flag):
    """What a SAS rule allows: listening, sending, or managing (which implies both)."""

    LISTEN = enum.auto()
    SEND = enum.auto()
    MANAGE = enum.auto()

    @classmethod
    def parse(cls, names: Iterable[str]) -> Right:
        """Return the rights named in ``names`` (``Listen``, ``Send``, ``Manage``, any case).

        ``Manage`` implies ``Listen`` and ``Send``. No names give no rights. Raises
        :class:`ConfigError` for any other name, or for one string instead of a list.
        """
        if isinstance(names, str):
            raise ConfigError(
                'rights are a list of names such as ["Listen", "Send"], not one string'
            )
        rights = cls(0)
        for name in names:
            right = cls.__members__.get(name.upper()) if name.isascii() else None
            if right is None:
                raise ConfigError(
                    f"{_shown(name)} is not a right: the rights are Listen, Send and Manage"
                )
            rights |= right
        return _implied(rights)


def _implied(rights: Right) -> Right:
    if Right.MANAGE in rights:
        return rights | Right.LISTEN | Right.SEND
    return rights


@dataclass(frozen=True, kw_only=True, slots=True)
class AccessRule:
    """A shared access authorization rule: a key name, its keys and the rights they grant.

    ``rights`` is stored with what ``MANAGE`` implies. A token signed with any of the rule's
    keys and naming the rule in ``skn`` has these rights. Raises :class:`ConfigError` for a name
    that cannot travel in a token or connection string, an empty primary key, a key without a
    UTF-8 form, or no rights.
    """

    name: str
    primary_key: str = field(repr=False)
    secondary_key: str | None = field(repr=False, default=None)
    """An empty secondary key counts as none."""
    rights: Right

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("'name' is empty: give the rule a name, such as 'send-only'")
        if not _RULE_NAME.fullmatch(self.name):
            raise ConfigError(
                "'name' must be visible ASCII without spaces, '%', '&', ';' or '=', since the "
                "rule name travels verbatim in tokens and connection strings"
            )
        if not self.primary_key:
            raise ConfigError(
                f"rule {_shown(self.name)} has an empty 'primary_key': give it a key, such as "
                "32 random bytes in base64"
            )
        for key in self.keys:
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(
                    f"a key of rule {_shown(self.name)} holds lone surrogates: a key is used "
                    "as its UTF-8 bytes, so it must have a UTF-8 form"
                ) from None
        if not self.rights:
            raise ConfigError(
                f"rule {_shown(self.name)} has no 'rights': give at least one of Listen, Send "
                "and Manage"
            )
        object.__setattr__(self, "rights", _implied(self.rights))

    @property
    def keys(self) -> tuple[str, ...]:
        """The rule's non-empty keys, primary first: a token signed with any of them is valid."""
        return tuple(key for key in (self.primary_key, self.secondary_key) if key)


@dataclass(frozen=True, kw_only=True, slots=True)
class EntityConfig:
    """A hybrid connection: its path, whether senders need a token, and its own SAS rules.

    Raises :class:`ConfigError` when ``name`` is not a relay path made of ASCII letters, digits,
    ``-``, ``_``, ``.`` and ``/`` (no empty, ``.``, ``..`` or leading ``$hc`` segment), or when
    two rules share a name (compared case-insensitively).
    """

    name: str
    requires_client_authorization: bool = True
    """``False`` lets senders connect without a token; listeners always need one."""
    rules: tuple[AccessRule, ...] = ()
    """Rules valid for this entity only."""

    def __post_init__(self) -> None:
        try:
            validate_entity_path(self.name)
        except InvalidUrlError as error:
            raise ConfigError(f"'name' is not a valid hybrid connection path: {error}") from None
        if not _ENTITY_CHARACTERS.fullmatch(self.name):
            raise ConfigError(
                "'name' may only hold ASCII letters, digits, '-', '_', '.' and '/' between segments"
            )
        _check_unique((rule.name for rule in self.rules), f"rules of entity {_shown(self.name)}")


@dataclass(frozen=True, kw_only=True, slots=True)
class NamespaceConfig:
    """A namespace: its host name, its namespace-wide SAS rules and its hybrid connections.

    ``name`` is a host (a DNS name, or an IPv6 address in brackets) without a port, and is
    stored lower-cased. Raises :class:`ConfigError` for any other name, or when two entities or
    two rules share a name (compared case-insensitively).
    """

    name: str
    default: bool = False
    """Whether requests whose Host matches no namespace go to this one."""
    rules: tuple[AccessRule, ...] = ()
    """Rules valid for every entity of the namespace."""
    entities: tuple[EntityConfig, ...] = ()
    public_url: str | None = None
    """Where clients reach this namespace, when not at the relay's own public address with the
    namespace's name as host (see :meth:`RelayConfig.public_address`)."""
    _entities: dict[str, EntityConfig] = field(init=False, repr=False, compare=False)
    hosted: HostedEntities = field(init=False, repr=False, compare=False)
    """The entities' names, indexed for :func:`hyco_core.parse_relay_url`."""

    def __post_init__(self) -> None:
        if self.public_url is not None:
            parse_public_url(self.public_url)
        try:
            name = normalize_namespace(self.name)
        except InvalidUrlError as error:
            raise ConfigError(f"'name' is not a valid host name: {error}") from None
        if ":" in name.rpartition("]")[2]:
            raise ConfigError(
                "'name' must be the host only, without a port: the relay's port is set in [relay]"
            )
        object.__setattr__(self, "name", name)
        _check_unique((rule.name for rule in self.rules), f"rules of namespace {_shown(name)}")
        _check_unique(
            (entity.name for entity in self.entities), f"entities of namespace {_shown(name)}"
        )
        entities = {_fold(entity.name): entity for entity in self.entities}
        object.__setattr__(self, "_entities", entities)
        object.__setattr__(self, "hosted", HostedEntities(entities))

    def entity(self, path: str) -> EntityConfig | None:
        """Return the entity named ``path`` (compared case-insensitively), or ``None``."""
        return self._entities.get(_fold(path))

    def resolve(self, path: str) -> tuple[EntityConfig, str] | None:
        """Split a request path into its entity and the suffix after it.

        ``path`` is the request's path without its leading ``/`` (and without ``$hc/``), such
        as ``hc1/suffix/x``. The entity is the one with the longest name that is a prefix of
        ``path`` ending at a ``/`` or at its end, compared case-insensitively, so that entity
        names holding ``/`` win over shorter ones. The suffix is the rest of ``path`` as given:
        empty or starting with ``/``. ``None`` when no entity matches.
        """
        folded = _fold(path)
        end = len(path)
        while end > 0:
            entity = self._entities.get(folded[:end])
            if entity is not None:
                return entity, path[end:]
            end = folded.rfind("/", 0, end)
        return None


def _positive_whole(value: Any) -> bool:
    return not isinstance(value, bool) and value >= 1


def _port(value: Any) -> bool:
    return not isinstance(value, bool) and 0 <= value <= 65535


def _positive_seconds(value: Any) -> bool:
    return not isinstance(value, bool) and 0 < value < math.inf


def _rate(value: Any) -> bool:
    return not isinstance(value, bool) and 0 <= value < math.inf


def _bind_address(value: Any) -> bool:
    return bool(value) and value == value.strip()


def _whole_or_zero(value: Any) -> bool:
    return value is None or (not isinstance(value, bool) and value >= 0)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _public_url(value: Any) -> bool:
    if value is None:
        return True
    try:
        parse_public_url(value)
    except ConfigError:
        return False
    return True


# What each [relay] setting must be, and what to write instead.
_SETTINGS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "host": (_bind_address, "must be an address to bind to, such as 127.0.0.1, 0.0.0.0 or ::"),
    "port": (_port, "must be from 0 to 65535 (0 lets the system pick a free port)"),
    "max_listeners_per_entity": (_positive_whole, "must be at least 1"),
    "rendezvous_timeout": (_positive_seconds, "must be a finite number of seconds above zero"),
    "request_timeout": (_positive_seconds, "must be a finite number of seconds above zero"),
    "connection_rate": (_rate, "must be a number of connections per second, 0 for no limit"),
    "connection_burst": (_positive_whole, "must be at least 1"),
    "message_rate": (_rate, "must be a number of messages per second, 0 for no limit"),
    "message_burst": (_positive_whole, "must be at least 1"),
    "public_url": (
        _public_url,
        "must be the address clients reach the relay at, such as wss://relay.example.com",
    ),
    "write_timeout": (_positive_seconds, "must be a finite number of seconds above zero"),
    "max_connections_per_address": (_whole_or_zero, "must be 0 (no limit) or more"),
    "max_token_lifetime": (_rate, "must be a number of seconds, 0 for no limit"),
    "stats_requires_manage": (_flag, "must be true or false"),
}


def _check_setting(key: str, value: Any) -> None:
    if key == "public_url" and isinstance(value, str):
        parse_public_url(value)  # says what is wrong with it
    accepts, requirement = _SETTINGS[key]
    if not accepts(value):
        raise ConfigError(f"{key!r} {requirement}")


@dataclass(frozen=True, slots=True)
class PublicAddress:
    """Where clients reach the relay: whether over TLS, and ``host[:port]`` as they write it.

    Every rendezvous address the relay hands a listener points here, and so do the connection
    strings it prints: never at whatever ``Host`` a client sent, which would let a sender steer
    listeners to a host of its choice.
    """

    secure: bool
    authority: str

    def url(self, websocket: bool, path: str) -> str:
        """``path`` (starting with ``/``) at this address, for a WebSocket or plain HTTP."""
        if websocket:
            scheme = "wss" if self.secure else "ws"
        else:
            scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.authority}{path}"


_PUBLIC_SCHEMES = {"wss": True, "https": True, "sb": True, "ws": False, "http": False}


def parse_public_url(text: str) -> PublicAddress:
    """Read a relay's public address: ``wss://``, ``https://`` or ``sb://`` (TLS), ``ws://`` or
    ``http://`` (plain), then ``host[:port]``, with nothing after but an optional ``/``.

    Raises :class:`ConfigError` saying what is wrong.
    """
    scheme, separator, rest = text.partition("://")
    secure = _PUBLIC_SCHEMES.get(scheme.lower()) if separator and scheme.isascii() else None
    if secure is None:
        raise ConfigError(
            f"'public_url' {_shown(text)} must start with wss://, https:// or sb:// (TLS), or "
            "ws:// or http:// (plain)"
        )
    authority = rest.removesuffix("/")
    if any(character in authority for character in "/?#@"):
        raise ConfigError(
            f"'public_url' {_shown(text)} must be scheme://host[:port] only: no path, query or "
            "user name"
        )
    try:
        return PublicAddress(secure=secure, authority=normalize_namespace(authority))
    except InvalidUrlError as error:
        raise ConfigError(f"'public_url' {_shown(text)} is not a valid address: {error}") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayConfig:
    """Everything the local relay serves, and how it listens.

    Raises :class:`ConfigError` for a setting out of range, no namespace, two namespaces with
    the same name, or more than one default namespace.
    """

    host: str = "127.0.0.1"
    """The address the relay binds to."""
    port: int = 9090
    """The port the relay binds to; 0 lets the system pick a free one."""
    max_listeners_per_entity: int = 25
    rendezvous_timeout: float = 30.0
    """Seconds a rendezvous address stays valid."""
    request_timeout: float = 60.0
    """Seconds a listener has to answer an HTTP request before the sender gets 504."""
    connection_rate: float = 0.0
    """New connections per second allowed from one client address (0: no limit); 429 beyond."""
    connection_burst: int = 20
    """How many connections one client address may open at once before the rate applies."""
    message_rate: float = 0.0
    """Messages per second allowed on one relayed connection (0: no limit); close 1008 beyond."""
    message_burst: int = 100
    """How many messages may come at once before the message rate applies."""
    public_url: str | None = None
    """Where clients reach the relay (``wss://relay.example.com``); ``None``: its host and port.
    Rendezvous addresses and printed connection strings point here."""
    write_timeout: float = 10.0
    """Seconds a peer may leave what the relay writes to it unread. A listener that takes longer
    is closed and its waiting senders are answered; any other connection is ended."""
    max_connections_per_address: int | None = None
    """Connections one client address may hold open at once; 429 beyond. ``None``: half the
    relay's descriptor limit, so that no one address can take them all; 0: no limit."""
    max_token_lifetime: float = 0.0
    """Seconds a token may have left when presented (0: no limit); 401 beyond."""
    stats_requires_manage: bool = False
    """Whether ``GET /stats`` (which lists entity names) needs a namespace Manage token."""
    namespaces: tuple[NamespaceConfig, ...]
    _namespaces: dict[str, NamespaceConfig] = field(init=False, repr=False, compare=False)
    _default: NamespaceConfig | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in _SETTINGS:
            _check_setting(key, getattr(self, key))
        if not self.namespaces:
            raise ConfigError("there is no [[namespace]]: add at least one")
        _check_unique((namespace.name for namespace in self.namespaces), "namespaces")
        defaults = [namespace.name for namespace in self.namespaces if namespace.default]
        if len(defaults) > 1:
            raise ConfigError(
                f"the namespaces {', '.join(_shown(name) for name in defaults)} are all marked "
                "'default = true': keep it on one at most"
            )
        object.__setattr__(self, "_namespaces", {_host_key(ns.name): ns for ns in self.namespaces})
        object.__setattr__(
            self, "_default", next((ns for ns in self.namespaces if ns.default), None)
        )

    def namespace(self, host: str) -> NamespaceConfig | None:
        """Return the namespace a request's ``Host`` header value selects.

        The host is compared case-insensitively, without its port and IPv6 brackets. When no
        namespace has that name: the default namespace; else the only namespace, if there is
        exactly one; else ``None``.
        """
        found = self._namespaces.get(_host_key(host), self._default)
        if found is None and len(self.namespaces) == 1:
            return self.namespaces[0]
        return found

    def keys_for(
        self, namespace: NamespaceConfig, entity: EntityConfig, right: Right
    ) -> dict[str, list[str]]:
        """Return rule name -> keys for every rule of ``namespace`` and ``entity`` granting
        all of ``right``: the ``keys`` argument of :func:`hyco_core.sas.verify_sas_token`.

        When a namespace rule and an entity rule share a name, both rules' keys are listed
        under it, the namespace rule's first. ``Right(0)`` lists every rule.
        """
        keys: dict[str, list[str]] = {}
        for rule in (*namespace.rules, *entity.rules):
            if right in rule.rights:
                keys.setdefault(rule.name, []).extend(rule.keys)
        return keys

    def rights_of(self, namespace: NamespaceConfig, entity: EntityConfig, key_name: str) -> Right:
        """Return the union of the rights of the rules named ``key_name`` on ``entity``.

        When a namespace rule and an entity rule share that name, this is more than either key
        grants: to decide whether a token has a right, verify it with the keys from
        :meth:`keys_for` for that right instead.
        """
        rights = Right(0)
        for rule in (*namespace.rules, *entity.rules):
            if rule.name == key_name:
                rights |= rule.rights
        return rights


def load_config(path: str | os.PathLike[str]) -> RelayConfig:
    """Read the relay's configuration from the TOML file at ``path`` (UTF-8, BOM allowed).

    Raises :class:`ConfigError` when the file cannot be read or is invalid.
    """
    source = os.fspath(path)
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
    return parse_config(text, source=source)


def parse_config(text: str, *, source: str = "<string>") -> RelayConfig:
    """Read the relay's configuration from TOML ``text``; ``source`` names it in errors.

    Raises :class:`ConfigError` for invalid TOML, unknown keys, values of the wrong type and
    everything the value objects refuse.
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
    return _Reader(source).relay_config(document)


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
                f"{', '.join(_shown(key) for key in unknown)}: the keys here are "
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
        self._known(relay, "[relay]", tuple(_SETTINGS))
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
                _check_setting(key, settings[key])
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
        return f" ({_shown(name)})" if isinstance(name, str) and name else ""

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


def default_config(
    *,
    host: str = "127.0.0.1",
    port: int = 9090,
    key: str | None = None,
    token_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> RelayConfig:
    """Return a configuration to start a relay without a file.

    One default namespace ``localhost`` with one hybrid connection ``hyco`` (senders need a
    token) and one namespace rule ``RootManageSharedAccessKey`` with Manage rights, whose key
    is ``key`` or else 32 bytes from ``token_bytes`` in base64.
    """
    if key is None:
        key = base64.b64encode(token_bytes(_DEFAULT_KEY_BYTES)).decode("ascii")
    rule = AccessRule(name=_ROOT_RULE, primary_key=key, rights=Right.MANAGE)
    namespace = NamespaceConfig(
        name=_DEFAULT_NAMESPACE,
        default=True,
        rules=(rule,),
        entities=(EntityConfig(name=_DEFAULT_ENTITY),),
    )
    return RelayConfig(host=host, port=port, namespaces=(namespace,))


def connection_string_for(
    config: RelayConfig,
    namespace: NamespaceConfig,
    entity: EntityConfig,
    rule: AccessRule,
    *,
    address: str,
    secure: bool = False,
) -> str:
    """Return a connection string for ``entity`` with ``rule``'s primary key.

    ``address`` is the ``host:port`` clients connect to; the string names it in ``Endpoint``
    and, unless ``secure`` (the relay serves TLS), sets ``UseDevelopmentEmulator=true`` (plain
    ``ws://``/``http://``). It holds the key:
    keep it out of logs. Raises :class:`LocalProtocolError` when ``namespace`` is not in
    ``config``, ``entity`` not in ``namespace``, or ``rule`` belongs to neither, and
    :class:`hyco_core.errors.ConnectionStringError` for a bad ``address`` or a key that a
    connection string cannot carry (``;`` or whitespace at either end).
    """
    # Looked up by name, then compared by identity: comparing by value would compare every
    # entity of the namespace, for each of thousands of entities.
    if config.namespace(namespace.name) is not namespace:
        raise LocalProtocolError(
            f"the namespace {_shown(namespace.name)} is not part of this configuration"
        )
    if namespace.entity(entity.name) is not entity:
        raise LocalProtocolError(
            f"the entity {_shown(entity.name)} is not part of the namespace "
            f"{_shown(namespace.name)}"
        )
    if not any(known is rule for known in (*namespace.rules, *entity.rules)):
        raise LocalProtocolError(
            f"the rule {_shown(rule.name)} belongs neither to the namespace "
            f"{_shown(namespace.name)} nor to its entity {_shown(entity.name)}"
        )
    return ConnectionString(
        namespace=address,
        entity_path=entity.name,
        shared_access_key_name=rule.name,
        shared_access_key=rule.primary_key,
        use_development_emulator=not secure,
    ).format()


class ConfigWatcher:
    """Reloads the file when it changes, keeping the last good config on errors.

    A change is a new ``(st_mtime_ns, st_size)`` from ``stat``. Not thread-safe: poll from one
    task or thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        stat: Callable[[str], os.stat_result] = os.stat,
    ) -> None:
        """Load ``path`` once; raises :class:`ConfigError` when that fails."""
        self._path = os.fspath(path)
        self._stat = stat
        # Taken before reading, so that a write during the read shows up at the next poll.
        self._signature = self._read_signature()
        self._config = load_config(self._path)
        self.last_error: ConfigError | None = None
        """Why the latest reload failed; ``None`` once a reload succeeds."""

    @property
    def config(self) -> RelayConfig:
        """The latest configuration that loaded."""
        return self._config

    def poll(self) -> RelayConfig | None:
        """Reload if the file changed; return the new config, or ``None``.

        ``None`` means unchanged, or changed into something invalid: then :attr:`config` stays
        as it was, :attr:`last_error` says why, and the file is read again at its next change.
        """
        signature = self._read_signature()
        if signature == self._signature:
            return None
        self._signature = signature
        try:
            config = load_config(self._path)
        except ConfigError as error:
            self.last_error = error
            return None
        self._config = config
        self.last_error = None
        return config

    def _read_signature(self) -> tuple[int, int] | None:
        try:
            result = self._stat(self._path)
        except OSError:
            return None
        return result.st_mtime_ns, result.st_size

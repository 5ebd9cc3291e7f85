"""The configuration's model: rights, rules, hybrid connections, namespaces and the relay's
settings, each checked when built, and the configuration a relay starts with."""

from __future__ import annotations

import base64
import enum
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hyco_core.connection_string import ConnectionString
from hyco_core.errors import InvalidUrlError, LocalProtocolError
from hyco_core.names import ascii_lower as _fold
from hyco_core.uris import HostedEntities, normalize_namespace, validate_entity_path

from .values import (
    SETTINGS,
    ConfigError,
    check_setting,
    check_unique,
    host_key,
    parse_public_url,
    shown,
)

__all__ = [
    "AccessRule",
    "EntityConfig",
    "NamespaceConfig",
    "RelayConfig",
    "Right",
    "connection_string_for",
    "default_config",
]

_ENTITY_CHARACTERS = re.compile(r"[A-Za-z0-9._/-]+")
# Visible ASCII without '%', '&', ';' and '=': a rule name travels verbatim in SAS tokens
# (skn=...) and in connection strings (SharedAccessKeyName=...).
_RULE_NAME = re.compile(r"[!-$'-:<>-~]+")
_DEFAULT_NAMESPACE = "localhost"
_DEFAULT_ENTITY = "hyco"
_ROOT_RULE = "RootManageSharedAccessKey"
_DEFAULT_KEY_BYTES = 32


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
                    f"{shown(name)} is not a right: the rights are Listen, Send and Manage"
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
                f"rule {shown(self.name)} has an empty 'primary_key': give it a key, such as "
                "32 random bytes in base64"
            )
        for key in self.keys:
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(
                    f"a key of rule {shown(self.name)} holds lone surrogates: a key is used "
                    "as its UTF-8 bytes, so it must have a UTF-8 form"
                ) from None
        if not self.rights:
            raise ConfigError(
                f"rule {shown(self.name)} has no 'rights': give at least one of Listen, Send "
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
        check_unique((rule.name for rule in self.rules), f"rules of entity {shown(self.name)}")


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
        check_unique((rule.name for rule in self.rules), f"rules of namespace {shown(name)}")
        check_unique(
            (entity.name for entity in self.entities), f"entities of namespace {shown(name)}"
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
        for key in SETTINGS:
            check_setting(key, getattr(self, key))
        if not self.namespaces:
            raise ConfigError("there is no [[namespace]]: add at least one")
        check_unique((namespace.name for namespace in self.namespaces), "namespaces")
        defaults = [namespace.name for namespace in self.namespaces if namespace.default]
        if len(defaults) > 1:
            raise ConfigError(
                f"the namespaces {', '.join(shown(name) for name in defaults)} are all marked "
                "'default = true': keep it on one at most"
            )
        object.__setattr__(self, "_namespaces", {host_key(ns.name): ns for ns in self.namespaces})
        object.__setattr__(
            self, "_default", next((ns for ns in self.namespaces if ns.default), None)
        )

    def namespace(self, host: str) -> NamespaceConfig | None:
        """Return the namespace a request's ``Host`` header value selects.

        The host is compared case-insensitively, without its port and IPv6 brackets. When no
        namespace has that name: the default namespace; else the only namespace, if there is
        exactly one; else ``None``.
        """
        found = self._namespaces.get(host_key(host), self._default)
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
            f"the namespace {shown(namespace.name)} is not part of this configuration"
        )
    if namespace.entity(entity.name) is not entity:
        raise LocalProtocolError(
            f"the entity {shown(entity.name)} is not part of the namespace {shown(namespace.name)}"
        )
    if not any(known is rule for known in (*namespace.rules, *entity.rules)):
        raise LocalProtocolError(
            f"the rule {shown(rule.name)} belongs neither to the namespace "
            f"{shown(namespace.name)} nor to its entity {shown(entity.name)}"
        )
    return ConnectionString(
        namespace=address,
        entity_path=entity.name,
        shared_access_key_name=rule.name,
        shared_access_key=rule.primary_key,
        use_development_emulator=not secure,
    ).format()

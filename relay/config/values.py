"""The values of a relay configuration that stand alone: the error every check raises, the
``[relay]`` settings' rules, and the public address clients reach the relay at."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hyco_core.errors import HycoError, InvalidUrlError
from hyco_core.names import ascii_lower as _fold
from hyco_core.uris import create_rendezvous_uri, normalize_namespace

__all__ = [
    "SETTINGS",
    "ConfigError",
    "PublicAddress",
    "check_setting",
    "check_unique",
    "host_key",
    "parse_public_url",
    "shown",
]

_SHOWN_LIMIT = 60


class ConfigError(HycoError, ValueError):
    """The relay's configuration is invalid.

    The message names the file, the table and the key, says what is wrong and what to do, and
    never contains a key.
    """


def shown(text: str) -> str:
    if len(text) > _SHOWN_LIMIT:
        return repr(text[:_SHOWN_LIMIT]) + "..."
    return repr(text)


def host_key(authority: str) -> str:
    """Return the host of ``host[:port]`` or ``[v6][:port]``, without brackets, lower-cased."""
    if authority.startswith("["):
        host = authority[1:].partition("]")[0]
    else:
        host = authority.partition(":")[0]
    return _fold(host)


def check_unique(names: Iterable[str], what: str) -> None:
    seen: dict[str, str] = {}
    for name in names:
        folded = _fold(name)
        if folded in seen:
            spellings = {seen[folded], name}
            raise ConfigError(
                f"two {what} are named {' and '.join(shown(n) for n in sorted(spellings))} "
                "(names are compared case-insensitively): rename or remove one"
            )
        seen[folded] = name


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
SETTINGS: dict[str, tuple[Callable[[Any], bool], str]] = {
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


def check_setting(key: str, value: Any) -> None:
    if key == "public_url" and isinstance(value, str):
        parse_public_url(value)  # says what is wrong with it
    accepts, requirement = SETTINGS[key]
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

    def rendezvous(
        self, entity: str, action: str, rendezvous_id: str, *, suffix: str = "", query: str = ""
    ) -> str:
        """Where a listener of ``entity`` meets a sender (``action`` ``accept``) or reads an
        HTTP request (``request``), at this address."""
        return create_rendezvous_uri(
            self.authority,
            entity,
            action=action,
            rendezvous_id=rendezvous_id,
            suffix=suffix,
            query=query,
            secure=self.secure,
        )


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
            f"'public_url' {shown(text)} must start with wss://, https:// or sb:// (TLS), or "
            "ws:// or http:// (plain)"
        )
    authority = rest.removesuffix("/")
    if any(character in authority for character in "/?#@"):
        raise ConfigError(
            f"'public_url' {shown(text)} must be scheme://host[:port] only: no path, query or "
            "user name"
        )
    try:
        return PublicAddress(secure=secure, authority=normalize_namespace(authority))
    except InvalidUrlError as error:
        raise ConfigError(f"'public_url' {shown(text)} is not a valid address: {error}") from None

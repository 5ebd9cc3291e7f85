"""Where relay tokens come from, and where a relay endpoint is: shared by every transport.

A token provider turns a resource (``sb://{namespace}/{path}``) into a :class:`RelayToken`:
a SAS key signs one on demand, a fixed SAS string is used as is, any callable may supply one,
and an Entra ID credential (``azure-identity``) fetches one for ``https://relay.azure.net``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from hyco_core import (
    ConnectionString,
    ConnectionStringError,
    InvalidTokenError,
    create_relay_token,
    parse_connection_string,
    parse_sas_token,
)

__all__ = [
    "ENTRA_SCOPE",
    "CallableTokenProvider",
    "EntraTokenProvider",
    "RelayEndpoint",
    "RelayToken",
    "SasKeyTokenProvider",
    "SasTokenProvider",
    "TokenProvider",
]

ENTRA_SCOPE = "https://relay.azure.net/.default"


@dataclass(frozen=True, slots=True)
class RelayToken:
    """A token and when it expires (Unix seconds; ``None`` when unknown)."""

    token: str = field(repr=False)
    expires_at: float | None = None


class TokenProvider(Protocol):
    """Anything that can hand out a relay token for a resource.

    ``blocking`` providers (network calls) are run off the event loop by async transports.
    """

    blocking: bool

    def get_token(self, resource: str) -> RelayToken: ...


class SasKeyTokenProvider:
    """Signs SAS tokens with a rule's key, ``lifetime`` seconds long (60 minutes by default)."""

    blocking = False

    def __init__(
        self,
        key_name: str,
        key: str,
        *,
        lifetime: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key_name = key_name
        self._key = key
        self.lifetime = lifetime
        self._clock = clock

    def __repr__(self) -> str:
        return f"SasKeyTokenProvider(key_name={self.key_name!r}, lifetime={self.lifetime})"

    def get_token(self, resource: str) -> RelayToken:
        now = self._clock()
        token = create_relay_token(resource, self.key_name, self._key, self.lifetime, now=now)
        return RelayToken(token, int(now) + self.lifetime)


class SasTokenProvider:
    """A SAS token issued elsewhere, used until it expires (it cannot be renewed)."""

    blocking = False

    def __init__(self, token: str) -> None:
        try:
            expiry = parse_sas_token(token).expiry
        except InvalidTokenError as error:
            raise InvalidTokenError(f"the shared access signature is not usable: {error}") from None
        self._token = RelayToken(token, float(expiry))

    def __repr__(self) -> str:
        return f"SasTokenProvider(expires_at={self._token.expires_at})"

    def get_token(self, resource: str) -> RelayToken:
        return self._token


class CallableTokenProvider:
    """Calls ``function(resource)``, which returns a token string or a :class:`RelayToken`."""

    def __init__(
        self, function: Callable[[str], str | RelayToken], *, blocking: bool = False
    ) -> None:
        self._function = function
        self.blocking = blocking

    def __repr__(self) -> str:
        return f"CallableTokenProvider({self._function!r})"

    def get_token(self, resource: str) -> RelayToken:
        result = self._function(resource)
        return result if isinstance(result, RelayToken) else RelayToken(result)


class EntraTokenProvider:
    """Entra ID (Azure AD) tokens from an ``azure-identity`` ``TokenCredential``.

    The token is sent raw in the same header as a SAS token; its audience is Azure Relay.
    """

    blocking = True

    def __init__(self, credential: Any, *, scope: str = ENTRA_SCOPE) -> None:
        self._credential = credential
        self.scope = scope

    def __repr__(self) -> str:
        return f"EntraTokenProvider(scope={self.scope!r})"

    def get_token(self, resource: str) -> RelayToken:
        access = self._credential.get_token(self.scope)
        return RelayToken(access.token, float(access.expires_on))


@dataclass(frozen=True, slots=True)
class RelayEndpoint:
    """A hybrid connection to reach: namespace (``host[:port]``), path, scheme, credentials."""

    namespace: str
    path: str
    token_provider: TokenProvider | None = None
    secure: bool = True

    @classmethod
    def from_connection_string(
        cls, connection_string: str | ConnectionString, *, path: str | None = None
    ) -> RelayEndpoint:
        parsed = (
            parse_connection_string(connection_string)
            if isinstance(connection_string, str)
            else connection_string
        )
        entity = path or parsed.entity_path
        if not entity:
            raise ConnectionStringError(
                "the connection string has no EntityPath: pass the hybrid connection's path"
            )
        return cls(
            namespace=parsed.namespace,
            path=entity,
            token_provider=_provider_for(parsed),
            secure=parsed.secure,
        )

    @classmethod
    def of(cls, target: str | RelayEndpoint, *, path: str | None = None) -> RelayEndpoint:
        """``target`` itself, or the endpoint its connection string names (``path`` gives the
        hybrid connection when the string has no ``EntityPath``)."""
        if isinstance(target, RelayEndpoint):
            return target
        return cls.from_connection_string(target, path=path)

    @property
    def resource(self) -> str:
        """What tokens are requested for: ``sb://{namespace}/{path}``."""
        return f"sb://{self.namespace}/{self.path}"

    @property
    def http_url(self) -> str:
        """Where senders make their HTTP requests: ``https://{namespace}/{path}``."""
        return f"{'https' if self.secure else 'http'}://{self.namespace}/{self.path}"

    @property
    def host(self) -> str:
        return urlsplit(f"//{self.namespace}").hostname or self.namespace

    @property
    def port(self) -> int:
        port = urlsplit(f"//{self.namespace}").port
        return port if port is not None else (443 if self.secure else 80)


def _provider_for(parsed: ConnectionString) -> TokenProvider | None:
    if parsed.shared_access_key_name and parsed.shared_access_key:
        return SasKeyTokenProvider(parsed.shared_access_key_name, parsed.shared_access_key)
    if parsed.shared_access_signature:
        return SasTokenProvider(parsed.shared_access_signature)
    if parsed.authentication:
        from azure.identity import ManagedIdentityCredential  # optional extra: hyco[entra]

        return EntraTokenProvider(ManagedIdentityCredential())
    return None

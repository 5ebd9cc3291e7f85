"""HTTP senders with httpx: an ``httpx.Auth`` that adds a fresh relay token to each request.

    auth = RelayAuth.from_connection_string(connection_string)
    httpx.get(auth.url("/items?page=2"), auth=auth)

Tokens come from the endpoint's provider and are reused until they near expiry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator

import httpx

from hyco_core import create_relay_http_uri

from .auth import RelayEndpoint, RelayToken

__all__ = ["RelayAuth"]


class RelayAuth(httpx.Auth):
    """Adds ``ServiceBusAuthorization`` with a token for the endpoint's hybrid connection."""

    def __init__(
        self,
        endpoint: RelayEndpoint,
        *,
        renew_margin: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self._renew_margin = renew_margin
        self._clock = clock
        self._token: RelayToken | None = None
        self._issued_at = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_connection_string(
        cls, connection_string: str, *, path: str | None = None
    ) -> RelayAuth:
        return cls(RelayEndpoint.from_connection_string(connection_string, path=path))

    def __repr__(self) -> str:
        return f"RelayAuth({self.endpoint.namespace}/{self.endpoint.path})"

    def url(self, path: str = "", query: str = "") -> str:
        """The hybrid connection's HTTP address, with an optional path suffix and query."""
        return create_relay_http_uri(
            self.endpoint.namespace,
            self.endpoint.path,
            suffix=path.lstrip("/"),
            query=query,
            secure=self.endpoint.secure,
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._current_token()
        if token is not None:
            request.headers["ServiceBusAuthorization"] = token
        yield request

    def _current_token(self) -> str | None:
        provider = self.endpoint.token_provider
        if provider is None:
            return None
        with self._lock:
            now = self._clock()
            token = self._token
            if token is None or self._needs_renewal(token, now):
                token = self._token = provider.get_token(self.endpoint.resource)
                self._issued_at = now
            return token.token

    def _needs_renewal(self, token: RelayToken, now: float) -> bool:
        if token.expires_at is None:
            return True
        lifetime = token.expires_at - self._issued_at
        return now >= token.expires_at - min(self._renew_margin, lifetime * 0.2)

"""Extension points of the local relay: police or extend it without changing its code.

Each hook is an async callable receiving a :class:`ConnectionInfo`. ``sender_connecting`` and
``http_request`` may refuse by raising :class:`Refused` with a status and description, which the
sender receives like any relay refusal. A hook that raises anything else is a relay failure:
the sender gets 500, a listener being connected gets close 1011.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hyco_core import Headers, RemoteEndpoint

__all__ = ["ConnectionInfo", "Hook", "Refused", "RelayHooks"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionInfo:
    """Who is connecting where. ``headers`` never include the relay token."""

    kind: str  # "listener", "sender" or "http"
    namespace: str
    entity: str
    remote_endpoint: RemoteEndpoint | None
    headers: Headers
    suffix: str = ""
    query: str = ""
    method: str | None = None
    listener_id: str | None = None


class Refused(Exception):
    """Raised by a hook to refuse a sender or an HTTP request with ``status``."""

    def __init__(self, status: int, description: str) -> None:
        if not 400 <= status <= 599:
            raise ValueError("a refusal status is a 4xx or 5xx code")
        super().__init__(description)
        self.status = status
        self.description = description


Hook = Callable[[ConnectionInfo], Awaitable[None]]


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayHooks:
    listener_connected: Hook | None = None
    listener_disconnected: Hook | None = None
    sender_connecting: Hook | None = None
    http_request: Hook | None = None

"""The ASGI interface as this package uses it: the types of apps and messages, the error ``send``
raises once the sender is gone, and the checks every kind of scope shares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from hyco_core import ConnectionClosed, LocalProtocolError

__all__ = [
    "ASGIApp",
    "ClientDisconnected",
    "LifespanMode",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "asgi_version",
    "status_code",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
LifespanMode = Literal["auto", "on", "off"]


class ClientDisconnected(ConnectionClosed, OSError):
    """The sender is gone: what ``send`` raises then, for HTTP and WebSockets alike (the ASGI
    spec wants an ``OSError``, which frameworks such as Starlette turn into their own)."""


def asgi_version() -> dict[str, str]:
    """The ``asgi`` entry of every scope."""
    return {"version": "3.0", "spec_version": "2.4"}


def status_code(status: object) -> int:
    """An app's status value, checked: an ``int`` from 100 to 999."""
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 999:
        return status
    raise LocalProtocolError(f"the status must be an integer from 100 to 999, not {status!r}")

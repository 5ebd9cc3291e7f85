"""What waits on a listener: a WebSocket sender until the listener opens its rendezvous, an
HTTP request until its answer, and the two directions of a relayed WebSocket."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from hyco_core import Event, Response
from hyco_core.service import HttpServer, IncomingRequest
from hyco_transports.pump import ChannelSocket

if TYPE_CHECKING:
    from .registry import EntityStats


@dataclass(eq=False, slots=True)
class OneWay:
    """One direction of a relayed WebSocket: the task of the connection it reads from pumps
    it, so a relayed connection costs the relay no task beyond the two connections' own.
    ``sender_of`` is the entity's counters when the source is the sender: its ``senders``
    counts this connection while it is pumped."""

    source: ChannelSocket
    target: ChannelSocket
    forward: Callable[[Event], Awaitable[None]]
    sender_of: EntityStats | None = None


@dataclass(eq=False, slots=True)
class PendingAccept:
    """A sender waiting for its listener to open the rendezvous or reject it.

    ``settled`` is set when the listener has opened the rendezvous or rejected it; ``joined``
    once the sender's task has answered both handshakes (``listener_way`` is then the
    rendezvous' direction) or has given up.
    """

    offered: tuple[str, ...]
    expires_at: float
    settled: anyio.Event = field(default_factory=anyio.Event)
    joined: anyio.Event = field(default_factory=anyio.Event)
    listener_socket: tuple[anyio.abc.ByteStream, HttpServer, IncomingRequest] | None = None
    listener_way: OneWay | None = None
    rejection: tuple[int, str] | None = None
    listener_lost: bool = False


@dataclass(eq=False)
class HttpExchange:
    """An HTTP request on its way to a listener, and the way its answer comes back."""

    request_id: str
    expires_at: float
    answered: anyio.Event = field(default_factory=anyio.Event)
    inline: tuple[Response, bytes] | None = None
    rendezvous: ChannelSocket | None = None

"""The registry: the listeners of every entity, the rendezvous announced to them, each
entity's counters, the refusals, and the subscribers told when a listener comes or goes."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hyco_core import ChannelState, Headers
from hyco_core.service import ServiceControlChannel, ascii_lower
from hyco_transports.pump import ChannelSocket

from .config import EntityConfig, NamespaceConfig
from .rendezvous import HttpExchange, PendingAccept


@dataclass(eq=False)
class Listener:
    id: str
    socket: ChannelSocket
    namespace: NamespaceConfig
    entity: EntityConfig
    host: str
    exchanges: dict[str, HttpExchange] = field(default_factory=dict)
    # Senders waiting for this listener to open their rendezvous: told at once if it goes.
    accepts: set[PendingAccept] = field(default_factory=set)

    @property
    def channel(self) -> ServiceControlChannel:
        assert isinstance(self.socket.channel, ServiceControlChannel)
        return self.socket.channel


@dataclass
class EntityStats:
    """An entity's counters since the relay started, and its relayed WebSockets open now
    (``senders``). ``bytes_in`` went from senders to listeners, ``bytes_out`` back: WebSocket
    message payloads and HTTP bodies."""

    connections: int = 0
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    senders: int = 0


@dataclass(frozen=True, slots=True)
class EntityCounts:
    """One entity's figures at a moment: :class:`EntityStats` with its listeners and the senders
    waiting for one of them to open their rendezvous."""

    namespace: str
    entity: str
    listeners: int
    pending_rendezvous: int
    stats: EntityStats


@dataclass(frozen=True, slots=True)
class RelayCounts:
    """The relay's figures at a moment, for metrics: each entity's that has had a listener or
    traffic, and the refusals by status (every error answer the relay gave)."""

    entities: tuple[EntityCounts, ...]
    refusals: Mapping[int, int]


def registry_key(namespace: NamespaceConfig, entity: EntityConfig) -> tuple[str, str]:
    """How the relay files an entity's listeners, rendezvous and counters: by names compared
    ASCII case-insensitively (a namespace's name is stored lower-cased already)."""
    return namespace.name, ascii_lower(entity.name)


class Registry:
    """Everything the relay files by entity (see :func:`registry_key`)."""

    def __init__(self) -> None:
        self.listeners: dict[tuple[str, str], list[Listener]] = {}
        # (namespace, entity, rendezvous id): an address opens only where it was announced
        self.accepts: dict[tuple[str, str, str], PendingAccept] = {}
        self.exchanges: dict[str, tuple[Listener, HttpExchange]] = {}
        self._stats: dict[tuple[str, str], EntityStats] = {}
        self._refusals: Counter[int] = Counter()
        # (namespace, entity or "" for all) and the stream of each presence subscriber
        self._presence: list[tuple[tuple[str, str], MemoryObjectSendStream[str]]] = []
        self._random = random.SystemRandom()

    def listener_count(self, namespace: str, entity: str) -> int:
        return len(self.listeners.get((ascii_lower(namespace), ascii_lower(entity)), []))

    def entity_stats(self, namespace: NamespaceConfig, entity: EntityConfig) -> EntityStats:
        return self._stats.setdefault(registry_key(namespace, entity), EntityStats())

    def stats(self, namespace: NamespaceConfig | None = None) -> dict[str, object]:
        """The counters of every entity, or of ``namespace``'s only, and how many senders wait
        for a listener to open their rendezvous."""
        entities = {}
        for (space, entity), counters in sorted(self._stats.items()):
            if namespace is not None and space != namespace.name:
                continue
            entities[f"{space}/{entity}"] = {
                "listeners": self.listener_count(space, entity),
                "connections": counters.connections,
                "requests": counters.requests,
                "bytes_in": counters.bytes_in,
                "bytes_out": counters.bytes_out,
            }
        return {"entities": entities, "pending_rendezvous": len(self.accepts)}

    def refused(self, status: int) -> None:
        """Count a refusal the relay answered with ``status``."""
        self._refusals[status] += 1

    def counts(self) -> RelayCounts:
        """The figures of every entity, and the refusals. Safe to call from another thread
        while the relay runs: each table is copied in one step (under the interpreter's lock),
        and the figures are read from the copies."""
        pending = Counter((space, entity) for space, entity, _ in list(self.accepts))
        listeners = dict(self.listeners)
        entities = tuple(
            EntityCounts(
                namespace=space,
                entity=entity,
                listeners=len(listeners.get((space, entity), ())),
                pending_rendezvous=pending[space, entity],
                stats=replace(counters),
            )
            for (space, entity), counters in sorted(dict(self._stats).items())
        )
        return RelayCounts(entities=entities, refusals=dict(self._refusals))

    def pick(
        self,
        namespace: NamespaceConfig,
        entity: EntityConfig,
        headers: Headers,
        tried: Collection[Listener] = (),
    ) -> Listener | None:
        """A random eligible listener, other than those already ``tried``."""
        candidates = self.listeners.get(registry_key(namespace, entity), [])
        allowed = _id_list(headers.get("microsoft-relay-allowedlisteners"))
        disallowed = _id_list(headers.get("microsoft-relay-disallowedlisteners"))
        eligible = [
            listener
            for listener in candidates
            if listener.channel.state is ChannelState.OPEN
            and listener not in tried
            and (not allowed or ascii_lower(listener.id) in allowed)
            and ascii_lower(listener.id) not in disallowed
        ]
        return self._random.choice(eligible) if eligible else None

    def publish(self, kind: str, listener: Listener) -> None:
        key = registry_key(listener.namespace, listener.entity)
        count = len(self.listeners.get(key, []))
        message = _presence_event(kind, listener, count)
        for (space, name), subscriber in list(self._presence):
            if space == key[0] and name in ("", key[1]):
                try:
                    subscriber.send_nowait(message)
                except anyio.WouldBlock:
                    subscriber.close()  # a subscriber that cannot keep up is dropped

    @contextmanager
    def presence(
        self, namespace: NamespaceConfig, key: tuple[str, str] | None
    ) -> Iterator[MemoryObjectReceiveStream[str]]:
        """Subscribe to the listeners of ``namespace`` (of the entity filed at ``key`` only,
        unless ``None``) coming and going, starting with those online now."""
        sender, receiver = anyio.create_memory_object_stream[str](256)
        for (space, name), listeners in self.listeners.items():
            if space == namespace.name and key in (None, (space, name)):
                for listener in listeners:
                    sender.send_nowait(_presence_event("online", listener, len(listeners)))
        subscription = (key or (namespace.name, ""), sender)
        self._presence.append(subscription)
        try:
            yield receiver
        finally:
            self._presence.remove(subscription)
            sender.close()


def _presence_event(kind: str, listener: Listener, count: int) -> str:
    document = {
        "namespace": listener.namespace.name,
        "entity": listener.entity.name,
        "listener": listener.id,
        "listeners": count,
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }
    return f"event: {kind}\ndata: {json.dumps(document)}\n\n"


def _id_list(value: str | None) -> set[str]:
    return {ascii_lower(item.strip()) for item in (value or "").split(",") if item.strip()}


def no_listener(headers: Headers) -> str:
    if "microsoft-relay-allowedlisteners" in headers or (
        "microsoft-relay-disallowedlisteners" in headers
    ):
        return "None of the connected listeners meet the criteria"
    return "No listener is connected to this hybrid connection"

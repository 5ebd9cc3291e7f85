"""The local relay: Azure Relay Hybrid Connections, served on one port with anyio.

Every connection starts as HTTP/1.1. Its target and ``sb-hc-action`` decide what it is:

- ``listen``: a listener's control channel (token with Listen; at most 25 per entity);
- ``connect`` (or no action): a sender's WebSocket (token with Send, unless anonymous senders
  are allowed). The relay announces it to a random listener with ``accept`` and waits for that
  listener to open the rendezvous (``accept``) or to reject it;
- ``accept`` / ``request``: a listener opening a rendezvous the relay announced;
- anything else without ``$hc``: an HTTP sender's request, forwarded inline or over a rendezvous.

The protocol itself lives in :mod:`hyco_core`; this module moves bytes, keeps the registry of
listeners and pending rendezvous, and keeps time.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import random
import re
import secrets
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import parse_qs, parse_qsl
from xml.sax.saxutils import escape as xml_escape

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream
from anyio.streams.tls import TLSStream

from hyco_core import (
    HOP_BY_HOP_HEADERS,
    INLINE_BODY_LIMIT,
    INLINE_HEADERS_LIMIT,
    Accept,
    BodyEnd,
    BodyPiece,
    ChannelClosed,
    ChannelState,
    Event,
    Headers,
    HttpServer,
    IncomingRequest,
    InvalidRequestError,
    InvalidUrlError,
    ListenerResponseError,
    LocalProtocolError,
    MessageReceived,
    PingReceived,
    PongReceived,
    RelayUrl,
    RemoteEndpoint,
    RemoteProtocolError,
    Request,
    Response,
    ResponseBodyReceived,
    ResponseReceived,
    SasOutcome,
    ServerWebSocket,
    ServiceControlChannel,
    ServiceHttpRendezvous,
    TokenRenewed,
    add_via,
    ascii_lower,
    check_listener_response,
    forwarded_connect_headers,
    forwarded_request_headers,
    listener_reject_status,
    normalize_namespace,
    parse_relay_url,
    reason_phrase,
    redact_url,
    request_token,
    verify_sas_token,
)
from hyco_transports.pump import READ_SIZE, STREAM_ERRORS, ChannelSocket, Clock

from .config import (
    EntityConfig,
    NamespaceConfig,
    PublicAddress,
    RelayConfig,
    Right,
    connection_string_for,
    parse_public_url,
)
from .hooks import ConnectionInfo, Hook, Refused, RelayHooks

__all__ = ["Relay", "serve_relay"]

logger = logging.getLogger("hyco.relay")

_HEAD_TIMEOUT = 10.0
# accept() failing for want of descriptors or memory: the relay pauses accepting, sheds idle
# connections and tries again, instead of ending.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_PAUSES = (0.05, 0.1, 0.2, 0.5, 1.0)
_RESOURCE_WARNING_INTERVAL = 60.0  # an attack lasting hours logs a line a minute, not per try
_SHED_AT_ONCE = 16  # at least this many idle connections are shed when descriptors run out
_DRAIN_TIME = 1.0
_DRAIN_LIMIT = 1024 * 1024
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LOGGED_LIMIT = 200
_MAX_CLIENT_BUCKETS = 10_000  # client addresses whose connection rate is tracked
_RIGHT_NAMES = {Right.LISTEN: "Listen", Right.SEND: "Send", Right.MANAGE: "Manage"}
_MANAGEMENT_NAMESPACE = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
_PRESENCE_PATH = "/$presence"


class _Refusal(Exception):
    """A request the relay answers with an error status (and, for HTTP senders, a JSON body)."""

    def __init__(self, status: int, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or reason_phrase(status).replace(" ", "")


class _Abort(Exception):
    """A response already under way cannot be completed: drop the connection."""


@dataclass(eq=False)
class _Listener:
    id: str
    socket: ChannelSocket
    namespace: NamespaceConfig
    entity: EntityConfig
    expires_at: float | None
    host: str
    exchanges: dict[str, _HttpExchange] = field(default_factory=dict)
    # Senders waiting for this listener to open their rendezvous: told at once if it goes.
    accepts: set[_PendingAccept] = field(default_factory=set)
    # The wait for the token's expiry, cut short when a renewal moves the expiry.
    expiry_wait: anyio.CancelScope | None = None

    @property
    def channel(self) -> ServiceControlChannel:
        assert isinstance(self.socket.channel, ServiceControlChannel)
        return self.socket.channel


@dataclass(eq=False, slots=True)
class _OneWay:
    """One direction of a relayed WebSocket: the task of the connection it reads from pumps
    it, so a relayed connection costs the relay no task beyond the two connections' own."""

    source: ChannelSocket
    target: ChannelSocket
    forward: Callable[[Event], Awaitable[None]]


@dataclass(eq=False, slots=True)
class _PendingAccept:
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
    listener_way: _OneWay | None = None
    rejection: tuple[int, str] | None = None
    listener_lost: bool = False


@dataclass(eq=False)
class _HttpExchange:
    """An HTTP request on its way to a listener, and the way its answer comes back."""

    request_id: str
    expires_at: float
    answered: anyio.Event = field(default_factory=anyio.Event)
    inline: tuple[Response, bytes] | None = None
    rendezvous: ChannelSocket | None = None


class _Bucket:
    """A token bucket: ``rate`` per second, at most ``burst`` at once."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def level(self) -> float:
        """How many connections its client could open right now."""
        return min(self.burst, self.tokens + (time.monotonic() - self.stamp) * self.rate)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class _Admission:
    """Who holds the relay's connections: how many each client address has open, and which
    are still waiting for their request head (oldest first), to be shed first when the relay
    runs out of descriptors: they have shown nothing, and hold one each."""

    __slots__ = ("_held", "_waiting")

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._waiting: dict[anyio.CancelScope, None] = {}

    def enter(self, address: str | None, limit: int) -> bool:
        """Count a new connection from ``address``; ``False`` if that is over ``limit``."""
        if address is None:
            return True
        held = self._held.get(address, 0)
        if limit and held >= limit:
            return False
        self._held[address] = held + 1
        return True

    def leave(self, address: str | None) -> None:
        if address is None:
            return
        held = self._held.pop(address, 1) - 1
        if held:
            self._held[address] = held

    @contextmanager
    def awaiting_head(self) -> Iterator[anyio.CancelScope]:
        """A scope around reading a request head, which :meth:`shed` may cancel."""
        with anyio.CancelScope() as scope:
            self._waiting[scope] = None
            try:
                yield scope
            finally:
                self._waiting.pop(scope, None)

    def shed(self) -> int:
        """End the oldest connections still waiting for their head; return how many."""
        count = max(_SHED_AT_ONCE, len(self._waiting) // 8)
        oldest = list(itertools.islice(self._waiting, count))
        for scope in oldest:
            del self._waiting[scope]
            scope.cancel()
        return len(oldest)


@dataclass
class _EntityStats:
    connections: int = 0
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class Relay:
    """A relay serving the namespaces and entities of a :class:`~hyco_relay.config.RelayConfig`.

    Use :func:`serve_relay` to run one (in-process, as an async context manager).
    """

    def __init__(
        self, config: RelayConfig, *, hooks: RelayHooks | None = None, secure: bool = False
    ) -> None:
        self.config = config
        self.secure = secure
        self.hooks = hooks or RelayHooks()
        self.port = config.port
        self.started_at = datetime.now(timezone.utc)
        self._client_buckets: dict[str, _Bucket] = {}
        self._admission = _Admission()
        # (namespace, entity or "" for all) and the stream of each presence subscriber
        self._presence: list[tuple[tuple[str, str], MemoryObjectSendStream[str]]] = []
        self._listeners: dict[tuple[str, str], list[_Listener]] = {}
        # (namespace, entity, rendezvous id): an address opens only where it was announced
        self._accepts: dict[tuple[str, str, str], _PendingAccept] = {}
        self._exchanges: dict[str, tuple[_Listener, _HttpExchange]] = {}
        self._stats: dict[tuple[str, str], _EntityStats] = {}
        self._random = random.SystemRandom()
        # Keeps the time of relayed WebSockets; serve_relay runs it.
        self.clock = Clock()

    # -- public ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` clients connect to."""
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a bind-all address is not a client address
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    def connection_string(
        self, entity: str | None = None, rule: str | None = None, *, namespace: str | None = None
    ) -> str:
        """A ready-to-use connection string for ``entity`` (default: the first entity), naming
        the namespace's :meth:`public_address`."""
        space = self.config.namespaces[0] if namespace is None else self.config.namespace(namespace)
        if space is None:
            raise KeyError(f"no namespace {namespace!r}")
        target = space.entity(entity) if entity else space.entities[0]
        if target is None:
            raise KeyError(f"no entity {entity!r} in namespace {space.name!r}")
        rules = [r for r in (*space.rules, *target.rules) if rule in (None, r.name)]
        if not rules:
            raise KeyError(f"no rule {rule!r} for entity {target.name!r}")
        public = self.public_address(space)
        return connection_string_for(
            self.config, space, target, rules[0], address=public.authority, secure=public.secure
        )

    def public_address(self, namespace: NamespaceConfig) -> PublicAddress:
        """Where clients reach ``namespace``, and so where its rendezvous addresses point.

        The namespace's own ``public_url``; else the relay's ``public_url`` (or the address it
        listens on), as is when a client going there selects this namespace, else with the
        namespace's name as host, so that the ``Host`` such a client sends selects it.
        """
        if namespace.public_url is not None:
            return parse_public_url(namespace.public_url)
        if self.config.public_url is not None:
            base = parse_public_url(self.config.public_url)
        else:
            base = PublicAddress(secure=self.secure, authority=self.address)
        if self.config.namespace(base.authority) is namespace:
            return base
        port = base.authority.rpartition("]")[2].partition(":")[2]
        return PublicAddress(
            secure=base.secure, authority=f"{namespace.name}:{port}" if port else namespace.name
        )

    def _entity_stats(self, namespace: NamespaceConfig, entity: EntityConfig) -> _EntityStats:
        return self._stats.setdefault(_registry_key(namespace, entity), _EntityStats())

    def listener_count(self, namespace: str, entity: str) -> int:
        return len(self._listeners.get((ascii_lower(namespace), ascii_lower(entity)), []))

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
        return {"entities": entities, "pending_rendezvous": len(self._accepts)}

    async def reconfigure(self, config: RelayConfig) -> None:
        """Serve ``config`` from now on. Listeners of entities that are gone are closed with
        1001; every other connection is unaffected, even if its key was changed."""
        self.config = config
        for (namespace_name, entity_name), listeners in list(self._listeners.items()):
            namespace = config.namespace(namespace_name)
            if namespace is None or namespace.entity(entity_name) is None:
                for listener in list(listeners):
                    await listener.socket.release(1001, "The hybrid connection was removed")

    async def shutdown(self) -> None:
        """Tell every listener the relay is going away (close 1001), so they reconnect."""
        for listeners in self._listeners.values():
            for listener in list(listeners):
                await listener.socket.release(1001, "The relay is shutting down")

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one accepted connection until it ends."""
        async with stream:
            # A relayed WebSocket lives long: nothing of its handshake is kept while it does.
            way = await self._serve_request(stream)
            if way is None:
                return
            try:
                await _pump_one_way(way)
            except Exception as error:
                if not _ended_by_peer(error):
                    logger.exception("a relayed WebSocket ended by an error")

    async def _serve_request(self, stream: anyio.abc.ByteStream) -> _OneWay | None:
        """Read the request and serve it; a relayed WebSocket comes back as the direction this
        connection's task is to pump."""
        http = HttpServer()
        request = None
        # Until its head has arrived, a connection may be shed to free its descriptor.
        with self._admission.awaiting_head():
            try:
                with anyio.fail_after(_HEAD_TIMEOUT):
                    request = await _read_head(stream, http)
            except InvalidRequestError as error:
                await self._refuse(stream, http, None, _unreadable(error))
                return None
            except (TimeoutError, RemoteProtocolError, *STREAM_ERRORS):
                return None
        if request is None:
            return None
        remote = _remote_endpoint(stream)
        try:
            self._admit_client(remote)
            return await self._route(stream, http, request, remote)
        except _Refusal as refusal:
            await self._refuse(stream, http, request, refusal)
        except InvalidRequestError as error:  # a later request on the connection
            await self._refuse(stream, http, None, _unreadable(error))
        except Exception as error:
            if _ended_by_peer(error):
                # A client that went away, stalled or broke HTTP mid-way (a cut body, a
                # malformed later request) is not the relay's error: its connection just ends.
                logger.debug("connection for %s ended by its peer", _loggable(request.target))
            else:
                # One connection's trouble (a bug) ends that connection only; the relay serves
                # on.
                logger.exception("connection for %s ended by an error", _loggable(request.target))
        return None

    def _admit_client(self, remote: RemoteEndpoint | None) -> None:
        rate = self.config.connection_rate
        if not rate or remote is None:
            return
        if len(self._client_buckets) > _MAX_CLIENT_BUCKETS:
            self._forget_idle_clients()
        bucket = self._client_buckets.get(remote.address)
        if bucket is None:
            bucket = self._client_buckets[remote.address] = _Bucket(
                rate, self.config.connection_burst
            )
        if not bucket.take():
            raise _Refusal(429, "Too many connections from this address; slow down and retry")

    def _forget_idle_clients(self) -> None:
        """Keep the table of client addresses bounded without forgiving anyone being limited:
        the addresses whose buckets are fullest are forgotten, down to half the bound."""
        buckets = self._client_buckets
        fullest_first = sorted(buckets, key=lambda address: buckets[address].level(), reverse=True)
        for address in fullest_first[: len(buckets) - _MAX_CLIENT_BUCKETS // 2]:
            del buckets[address]

    async def _run_hook(self, hook: Hook | None, info: ConnectionInfo) -> None:
        """Run a hook: :class:`Refused` becomes that refusal, any other failure a 500."""
        if hook is None:
            return
        try:
            await hook(info)
        except Refused as refused:
            raise _Refusal(refused.status, refused.description) from None
        except Exception:
            logger.exception("the %s hook failed", info.kind)
            raise _Refusal(500, "The relay failed to process the request") from None

    # -- routing -----------------------------------------------------------------------------

    async def _route(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        request: IncomingRequest,
        remote: RemoteEndpoint | None,
    ) -> _OneWay | None:
        path = request.target.split("?", 1)[0]
        operations = request.method == "GET" and not request.is_websocket
        if operations and path == "/health":
            await self._send_json(stream, http, 200, {"status": "ok"})
            return None
        if operations and path == "/stats" and not self.config.stats_requires_manage:
            await self._send_json(stream, http, 200, self.stats())
            return None
        host, namespace = self._namespace_for(request)
        if operations and path == "/stats":  # with stats_requires_manage
            self._verify_namespace(_operations_token(request), host, namespace)
            await self._send_json(stream, http, 200, self.stats(namespace))
            return None
        if operations and path == _PRESENCE_PATH:
            await self._serve_presence(stream, http, request, namespace)
            return None
        url, entity = self._resolve(request, host, namespace)
        if not request.is_websocket:
            if not url.is_http:
                raise _Refusal(400, "A $hc address needs a WebSocket upgrade")
            if request.method == "GET" and "api-version" in parse_qs(url.query):
                await self._describe_entity(stream, http, request, url, namespace, entity)
                return None
            await self._serve_http_sender(stream, http, request, remote, namespace, entity, url)
            return None
        if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in (
            request.headers
        ):
            raise _Refusal(400, "A WebSocket upgrade request carries no body")
        action = url.action or "connect"
        if action == "connect":
            return await self._serve_sender(stream, http, request, remote, namespace, entity, url)
        if action == "accept":
            return await self._serve_accept_rendezvous(
                stream, http, request, url, namespace, entity
            )
        if action == "listen":
            await self._serve_listener(stream, http, request, remote, namespace, entity, url)
        elif action == "request":
            await self._serve_http_rendezvous(stream, http, url, namespace, entity)
        else:
            raise _Refusal(400, f"Unknown action {action!r}")
        return None

    def _namespace_for(self, request: IncomingRequest) -> tuple[str, NamespaceConfig]:
        """The request's ``Host`` and the namespace it selects.

        The Host header only selects a namespace; it never shapes an address the relay hands
        out (those come from :meth:`public_address`), and it must be a host to do even that.
        """
        host = request.headers.get("host", "")
        try:
            normalize_namespace(host)
        except InvalidUrlError as error:
            raise _Refusal(400, f"The Host header is not a host name: {error}") from None
        namespace = self.config.namespace(host)
        if namespace is None:
            raise _Refusal(404, f"No namespace is served at host {host!r}", code="EndpointNotFound")
        return host, namespace

    def _resolve(
        self, request: IncomingRequest, host: str, namespace: NamespaceConfig
    ) -> tuple[RelayUrl, EntityConfig]:
        """The request's address and the entity of ``namespace`` it names (404 otherwise)."""
        if request.is_websocket:
            scheme = "wss" if self.secure else "ws"
        else:
            scheme = "https" if self.secure else "http"
        try:
            url = parse_relay_url(f"{scheme}://{host}{request.target}", entities=namespace.hosted)
        except InvalidUrlError as error:
            message = f"Endpoint does not exist: {error}"
            raise _Refusal(404, message, code="EndpointNotFound") from None
        entity = namespace.entity(url.entity)
        if entity is None:  # the kernel and the configuration disagree on a name: never serve it
            raise _Refusal(404, "Endpoint does not exist", code="EndpointNotFound")
        return url, entity

    def _authorize(
        self,
        request: IncomingRequest,
        url: RelayUrl,
        namespace: NamespaceConfig,
        entity: EntityConfig,
        right: Right,
        *,
        http: bool = False,
    ) -> tuple[str | None, float | None]:
        """Check the request's token for ``right``; return the header it came in and its expiry."""
        if right is Right.SEND and not entity.requires_client_authorization:
            # Anonymous senders: nothing to check, and an Authorization header is the app's.
            return None, None
        token, header = request_token(request.headers, url.relay_parameters, http=http)
        if not token:
            raise _Refusal(
                401,
                "A token is required (ServiceBusAuthorization header or sb-hc-token)",
                code="TokenMissingOrInvalid",
            )
        host = request.headers.get("host", namespace.name)
        return header, self._verify(token, host, namespace, entity, right)

    def _verify(
        self, token: str, host: str, namespace: NamespaceConfig, entity: EntityConfig, right: Right
    ) -> float:
        """Check a token for ``right``; return its expiry.

        The token's resource must name the host the client addressed (a token for another
        namespace does not open this one) and this entity, or the namespace root.
        """
        target = f"http://{host}/{entity.name}"
        granting = self.config.keys_for(namespace, entity, right)
        now = time.time()
        verdict = verify_sas_token(token, keys=granting, target=target, now=now)
        if verdict.valid:
            assert verdict.token is not None
            self._check_lifetime(verdict.token.expiry, now)
            return float(verdict.token.expiry)
        # Signed by a rule without the right, or for another path (403), or not validly signed
        # at all (401)?
        every_rule = self.config.keys_for(namespace, entity, Right(0))
        verdict = verify_sas_token(token, keys=every_rule, target=target, now=time.time())
        if verdict.valid:
            granted = _RIGHT_NAMES.get(right, "access")
            raise _Refusal(403, f"The token's rule does not grant {granted} here")
        if verdict.outcome is SasOutcome.WRONG_RESOURCE:  # validly signed, for another path
            raise _Refusal(403, f"The token does not grant access here: {verdict.detail}")
        raise _Refusal(401, f"Invalid token: {verdict.detail}", code="TokenMissingOrInvalid")

    # -- listeners ---------------------------------------------------------------------------

    async def _serve_listener(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        request: IncomingRequest,
        remote: RemoteEndpoint | None,
        namespace: NamespaceConfig,
        entity: EntityConfig,
        url: RelayUrl,
    ) -> None:
        _header, expires_at = self._authorize(request, url, namespace, entity, Right.LISTEN)
        listeners = self._listeners.setdefault(_registry_key(namespace, entity), [])
        if len(listeners) >= self.config.max_listeners_per_entity:
            limit = self.config.max_listeners_per_entity
            raise _Refusal(403, f"Quota exceeded: at most {limit} listeners per hybrid connection")
        answer, trailing = http.accept_websocket()
        await self._write(stream, answer)
        channel = ServiceControlChannel(now=time.monotonic(), trailing=trailing)
        listener = _Listener(
            id=url.tracking_id or str(uuid.uuid4()),
            socket=ChannelSocket(stream, channel, write_timeout=self.config.write_timeout),
            namespace=namespace,
            entity=entity,
            expires_at=expires_at,
            host=request.headers.get("host", namespace.name),
        )
        info = ConnectionInfo(
            kind="listener",
            namespace=namespace.name,
            entity=entity.name,
            remote_endpoint=remote,
            headers=forwarded_connect_headers(request.headers),
            listener_id=listener.id,
        )
        try:
            await self._run_hook(self.hooks.listener_connected, info)
        except _Refusal:
            channel.close(1011, "The relay failed to set up this listener", now=time.monotonic())
            await listener.socket.flush()
            return
        listeners.append(listener)
        self._entity_stats(namespace, entity)
        self._publish("online", listener)
        shown_id = _loggable(listener.id)
        logger.info("listener %s online on %s/%s", shown_id, namespace.name, entity.name)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._expire_listener_token, listener)
                await listener.socket.run(lambda event: self._on_listener_event(listener, event))
                tasks.cancel_scope.cancel()
        finally:
            listeners.remove(listener)
            # Whoever waits on this listener hears at once that it is gone.
            for exchange in listener.exchanges.values():
                exchange.answered.set()
            for pending in listener.accepts:
                pending.listener_lost = True
                pending.settled.set()
            self._publish("offline", listener)
            if listener.socket.stalled:
                logger.warning(
                    "listener %s on %s/%s left the relay's writes unread for %g s: closed it",
                    shown_id,
                    namespace.name,
                    entity.name,
                    self.config.write_timeout,
                )
            logger.info("listener %s offline on %s/%s", shown_id, namespace.name, entity.name)
            with anyio.CancelScope(shield=True), suppress(_Refusal):
                await self._run_hook(self.hooks.listener_disconnected, info)

    async def _expire_listener_token(self, listener: _Listener) -> None:
        """Close the control channel with 1008 when its newest token expires."""
        while listener.expires_at is not None:
            with anyio.CancelScope() as listener.expiry_wait:
                await anyio.sleep(max(0.0, listener.expires_at - time.time()))
            if listener.expiry_wait.cancel_called:
                continue  # renewed: wait for the new token's expiry, sooner or later
            if time.time() >= listener.expires_at:
                listener.channel.close(1008, "The token expired", now=time.monotonic())
                await listener.socket.flush()
                return

    async def _on_listener_event(self, listener: _Listener, event: Event) -> None:
        if isinstance(event, ResponseReceived):
            exchange = listener.exchanges.get(event.response.request_id)
            if exchange is not None and event.body is not None:
                exchange.inline = (event.response, event.body)
                exchange.answered.set()
        elif isinstance(event, TokenRenewed):
            try:
                expires_at = self._verify(
                    event.token, listener.host, listener.namespace, listener.entity, Right.LISTEN
                )
            except _Refusal as refusal:
                listener.channel.close(1008, refusal.message[:120], now=time.monotonic())
            else:
                listener.expires_at = expires_at
                if listener.expiry_wait is not None:
                    listener.expiry_wait.cancel()

    def _pick_listener(
        self,
        namespace: NamespaceConfig,
        entity: EntityConfig,
        headers: Headers,
        tried: Collection[_Listener] = (),
    ) -> _Listener | None:
        """A random eligible listener, other than those already ``tried``."""
        candidates = self._listeners.get(_registry_key(namespace, entity), [])
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

    # -- WebSocket senders -------------------------------------------------------------------

    async def _serve_sender(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        request: IncomingRequest,
        remote: RemoteEndpoint | None,
        namespace: NamespaceConfig,
        entity: EntityConfig,
        url: RelayUrl,
    ) -> _OneWay:
        self._authorize(request, url, namespace, entity, Right.SEND)
        await self._run_hook(
            self.hooks.sender_connecting,
            _info("sender", request, remote, namespace, entity, url),
        )
        expires_at = time.monotonic() + self.config.rendezvous_timeout
        tried: set[_Listener] = set()
        while True:
            listener = self._pick_listener(namespace, entity, request.headers, tried)
            if listener is None:
                if tried:  # every listener it was offered to went away meanwhile
                    raise _Refusal(504, "The listener went away before it accepted the connection")
                raise _Refusal(404, _no_listener(request.headers), code="EndpointNotFound")
            tried.add(listener)
            pending = await self._offer(listener, request, remote, url, expires_at)
            if not pending.listener_lost or time.monotonic() >= expires_at:
                break
        try:
            if pending.rejection is not None:
                status, description = pending.rejection
                raise _Refusal(status, description)
            if pending.listener_socket is None:
                raise _Refusal(504, "The listener did not accept the connection in time")
            return await self._join(stream, http, pending, namespace, entity)
        finally:
            pending.joined.set()

    async def _offer(
        self,
        listener: _Listener,
        request: IncomingRequest,
        remote: RemoteEndpoint | None,
        url: RelayUrl,
        expires_at: float,
    ) -> _PendingAccept:
        """Announce a sender to ``listener`` and wait, until ``expires_at`` at most, for it to
        open the rendezvous, reject it, or go away."""
        namespace, entity = listener.namespace, listener.entity
        rendezvous_id = secrets.token_urlsafe(24)
        pending = _PendingAccept(offered=request.subprotocols, expires_at=expires_at)
        key = (*_registry_key(namespace, entity), rendezvous_id)
        query = f"{url.query}&" if url.query else ""
        address = self.public_address(namespace).url(
            True,
            f"/$hc/{entity.name}{url.suffix}?{query}sb-hc-action=accept&sb-hc-id={rendezvous_id}",
        )
        self._accepts[key] = pending
        listener.accepts.add(pending)
        try:
            with anyio.move_on_after(max(0.0, expires_at - time.monotonic())):
                listener.channel.send_accept(
                    Accept(
                        address=address,
                        id=rendezvous_id,
                        connect_headers=forwarded_connect_headers(request.headers),
                        remote_endpoint=remote,
                    )
                )
                await listener.socket.flush()
                await pending.settled.wait()
        finally:
            self._accepts.pop(key, None)
            listener.accepts.discard(pending)
        return pending

    async def _serve_accept_rendezvous(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        request: IncomingRequest,
        url: RelayUrl,
        namespace: NamespaceConfig,
        entity: EntityConfig,
    ) -> _OneWay | None:
        key = (*_registry_key(namespace, entity), url.tracking_id or "")
        pending = self._accepts.pop(key, None)
        if pending is None or pending.settled.is_set() or time.monotonic() > pending.expires_at:
            raise _Refusal(403, "The rendezvous address is unknown or expired")
        status = url.relay_parameters.get("sb-hc-statuscode")
        if status is not None:
            description = url.relay_parameters.get("sb-hc-statusdescription", "")
            try:
                code = listener_reject_status(status, description)
            except ListenerResponseError as error:
                pending.rejection = (502, _listeners_fault(error, namespace, entity).message)
            else:
                pending.rejection = (code, description or reason_phrase(code))
            pending.settled.set()
            raise _Refusal(410, "Rejection delivered to the sender")
        if any(offer not in pending.offered for offer in request.subprotocols[:1]):
            pending.rejection = (502, "The listener chose a subprotocol the sender did not offer")
            pending.settled.set()
            raise _Refusal(400, "That subprotocol was not offered by the sender")
        pending.listener_socket = (stream, http, request)
        pending.settled.set()
        await pending.joined.wait()
        return pending.listener_way

    async def _join(
        self,
        sender_stream: anyio.abc.ByteStream,
        sender_http: HttpServer,
        pending: _PendingAccept,
        namespace: NamespaceConfig,
        entity: EntityConfig,
    ) -> _OneWay:
        """Answer both handshakes; return the sender's direction, leave the listener's in
        ``pending``."""
        assert pending.listener_socket is not None
        listener_stream, listener_http, listener_request = pending.listener_socket
        subprotocol = listener_request.subprotocols[0] if listener_request.subprotocols else None
        answer, listener_trailing = listener_http.accept_websocket(subprotocol=subprotocol)
        await self._write(listener_stream, answer)
        answer, sender_trailing = sender_http.accept_websocket(subprotocol=subprotocol)
        await self._write(sender_stream, answer)
        now = time.monotonic()
        sender = ChannelSocket(
            sender_stream,
            ServerWebSocket(now=now, trailing=sender_trailing, passes_pings=True),
            self.clock,
        )
        listener = ChannelSocket(
            listener_stream,
            ServerWebSocket(now=now, trailing=listener_trailing, passes_pings=True),
            self.clock,
        )
        stats = self._entity_stats(namespace, entity)
        stats.connections += 1
        rate = self.config.message_rate
        limits = (
            (_Bucket(rate, self.config.message_burst), _Bucket(rate, self.config.message_burst))
            if rate
            else (None, None)
        )
        pending.listener_socket = None
        pending.listener_way = _OneWay(
            listener, sender, _forwarder(listener, sender, stats, False, limits[1])
        )
        return _OneWay(sender, listener, _forwarder(sender, listener, stats, True, limits[0]))

    # -- HTTP senders ------------------------------------------------------------------------

    async def _serve_http_sender(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        request: IncomingRequest,
        remote: RemoteEndpoint | None,
        namespace: NamespaceConfig,
        entity: EntityConfig,
        url: RelayUrl,
    ) -> None:
        rendezvous: ChannelSocket | None = None
        try:
            while True:
                rendezvous = await self._forward_http_request(
                    stream, http, request, remote, namespace, entity, url, rendezvous
                )
                if not http.start_next_request():
                    return
                next_request = None
                with anyio.move_on_after(_HEAD_TIMEOUT):
                    next_request = await _next_head(stream, http, rendezvous)
                if next_request is None:
                    return
                request = next_request
                host, next_namespace = self._namespace_for(request)
                url, next_entity = self._resolve(request, host, next_namespace)
                if next_entity is not entity:
                    raise _Refusal(400, "A connection serves one hybrid connection")
        finally:
            if rendezvous is not None:
                await rendezvous.release()

    async def _forward_http_request(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        request: IncomingRequest,
        remote: RemoteEndpoint | None,
        namespace: NamespaceConfig,
        entity: EntityConfig,
        url: RelayUrl,
        rendezvous: ChannelSocket | None,
    ) -> ChannelSocket | None:
        """Send one request to a listener and its answer back; return the rendezvous to reuse."""
        if request.method == "CONNECT":
            raise _Refusal(405, "CONNECT is not allowed")
        token_header, _ = self._authorize(request, url, namespace, entity, Right.SEND, http=True)
        await self._run_hook(
            self.hooks.http_request, _info("http", request, remote, namespace, entity, url)
        )
        stats = self._entity_stats(namespace, entity)
        stats.requests += 1
        if rendezvous is not None and rendezvous.channel.state is not ChannelState.OPEN:
            # The listener let this sender's rendezvous go: route the request afresh.
            await rendezvous.release()
            rendezvous = None
        listener = self._pick_listener(namespace, entity, request.headers)
        if listener is None and rendezvous is None:
            raise _Refusal(502, _no_listener(request.headers), code="EndpointNotFound")
        request_id = secrets.token_urlsafe(24)
        headers = forwarded_request_headers(request.headers, token_header=token_header)
        target = f"/{entity.name}{url.suffix}" + (f"?{url.query}" if url.query else "")
        message = Request(
            address=self.public_address(namespace).url(
                True, f"/$hc/{entity.name}?sb-hc-action=request&sb-hc-id={request_id}"
            ),
            id=request_id,
            request_target=target,
            method=request.method,
            request_headers=headers,
            remote_endpoint=remote,
            body=None,
        )
        length = request.headers.get("content-length")
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        header_bytes = sum(len(k) + len(v) + 4 for k, v in headers.items())
        small = (
            not chunked
            and (length is None or (length.isdigit() and int(length) <= INLINE_BODY_LIMIT))
            and header_bytes <= INLINE_HEADERS_LIMIT
        )
        await self._write(stream, http.continue_if_expected())
        exchange = _HttpExchange(
            request_id=request_id, expires_at=time.monotonic() + self.config.request_timeout
        )
        owner = listener if rendezvous is None else None
        if owner is not None:
            owner.exchanges[request_id] = exchange
            self._exchanges[request_id] = (owner, exchange)
        reused = rendezvous
        try:
            with anyio.move_on_after(self.config.request_timeout):
                if rendezvous is not None:
                    rendezvous = await self._request_on_rendezvous(
                        stream, http, message, rendezvous, stats
                    )
                    exchange.rendezvous = rendezvous
                elif small:
                    assert owner is not None
                    body = await _read_body(stream, http)
                    stats.bytes_in += len(body)
                    owner.channel.send_request(_with_body(message, bool(body)), body)
                    await owner.socket.flush()
                    await exchange.answered.wait()
                else:
                    assert owner is not None
                    # Only the address: listeners (hyco-https among them) tell an announcement
                    # from an inline request by the absence of everything else.
                    owner.channel.send_request(
                        Request(
                            address=message.address,
                            id=message.id,
                            request_headers=Headers(),
                            request_target=None,
                            method=None,
                            body=None,
                        )
                    )
                    await owner.socket.flush()
                    await exchange.answered.wait()
                    if exchange.rendezvous is not None:
                        await self._request_on_rendezvous(
                            stream, http, message, exchange.rendezvous, stats
                        )
                await self._answer(stream, http, exchange, namespace, stats)
                return exchange.rendezvous or rendezvous
            raise _Refusal(
                504,
                "The request was routed to the listener but the listener did not respond in the "
                "required time",
                code="GatewayTimeout",
            )
        except BaseException:
            if exchange.rendezvous is not None and exchange.rendezvous is not reused:
                with anyio.CancelScope(shield=True):
                    await exchange.rendezvous.release()
            raise
        finally:
            self._exchanges.pop(request_id, None)
            if owner is not None:
                owner.exchanges.pop(request_id, None)

    async def _request_on_rendezvous(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        message: Request,
        rendezvous: ChannelSocket,
        stats: _EntityStats,
    ) -> ChannelSocket:
        """Send the full request over the rendezvous, streaming the sender's body."""
        channel = rendezvous.channel
        assert isinstance(channel, ServiceHttpRendezvous)
        first = await _next_body_event(stream, http)
        has_body = isinstance(first, BodyPiece)
        channel.send_request(_with_body(message, has_body))
        await rendezvous.flush()
        event = first
        while isinstance(event, BodyPiece):
            stats.bytes_in += len(event.data)
            following = await _next_body_event(stream, http)
            if channel.state is ChannelState.OPEN:  # the listener may answer before reading all
                channel.send_body(event.data, final=isinstance(following, BodyEnd))
                await rendezvous.flush()
            event = following
        return rendezvous

    async def _answer(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        exchange: _HttpExchange,
        namespace: NamespaceConfig,
        stats: _EntityStats,
    ) -> None:
        """Write the listener's answer to the HTTP sender."""
        if exchange.inline is not None:
            response, body = exchange.inline
            try:
                check_listener_response(response)
            except ListenerResponseError as error:
                raise _listeners_fault(error, namespace, None) from None
            await stream.send(_response_head(http, response, namespace, len(body)))
            await stream.send(http.send_body(body) + http.end_response())
            stats.bytes_out += len(body)
            return
        rendezvous = exchange.rendezvous
        if rendezvous is None:
            raise _Refusal(502, "The listener went away before it answered", code="BadGateway")
        started = False
        unsendable: ListenerResponseError | None = None
        done = anyio.Event()

        async def relay_answer(event: Event) -> None:
            nonlocal started, unsendable
            if isinstance(event, ResponseReceived):
                try:
                    check_listener_response(event.response)
                except ListenerResponseError as error:
                    unsendable = error
                    done.set()
                    return
                started = True
                await stream.send(_response_head(http, event.response, namespace, None))
                if event.body is not None:
                    await stream.send(http.end_response())
                    done.set()
            elif isinstance(event, ResponseBodyReceived):
                stats.bytes_out += len(event.data)
                await stream.send(http.send_body(event.data))
                if event.final:
                    await stream.send(http.end_response())
                    done.set()

        await _run_until(rendezvous, relay_answer, done)
        if unsendable is not None:
            raise _listeners_fault(unsendable, namespace, None)
        if not done.is_set():
            if started:
                raise _Abort
            raise _Refusal(502, "The listener closed the rendezvous before it answered")

    async def _serve_http_rendezvous(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        url: RelayUrl,
        namespace: NamespaceConfig,
        entity: EntityConfig,
    ) -> None:
        entry = self._exchanges.get(url.tracking_id or "")
        if entry is None or entry[1].answered.is_set():
            raise _Refusal(400, "Unknown or expired request rendezvous")
        owner, exchange = entry
        if _registry_key(owner.namespace, owner.entity) != _registry_key(namespace, entity):
            raise _Refusal(400, "Unknown or expired request rendezvous")
        answer, trailing = http.accept_websocket()
        await self._write(stream, answer)
        socket = ChannelSocket(
            stream,
            ServiceHttpRendezvous(now=time.monotonic(), trailing=trailing),
            write_timeout=self.config.write_timeout,
        )
        exchange.rendezvous = socket
        exchange.answered.set()
        await socket.wait_released()

    # -- operations --------------------------------------------------------------------------

    async def _describe_entity(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        request: IncomingRequest,
        url: RelayUrl,
        namespace: NamespaceConfig,
        entity: EntityConfig,
    ) -> None:
        """The management read the .NET SDK's GetRuntimeInformationAsync makes (any right)."""
        self._authorize(request, url, namespace, entity, Right(0))
        listeners = self.listener_count(namespace.name, entity.name)
        created = self.started_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        address = self.public_address(namespace).url(False, f"/{entity.name}")
        body = (
            '<entry xmlns="http://www.w3.org/2005/Atom">'
            f"<id>{xml_escape(address)}</id>"
            f'<title type="text">{xml_escape(entity.name)}</title>'
            f"<updated>{created}</updated>"
            '<content type="application/xml">'
            f'<HybridConnectionDescription xmlns="{_MANAGEMENT_NAMESPACE}" '
            'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
            f"<CreatedAt>{created}</CreatedAt><UpdatedAt>{created}</UpdatedAt>"
            f"<ListenerCount>{listeners}</ListenerCount>"
            "<RequiresClientAuthorization>"
            f"{str(entity.requires_client_authorization).lower()}"
            "</RequiresClientAuthorization>"
            "</HybridConnectionDescription></content></entry>"
        ).encode()
        headers = [("Content-Type", "application/atom+xml;type=entry;charset=utf-8")]
        await self._write(
            stream,
            http.start_response(200, "OK", headers, content_length=len(body))
            + http.send_body(body)
            + http.end_response(),
        )

    async def _serve_presence(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        request: IncomingRequest,
        namespace: NamespaceConfig,
    ) -> None:
        """Server-sent events of listeners going online and offline (needs Manage)."""
        host = request.headers.get("host", namespace.name)
        token = _operations_token(request)
        wanted = _query_parameters(request).get("entity")
        key: tuple[str, str] | None = None
        if wanted:
            entity = namespace.entity(wanted)
            if entity is None:
                raise _Refusal(404, f"No hybrid connection {wanted!r}", code="EndpointNotFound")
            self._verify(token, host, namespace, entity, Right.MANAGE)
            key = _registry_key(namespace, entity)
        else:
            self._verify_namespace(token, host, namespace)
        sender, receiver = anyio.create_memory_object_stream[str](256)
        for (space, name), listeners in self._listeners.items():
            if space == namespace.name and key in (None, (space, name)):
                for listener in listeners:
                    sender.send_nowait(_presence_event("online", listener, len(listeners)))
        subscription = (key or (namespace.name, ""), sender)
        self._presence.append(subscription)
        headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        try:
            await stream.send(http.start_response(200, "OK", headers, content_length=None))
            async with receiver:
                while True:
                    with anyio.move_on_after(15):
                        message = await receiver.receive()
                        await stream.send(http.send_body(message.encode()))
                        continue
                    await stream.send(http.send_body(b": keep-alive\n\n"))
        except (anyio.EndOfStream, *STREAM_ERRORS):
            return
        finally:
            self._presence.remove(subscription)
            sender.close()

    def _verify_namespace(self, token: str, host: str, namespace: NamespaceConfig) -> None:
        keys: dict[str, list[str]] = {}
        for rule in namespace.rules:
            if Right.MANAGE in rule.rights:
                keys.setdefault(rule.name, []).extend(rule.keys)
        now = time.time()
        verdict = verify_sas_token(token, keys=keys, target=f"http://{host}/", now=now)
        if not verdict.valid:
            raise _Refusal(
                401, f"A namespace Manage token is required: {verdict.detail}", code="Unauthorized"
            )
        assert verdict.token is not None
        self._check_lifetime(verdict.token.expiry, now)

    def _check_lifetime(self, expiry: int, now: float) -> None:
        """Refuse a valid token that expires further ahead than ``max_token_lifetime``: a
        stolen token is then worth that long at most."""
        limit = self.config.max_token_lifetime
        if limit and expiry - now > limit:
            raise _Refusal(
                401,
                f"The token expires in {expiry - now:.0f} s; this relay accepts tokens that "
                f"expire within {limit:g} s: ask for a shorter-lived token",
                code="TokenMissingOrInvalid",
            )

    def _publish(self, kind: str, listener: _Listener) -> None:
        key = _registry_key(listener.namespace, listener.entity)
        count = len(self._listeners.get(key, []))
        message = _presence_event(kind, listener, count)
        for (space, name), subscriber in list(self._presence):
            if space == key[0] and name in ("", key[1]):
                try:
                    subscriber.send_nowait(message)
                except anyio.WouldBlock:
                    subscriber.close()  # a subscriber that cannot keep up is dropped

    # -- answers -----------------------------------------------------------------------------

    async def _write(self, stream: anyio.abc.ByteStream, data: bytes) -> None:
        """Write a short answer; a peer leaving it unread past the write timeout makes this
        raise :class:`TimeoutError`, which ends its connection as the peer's doing."""
        with anyio.fail_after(self.config.write_timeout):
            await stream.send(data)

    async def _send_json(
        self, stream: anyio.abc.ByteStream, http: HttpServer, status: int, document: object
    ) -> None:
        body = json.dumps(document, indent=2).encode()
        headers = [("Content-Type", "application/json")]
        await self._write(
            stream,
            http.start_response(status, reason_phrase(status), headers, content_length=len(body))
            + http.send_body(body)
            + http.end_response(),
        )

    async def _refuse(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        request: IncomingRequest | None,
        refusal: _Refusal,
    ) -> None:
        """Answer with ``refusal``'s status and a reason carrying a tracking id (and, to HTTP
        senders, as JSON); ``request`` is ``None`` for a request that could not be read."""
        host = request.headers.get("host", "") if request is not None else ""
        websocket = request is not None and request.is_websocket
        logger.info(
            "refused %s: %s %s",
            "a malformed request"
            if request is None
            else f"{_loggable(request.method)} {_loggable(request.target)}",
            refusal.status,
            _loggable(refusal.message),
        )
        try:
            await self._write(stream, _refusal_answer(http, refusal, host, websocket=websocket))
        except (LocalProtocolError, TimeoutError, *STREAM_ERRORS):
            # A response already under way cannot be replaced: the connection just ends.
            return
        await _drain(stream)


def _refusal_answer(http: HttpServer, refusal: _Refusal, host: str, *, websocket: bool) -> bytes:
    """The whole answer to a refused client: the status, a reason phrase carrying a tracking
    id (as the service's do) and, but for WebSocket handshakes and a delivered rejection, the
    same as a JSON error body."""
    try:
        tracker = normalize_namespace(host)
    except InvalidUrlError:
        tracker = "-"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    message = refusal.message.rstrip(". ")
    reason = f"{message}. TrackingId:{uuid.uuid4()}, SystemTracker:{tracker}, Timestamp:{stamp}"
    reason = reason.replace("\r", " ").replace("\n", " ")
    body = b""
    headers: list[tuple[str, str]] = []
    if not websocket and refusal.status != 410:
        body = json.dumps({"error": {"code": refusal.code, "message": reason}}).encode()
        headers.append(("Content-Type", "application/json"))
    return http.refuse(refusal.status, reason, headers=headers, body=body)


async def _drain(stream: anyio.abc.ByteStream) -> None:
    """Read and drop what a refused client still sends, for a moment, before its connection
    closes: closing with bytes unread resets the connection, and the client would lose the
    answer it was just sent (a body the relay never read, the rest of a head too large)."""
    with anyio.move_on_after(_DRAIN_TIME), suppress(*STREAM_ERRORS):
        drained = 0
        while drained < _DRAIN_LIMIT:
            drained += len(await stream.receive(READ_SIZE))


def _listeners_fault(
    error: ListenerResponseError, namespace: NamespaceConfig, entity: EntityConfig | None
) -> _Refusal:
    """The 502 a sender gets for a listener's answer that HTTP cannot carry; the listener's
    mistake is logged once, as a warning (it is not the relay's)."""
    where = namespace.name if entity is None else f"{namespace.name}/{entity.name}"
    logger.warning("a listener on %s answered what cannot be passed on: %s", where, error)
    return _Refusal(502, f"The listener's answer cannot be passed on: {error}", code="BadGateway")


def _unreadable(error: InvalidRequestError) -> _Refusal:
    message = str(error)
    return _Refusal(error.status_code, message[:1].upper() + message[1:])


def _ended_by_peer(error: BaseException) -> bool:
    """Whether ``error`` only says that a peer went away, stalled or broke HTTP (also when a
    task group gathered several such errors)."""
    gathered = getattr(error, "exceptions", None)  # an exception group, on every Python
    if isinstance(gathered, tuple):
        return all(_ended_by_peer(inner) for inner in gathered)
    return isinstance(error, (_Abort, RemoteProtocolError, TimeoutError, *STREAM_ERRORS))


def _loggable(text: str) -> str:
    """Client-supplied text fit for one log line: tokens redacted, control characters (which
    could forge log lines) escaped, cut short."""
    shown = _UNPRINTABLE.sub(lambda match: f"\\x{ord(match[0]):02x}", redact_url(text))
    return shown if len(shown) <= _LOGGED_LIMIT else shown[:_LOGGED_LIMIT] + "..."


def _forwarder(
    source: ChannelSocket,
    target: ChannelSocket,
    stats: _EntityStats,
    inbound: bool,
    limit: _Bucket | None,
) -> Callable[[Event], Awaitable[None]]:
    """Pass each event of one side of a relayed WebSocket on to the other side."""

    async def forward(event: Event) -> None:
        channel = target.channel
        if isinstance(event, ChannelClosed):
            if channel.state is ChannelState.OPEN:
                code, reason = event.code, event.reason
                if code == 1005:  # a close frame without a status: a normal close
                    code = 1000
                elif code in (1006, 1015):  # no close frame at all: not a normal end
                    code, reason = 1011, "The other side's connection was lost"
                channel.close(code, reason, now=time.monotonic())
        elif channel.state is not ChannelState.OPEN:
            return
        elif isinstance(event, MessageReceived):
            if event.final and limit is not None and not limit.take():
                reason = "Message rate limit exceeded"
                source.channel.close(1008, reason, now=time.monotonic())
                channel.close(1008, reason, now=time.monotonic())
                await source.flush()
                await target.flush()
                return
            size = len(event.data)
            if inbound:
                stats.bytes_in += size
            else:
                stats.bytes_out += size
            assert isinstance(channel, ServerWebSocket)
            channel.send_message(event.data, final=event.final)
        elif isinstance(event, PingReceived):
            channel.ping(event.payload)
        elif isinstance(event, PongReceived):
            channel.pong(event.payload)
        await target.flush()

    return forward


async def _pump_one_way(way: _OneWay) -> None:
    """Pass one side's frames to the other until that side has closed. Should this end any
    other way, the other side hears it (1001 when the relay stops, else 1011)."""
    try:
        await way.source.run(way.forward)
    except anyio.get_cancelled_exc_class():
        await _close_other_side(way.target, 1001, "The relay is shutting down")
        raise
    except BaseException:
        await _close_other_side(way.target, 1011, "The relay lost the other side")
        raise


async def _close_other_side(target: ChannelSocket, code: int, reason: str) -> None:
    if target.channel.state is ChannelState.OPEN:
        target.channel.close(code, reason, now=time.monotonic())
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + _HEAD_TIMEOUT):
            await target.flush()


async def _run_until(
    socket: ChannelSocket, on_event: Callable[[Event], Awaitable[None]], done: anyio.Event
) -> None:
    async with anyio.create_task_group() as tasks:

        async def watch() -> None:
            await done.wait()
            tasks.cancel_scope.cancel()

        tasks.start_soon(watch)
        await socket.run(on_event)
        tasks.cancel_scope.cancel()


def _response_head(
    http: HttpServer, response: Response, namespace: NamespaceConfig, length: int | None
) -> bytes:
    headers = add_via(response.response_headers.without(HOP_BY_HOP_HEADERS), namespace.name)
    reason = response.status_description or reason_phrase(response.status_code)
    return http.start_response(
        response.status_code, reason, list(headers.items()), content_length=length
    )


def _with_body(message: Request, body: bool) -> Request:
    return Request(
        address=message.address,
        id=message.id,
        request_target=message.request_target,
        method=message.method,
        request_headers=message.request_headers,
        remote_endpoint=message.remote_endpoint,
        body=body,
    )


async def _next_head(
    stream: anyio.abc.ByteStream, http: HttpServer, rendezvous: ChannelSocket | None
) -> IncomingRequest | None:
    """An HTTP sender's next request head. Meanwhile its idle rendezvous is read, so that the
    listener's pings are answered and its close is noticed (the request then goes to a listener
    afresh instead of failing with 502 on a dead rendezvous)."""
    if rendezvous is None or rendezvous.channel.state is not ChannelState.OPEN:
        return await _read_head(stream, http)
    idle_over = anyio.Event()

    async def ignore(_event: Event) -> None:
        pass

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_run_until, rendezvous, ignore, idle_over)
        try:
            request = await _read_head(stream, http)
        finally:
            idle_over.set()
    return request


async def _read_head(stream: anyio.abc.ByteStream, http: HttpServer) -> IncomingRequest | None:
    while True:
        event = http.next_event()
        if isinstance(event, IncomingRequest):
            return event
        try:
            data = await stream.receive(READ_SIZE)
        except anyio.EndOfStream:
            return None
        http.receive_data(data)


async def _next_body_event(stream: anyio.abc.ByteStream, http: HttpServer) -> BodyPiece | BodyEnd:
    while True:
        event = http.next_event()
        if isinstance(event, BodyPiece | BodyEnd):
            return event
        try:
            data = await stream.receive(READ_SIZE)
        except anyio.EndOfStream:
            data = b""
        http.receive_data(data)


async def _read_body(stream: anyio.abc.ByteStream, http: HttpServer) -> bytes:
    body = bytearray()
    while isinstance(event := await _next_body_event(stream, http), BodyPiece):
        body += event.data
    return bytes(body)


def _half_the_descriptors() -> int:
    """Half the descriptors this process may open (0, no limit, where that is unknown)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return 0
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 0 if soft == resource.RLIM_INFINITY else max(1, soft // 2)


async def _turn_away(stream: anyio.abc.SocketStream, secure: bool) -> None:
    """Answer a client over its address's connection cap with 429 before its request is read
    (holding the connection open to read one is what the cap prevents; on TLS, the handshake
    too), then close."""
    refusal = _Refusal(
        429,
        "Too many connections from this address: close some, or ask the relay's operator to "
        "raise max_connections_per_address",
    )
    with anyio.move_on_after(1.0), suppress(*STREAM_ERRORS):
        if not secure:
            await stream.send(_refusal_answer(HttpServer(), refusal, "", websocket=False))
    await anyio.aclose_forcefully(stream)


def _remote_endpoint(stream: anyio.abc.ByteStream) -> RemoteEndpoint | None:
    try:
        address = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return None
    if isinstance(address, tuple):
        return RemoteEndpoint(address=str(address[0]), port=int(address[1]))
    return None


def _info(
    kind: str,
    request: IncomingRequest,
    remote: RemoteEndpoint | None,
    namespace: NamespaceConfig,
    entity: EntityConfig,
    url: RelayUrl,
) -> ConnectionInfo:
    return ConnectionInfo(
        kind=kind,
        namespace=namespace.name,
        entity=entity.name,
        remote_endpoint=remote,
        headers=forwarded_connect_headers(request.headers).without(["authorization"])
        if kind == "http"
        else forwarded_connect_headers(request.headers),
        suffix=url.suffix,
        query=url.query,
        method=request.method,
    )


def _registry_key(namespace: NamespaceConfig, entity: EntityConfig) -> tuple[str, str]:
    """How the relay files an entity's listeners, rendezvous and counters: by names compared
    ASCII case-insensitively (a namespace's name is stored lower-cased already)."""
    return namespace.name, ascii_lower(entity.name)


def _query_parameters(request: IncomingRequest) -> dict[str, str]:
    return {k.lower(): v for k, v in parse_qsl(request.target.partition("?")[2])}


def _operations_token(request: IncomingRequest) -> str:
    """The Manage token an operations request (``/$presence``, ``/stats``) carries."""
    token, _header = request_token(request.headers, _query_parameters(request), http=True)
    if not token:
        raise _Refusal(401, "A Manage token is required", code="TokenMissingOrInvalid")
    return token


def _presence_event(kind: str, listener: _Listener, count: int) -> str:
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


def _no_listener(headers: Headers) -> str:
    if "microsoft-relay-allowedlisteners" in headers or (
        "microsoft-relay-disallowedlisteners" in headers
    ):
        return "None of the connected listeners meet the criteria"
    return "No listener is connected to this hybrid connection"


@asynccontextmanager
async def serve_relay(
    config: RelayConfig,
    *,
    hooks: RelayHooks | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Relay]:
    """Run a relay in this process for the duration of the ``async with`` block.

    With ``ssl_context`` it serves ``wss://`` and ``https://`` (see :mod:`hyco_relay.tls`).
    On exit it first stops accepting, then tells listeners to reconnect (close 1001), then
    ends every connection: a listener reconnecting at once finds the port closed instead of a
    backlog nobody will serve.
    """
    relay = Relay(config, hooks=hooks, secure=ssl_context is not None)
    listener = await anyio.create_tcp_listener(local_host=config.host, local_port=config.port)
    default_cap = _half_the_descriptors()
    relay.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))

    async def handle(stream: anyio.abc.SocketStream) -> None:
        remote = _remote_endpoint(stream)
        address = remote.address if remote is not None else None
        cap = relay.config.max_connections_per_address
        if not relay._admission.enter(address, default_cap if cap is None else cap):
            await _turn_away(stream, ssl_context is not None)
            return
        try:
            if ssl_context is None:
                await relay.handle(stream)
                return
            try:
                with relay._admission.awaiting_head() as waiting, anyio.fail_after(_HEAD_TIMEOUT):
                    secure = await TLSStream.wrap(
                        stream, server_side=True, ssl_context=ssl_context, standard_compatible=False
                    )
            except (TimeoutError, ssl.SSLError, *STREAM_ERRORS):
                await stream.aclose()
                return
            if waiting.cancelled_caught:  # shed while shaking hands
                await stream.aclose()
                return
            await relay.handle(secure)
        finally:
            relay._admission.leave(address)

    async def accept(
        bound: anyio.abc.Listener[anyio.abc.SocketStream], connections: anyio.abc.TaskGroup
    ) -> None:
        assert isinstance(bound, anyio.abc.SocketListener)
        pauses = 0
        warned_at = -_RESOURCE_WARNING_INTERVAL
        while True:
            try:
                stream = await bound.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except OSError as error:
                if error.errno not in _RESOURCE_ERRNOS:
                    raise
                # Out of descriptors (or memory): every connection being served goes on. Free
                # some by shedding connections that have sent nothing yet, then try again.
                if time.monotonic() - warned_at >= _RESOURCE_WARNING_INTERVAL:
                    warned_at = time.monotonic()
                    logger.warning(
                        "cannot accept connections (%s): pausing, and closing idle connections "
                        "that have not sent a request; raise the descriptor limit (ulimit -n) "
                        "or lower max_connections_per_address",
                        error.strerror or error,
                    )
                shed = relay._admission.shed()
                logger.debug("shed %d idle connections", shed)
                await anyio.sleep(_ACCEPT_PAUSES[min(pauses, len(_ACCEPT_PAUSES) - 1)])
                pauses += 1
                continue
            if pauses:
                logger.debug("accepting connections again after %d pauses", pauses)
                pauses = 0
            connections.start_soon(handle, stream)

    async with anyio.create_task_group() as connections:
        connections.start_soon(relay.clock.run)
        try:
            async with anyio.create_task_group() as acceptor:
                for bound in listener.listeners:
                    acceptor.start_soon(accept, bound, connections)
                logger.info("relay listening on %s", relay.address)
                try:
                    yield relay
                finally:
                    acceptor.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await listener.aclose()
                await relay.shutdown()
            connections.cancel_scope.cancel()

"""The local relay: Azure Relay Hybrid Connections, served on one port with anyio.

Every connection starts as HTTP/1.1. Its target and ``sb-hc-action`` decide what it is:

- ``listen``: a listener's control channel (token with Listen; at most 25 per entity);
- ``connect`` (or no action): a sender's WebSocket (token with Send, unless anonymous senders
  are allowed). The relay announces it to a random listener with ``accept`` and waits for that
  listener to open the rendezvous (``accept``) or to reject it;
- ``accept`` / ``request``: a listener opening a rendezvous the relay announced;
- anything else without ``$hc``: an HTTP sender's request, forwarded inline or over a rendezvous.

The protocol itself lives in :mod:`hyco_core`. This module is the relay's front: the
:class:`Relay` and its public API, each connection's error boundary, and :func:`serve_relay`,
which accepts connections. Each part of the serving lives in a module of its own:
:mod:`.routing` tells them apart, :mod:`.listeners`, :mod:`.websockets`, :mod:`.http` and
:mod:`.operations` serve them, :mod:`.registry` files listeners and rendezvous,
:mod:`.admission` and :mod:`.authorization` decide who gets in, :mod:`.refusals` answers who
does not.
"""

from __future__ import annotations

import errno
import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from hyco_core import RemoteEndpoint, RemoteProtocolError
from hyco_core.service import HttpServer, IncomingRequest, InvalidRequestError
from hyco_transports.pump import STREAM_ERRORS, Clock

from .admission import (
    TOO_MANY_CONNECTIONS,
    Admission,
    ConnectionRates,
    half_the_descriptors,
    turn_away,
)
from .config import (
    NamespaceConfig,
    PublicAddress,
    RelayConfig,
    connection_string_for,
    parse_public_url,
)
from .hooks import RelayHooks
from .incoming import HEAD_TIMEOUT, read_head, remote_endpoint
from .refusals import Refusal, ended_by_peer, loggable, refuse, unreadable
from .registry import Registry
from .rendezvous import OneWay
from .routing import route
from .websockets import pump_one_way

__all__ = ["Relay", "serve_relay"]

logger = logging.getLogger("hyco.relay")

# accept() failing for want of descriptors or memory: the relay pauses accepting, sheds idle
# connections and tries again, instead of ending.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_PAUSES = (0.05, 0.1, 0.2, 0.5, 1.0)
_RESOURCE_WARNING_INTERVAL = 60.0  # an attack lasting hours logs a line a minute, not per try


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
        self.registry = Registry()
        self._connection_rates = ConnectionRates()
        self._admission = Admission()
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

    def listener_count(self, namespace: str, entity: str) -> int:
        return self.registry.listener_count(namespace, entity)

    def stats(self, namespace: NamespaceConfig | None = None) -> dict[str, object]:
        """The counters of every entity, or of ``namespace``'s only, and how many senders wait
        for a listener to open their rendezvous."""
        return self.registry.stats(namespace)

    async def reconfigure(self, config: RelayConfig) -> None:
        """Serve ``config`` from now on. Listeners of entities that are gone are closed with
        1001; every other connection is unaffected, even if its key was changed."""
        self.config = config
        for (namespace_name, entity_name), listeners in list(self.registry.listeners.items()):
            namespace = config.namespace(namespace_name)
            if namespace is None or namespace.entity(entity_name) is None:
                for listener in list(listeners):
                    await listener.socket.release(1001, "The hybrid connection was removed")

    async def shutdown(self) -> None:
        """Tell every listener the relay is going away (close 1001), so they reconnect."""
        for listeners in self.registry.listeners.values():
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
                await pump_one_way(way)
            except Exception as error:
                if not ended_by_peer(error):
                    logger.exception("a relayed WebSocket ended by an error")

    async def _serve_request(self, stream: anyio.abc.ByteStream) -> OneWay | None:
        """Read the request and serve it; a relayed WebSocket comes back as the direction this
        connection's task is to pump."""
        http = HttpServer()
        request = None
        # Until its head has arrived, a connection may be shed to free its descriptor.
        with self._admission.awaiting_head():
            try:
                with anyio.fail_after(HEAD_TIMEOUT):
                    request = await read_head(stream, http)
            except InvalidRequestError as error:
                await self._refuse(stream, http, None, unreadable(error))
                return None
            except (TimeoutError, RemoteProtocolError, *STREAM_ERRORS):
                return None
        if request is None:
            return None
        remote = remote_endpoint(stream)
        try:
            self._admit_client(remote)
            return await route(self, stream, http, request, remote)
        except Refusal as refusal:
            await self._refuse(stream, http, request, refusal)
        except InvalidRequestError as error:  # a later request on the connection
            await self._refuse(stream, http, None, unreadable(error))
        except Exception as error:
            if ended_by_peer(error):
                # A client that went away, stalled or broke HTTP mid-way (a cut body, a
                # malformed later request) is not the relay's error: its connection just ends.
                logger.debug("connection for %s ended by its peer", loggable(request.target))
            else:
                # One connection's trouble (a bug) ends that connection only; the relay serves
                # on.
                logger.exception("connection for %s ended by an error", loggable(request.target))
        return None

    async def _refuse(
        self,
        stream: anyio.abc.ByteStream,
        http: HttpServer,
        request: IncomingRequest | None,
        refusal: Refusal,
    ) -> None:
        self.registry.refused(refusal.status)
        await refuse(stream, http, request, refusal, self.config.write_timeout)

    def _admit_client(self, remote: RemoteEndpoint | None) -> None:
        self._connection_rates.admit(remote, self.config)


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
    default_cap = half_the_descriptors()
    relay.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))

    async def handle(stream: anyio.abc.SocketStream) -> None:
        remote = remote_endpoint(stream)
        address = remote.address if remote is not None else None
        cap = relay.config.max_connections_per_address
        if not relay._admission.enter(address, default_cap if cap is None else cap):
            relay.registry.refused(TOO_MANY_CONNECTIONS)
            await turn_away(stream, ssl_context is not None)
            return
        try:
            if ssl_context is None:
                await relay.handle(stream)
                return
            try:
                with relay._admission.awaiting_head() as waiting, anyio.fail_after(HEAD_TIMEOUT):
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

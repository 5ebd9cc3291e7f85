"""Listeners' control channels: taking a listener into the registry, keeping its token
current, and passing it what arrives for the senders it serves."""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import suppress

import anyio

from hyco_core import Event
from hyco_core.service import (
    ResponseReceived,
    ServiceControlChannel,
    TokenRenewed,
    forwarded_connect_headers,
)
from hyco_transports.pump import ChannelSocket

from .authorization import authorize, verify
from .config import Right
from .context import RelayContext
from .hooks import ConnectionInfo
from .incoming import Incoming
from .refusals import Refusal, loggable, run_hook, write
from .registry import Listener, registry_key

logger = logging.getLogger("hyco.relay")


async def serve_listener(relay: RelayContext, incoming: Incoming) -> None:
    namespace, entity, config = incoming.namespace, incoming.entity, relay.config
    _header, expires_at = authorize(config, incoming, Right.LISTEN)
    listeners = relay.registry.listeners.setdefault(registry_key(namespace, entity), [])
    if len(listeners) >= config.max_listeners_per_entity:
        limit = config.max_listeners_per_entity
        raise Refusal(403, f"Quota exceeded: at most {limit} listeners per hybrid connection")
    answer, trailing = incoming.http.accept_websocket()
    await write(incoming.stream, answer, config.write_timeout)
    channel = ServiceControlChannel(now=time.monotonic(), trailing=trailing)
    listener = Listener(
        id=incoming.url.tracking_id or str(uuid.uuid4()),
        socket=ChannelSocket(incoming.stream, channel, write_timeout=relay.config.write_timeout),
        namespace=namespace,
        entity=entity,
        host=incoming.host,
    )
    info = ConnectionInfo(
        kind="listener",
        namespace=namespace.name,
        entity=entity.name,
        remote_endpoint=incoming.remote,
        headers=forwarded_connect_headers(incoming.request.headers),
        listener_id=listener.id,
    )
    try:
        await run_hook(relay.hooks.listener_connected, info)
    except Refusal:
        channel.close(1011, "The relay failed to set up this listener", now=time.monotonic())
        await listener.socket.flush()
        return
    listeners.append(listener)
    relay.registry.entity_stats(namespace, entity)
    relay.registry.publish("online", listener)
    shown_id = loggable(listener.id)
    logger.info("listener %s online on %s/%s", shown_id, namespace.name, entity.name)
    _expire_token_at(listener, expires_at)
    try:
        await listener.socket.run(lambda event: _on_event(relay, listener, event))
    finally:
        listeners.remove(listener)
        # Whoever waits on this listener hears at once that it is gone.
        for exchange in listener.exchanges.values():
            exchange.answered.set()
        for pending in listener.accepts:
            pending.listener_lost = True
            pending.settled.set()
        relay.registry.publish("offline", listener)
        if listener.socket.stalled:
            logger.warning(
                "listener %s on %s/%s left the relay's writes unread for %g s: closed it",
                shown_id,
                namespace.name,
                entity.name,
                relay.config.write_timeout,
            )
        logger.info("listener %s offline on %s/%s", shown_id, namespace.name, entity.name)
        with anyio.CancelScope(shield=True), suppress(Refusal):
            await run_hook(relay.hooks.listener_disconnected, info)


def _expire_token_at(listener: Listener, expires_at: float | None) -> None:
    """Have the control channel close with 1008 when the token expires: ``expires_at`` is the
    token's own time (Unix seconds), turned into a deadline on the monotonic clock."""
    deadline = None
    if expires_at is not None:
        deadline = time.monotonic() + max(0.0, expires_at - time.time())
    listener.channel.expire_token_at(deadline)


async def _on_event(relay: RelayContext, listener: Listener, event: Event) -> None:
    if isinstance(event, ResponseReceived):
        exchange = listener.exchanges.get(event.response.request_id)
        if exchange is not None and event.body is not None:
            exchange.inline = (event.response, event.body)
            exchange.answered.set()
    elif isinstance(event, TokenRenewed):
        try:
            expires_at = verify(
                relay.config,
                event.token,
                listener.host,
                listener.namespace,
                listener.entity,
                Right.LISTEN,
            )
        except Refusal as refusal:
            listener.channel.close(1008, refusal.message[:120], now=time.monotonic())
        else:
            _expire_token_at(listener, expires_at)

"""Relayed WebSockets: a sender announced to a listener, the listener's rendezvous joined to
it, and the frames pumped between the two."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable

import anyio

from hyco_core import Accept, ChannelClosed, ChannelState, Event, MessageReceived, reason_phrase
from hyco_core.service import (
    ListenerResponseError,
    PingReceived,
    PongReceived,
    ServerWebSocket,
    forwarded_connect_headers,
    listener_reject_status,
    relayed_close,
)
from hyco_transports.pump import ChannelSocket

from .admission import Bucket
from .authorization import authorize
from .config import Right
from .context import RelayContext
from .incoming import HEAD_TIMEOUT, Incoming
from .refusals import Refusal, listeners_fault, run_hook, write
from .registry import EntityStats, Listener, no_listener, registry_key
from .rendezvous import OneWay, PendingAccept


async def serve_sender(relay: RelayContext, incoming: Incoming) -> OneWay:
    authorize(relay.config, incoming, Right.SEND)
    await run_hook(relay.hooks.sender_connecting, incoming.info("sender"))
    expires_at = time.monotonic() + relay.config.rendezvous_timeout
    headers = incoming.request.headers
    tried: set[Listener] = set()
    while True:
        listener = relay.registry.pick(incoming.namespace, incoming.entity, headers, tried)
        if listener is None:
            if tried:  # every listener it was offered to went away meanwhile
                raise Refusal(504, "The listener went away before it accepted the connection")
            raise Refusal(404, no_listener(headers), code="EndpointNotFound")
        tried.add(listener)
        pending = await _offer(relay, listener, incoming, expires_at)
        if not pending.listener_lost or time.monotonic() >= expires_at:
            break
    try:
        if pending.rejection is not None:
            status, description = pending.rejection
            raise Refusal(status, description)
        if pending.listener_socket is None:
            raise Refusal(504, "The listener did not accept the connection in time")
        return await _join(relay, incoming, pending)
    finally:
        pending.joined.set()


async def _offer(
    relay: RelayContext, listener: Listener, incoming: Incoming, expires_at: float
) -> PendingAccept:
    """Announce a sender to ``listener`` and wait, until ``expires_at`` at most, for it to
    open the rendezvous, reject it, or go away."""
    namespace, entity, url = listener.namespace, listener.entity, incoming.url
    rendezvous_id = secrets.token_urlsafe(24)
    pending = PendingAccept(offered=incoming.request.subprotocols, expires_at=expires_at)
    key = (*registry_key(namespace, entity), rendezvous_id)
    address = relay.public_address(namespace).rendezvous(
        entity.name, "accept", rendezvous_id, suffix=url.suffix, query=url.query
    )
    relay.registry.accepts[key] = pending
    listener.accepts.add(pending)
    try:
        with anyio.move_on_after(max(0.0, expires_at - time.monotonic())):
            listener.channel.send_accept(
                Accept(
                    address=address,
                    id=rendezvous_id,
                    connect_headers=forwarded_connect_headers(incoming.request.headers),
                    remote_endpoint=incoming.remote,
                )
            )
            await listener.socket.flush()
            await pending.settled.wait()
    finally:
        relay.registry.accepts.pop(key, None)
        listener.accepts.discard(pending)
    return pending


async def serve_accept_rendezvous(relay: RelayContext, incoming: Incoming) -> OneWay | None:
    namespace, entity, url = incoming.namespace, incoming.entity, incoming.url
    key = (*registry_key(namespace, entity), url.tracking_id or "")
    pending = relay.registry.accepts.pop(key, None)
    if pending is None or pending.settled.is_set() or time.monotonic() > pending.expires_at:
        raise Refusal(403, "The rendezvous address is unknown or expired")
    status = url.relay_parameters.get("sb-hc-statuscode")
    if status is not None:
        description = url.relay_parameters.get("sb-hc-statusdescription", "")
        try:
            code = listener_reject_status(status, description)
        except ListenerResponseError as error:
            pending.rejection = (502, listeners_fault(error, namespace, entity).message)
        else:
            pending.rejection = (code, description or reason_phrase(code))
        pending.settled.set()
        raise Refusal(410, "Rejection delivered to the sender")
    if any(offer not in pending.offered for offer in incoming.request.subprotocols[:1]):
        pending.rejection = (502, "The listener chose a subprotocol the sender did not offer")
        pending.settled.set()
        raise Refusal(400, "That subprotocol was not offered by the sender")
    pending.listener_socket = (incoming.stream, incoming.http, incoming.request)
    pending.settled.set()
    await pending.joined.wait()
    return pending.listener_way


async def _join(relay: RelayContext, sender_side: Incoming, pending: PendingAccept) -> OneWay:
    """Answer both handshakes; return the sender's direction, leave the listener's in
    ``pending``."""
    assert pending.listener_socket is not None
    listener_stream, listener_http, listener_request = pending.listener_socket
    subprotocol = listener_request.subprotocols[0] if listener_request.subprotocols else None
    answer, listener_trailing = listener_http.accept_websocket(subprotocol=subprotocol)
    await write(listener_stream, answer, relay.config.write_timeout)
    answer, sender_trailing = sender_side.http.accept_websocket(subprotocol=subprotocol)
    await write(sender_side.stream, answer, relay.config.write_timeout)
    now = time.monotonic()
    sender = ChannelSocket(
        sender_side.stream,
        ServerWebSocket(now=now, trailing=sender_trailing, passes_pings=True),
        relay.clock,
    )
    listener = ChannelSocket(
        listener_stream,
        ServerWebSocket(now=now, trailing=listener_trailing, passes_pings=True),
        relay.clock,
    )
    stats = relay.registry.entity_stats(sender_side.namespace, sender_side.entity)
    stats.connections += 1
    config = relay.config
    rate = config.message_rate
    limits = (
        (Bucket(rate, config.message_burst), Bucket(rate, config.message_burst))
        if rate
        else (None, None)
    )
    pending.listener_socket = None
    pending.listener_way = OneWay(
        listener, sender, _forwarder(listener, sender, stats, False, limits[1])
    )
    forward = _forwarder(sender, listener, stats, True, limits[0])
    return OneWay(sender, listener, forward, sender_of=stats)


def _forwarder(
    source: ChannelSocket,
    target: ChannelSocket,
    stats: EntityStats,
    inbound: bool,
    limit: Bucket | None,
) -> Callable[[Event], Awaitable[None]]:
    """Pass each event of one side of a relayed WebSocket on to the other side."""

    async def forward(event: Event) -> None:
        channel = target.channel
        if isinstance(event, ChannelClosed):
            if channel.state is ChannelState.OPEN:
                code, reason = relayed_close(event.code, event.reason)
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
            # Bytes, as on the wire: a text piece counts as its UTF-8.
            data = event.data
            size = len(data) if isinstance(data, bytes) else len(data.encode())
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


async def pump_one_way(way: OneWay) -> None:
    """Pass one side's frames to the other until that side has closed. Should this end any
    other way, the other side hears it (1001 when the relay stops, else 1011)."""
    if way.sender_of is not None:
        way.sender_of.senders += 1
    try:
        await way.source.run(way.forward)
    except anyio.get_cancelled_exc_class():
        await _close_other_side(way.target, 1001, "The relay is shutting down")
        raise
    except BaseException:
        await _close_other_side(way.target, 1011, "The relay lost the other side")
        raise
    finally:
        if way.sender_of is not None:
            way.sender_of.senders -= 1


async def _close_other_side(target: ChannelSocket, code: int, reason: str) -> None:
    if target.channel.state is ChannelState.OPEN:
        target.channel.close(code, reason, now=time.monotonic())
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + HEAD_TIMEOUT):
            await target.flush()

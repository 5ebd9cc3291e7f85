"""HTTP senders: a request passed to a listener inline on its control channel or over a
rendezvous, and the listener's answer passed back."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from hyco_core import (
    HOP_BY_HOP_HEADERS,
    ChannelState,
    Event,
    Headers,
    Request,
    Response,
    reason_phrase,
)
from hyco_core.service import (
    BodyEnd,
    BodyPiece,
    HttpServer,
    IncomingRequest,
    ListenerResponseError,
    ResponseBodyReceived,
    ResponseReceived,
    ServiceHttpRendezvous,
    add_via,
    check_listener_response,
    forwarded_request_headers,
    request_fits_inline,
)
from hyco_transports.pump import ChannelSocket

from .authorization import authorize
from .config import NamespaceConfig, Right
from .context import RelayContext
from .incoming import (
    HEAD_TIMEOUT,
    Incoming,
    namespace_for,
    next_body_event,
    read_body,
    read_head,
    resolve,
)
from .refusals import Abort, Refusal, listeners_fault, run_hook, write
from .registry import EntityStats, Listener, no_listener, registry_key
from .rendezvous import HttpExchange


async def serve_http_sender(relay: RelayContext, incoming: Incoming) -> None:
    stream, http = incoming.stream, incoming.http
    rendezvous: ChannelSocket | None = None
    try:
        while True:
            rendezvous = await _forward_request(relay, incoming, rendezvous)
            if not http.start_next_request():
                return
            next_request = None
            with anyio.move_on_after(HEAD_TIMEOUT):
                next_request = await _next_head(stream, http, rendezvous)
            if next_request is None:
                return
            host, next_namespace = namespace_for(relay.config, next_request)
            url, next_entity = resolve(next_request, host, next_namespace, secure=relay.secure)
            if next_entity is not incoming.entity:
                raise Refusal(400, "A connection serves one hybrid connection")
            incoming = dataclasses.replace(incoming, request=next_request, url=url)
    finally:
        if rendezvous is not None:
            await rendezvous.release()


async def _forward_request(
    relay: RelayContext, incoming: Incoming, rendezvous: ChannelSocket | None
) -> ChannelSocket | None:
    """Send one request to a listener and its answer back; return the rendezvous to reuse."""
    stream, http, request = incoming.stream, incoming.http, incoming.request
    namespace, entity, url = incoming.namespace, incoming.entity, incoming.url
    if request.method == "CONNECT":
        raise Refusal(405, "CONNECT is not allowed")
    token_header, _ = authorize(relay.config, incoming, Right.SEND, http=True)
    await run_hook(relay.hooks.http_request, incoming.info("http"))
    stats = relay.registry.entity_stats(namespace, entity)
    stats.requests += 1
    if rendezvous is not None and rendezvous.channel.state is not ChannelState.OPEN:
        # The listener let this sender's rendezvous go: route the request afresh.
        await rendezvous.release()
        rendezvous = None
    listener = relay.registry.pick(namespace, entity, request.headers)
    if listener is None and rendezvous is None:
        raise Refusal(502, no_listener(request.headers), code="EndpointNotFound")
    request_id = secrets.token_urlsafe(24)
    headers = forwarded_request_headers(request.headers, token_header=token_header)
    target = f"/{entity.name}{url.suffix}" + (f"?{url.query}" if url.query else "")
    message = Request(
        address=relay.public_address(namespace).rendezvous(entity.name, "request", request_id),
        id=request_id,
        request_target=target,
        method=request.method,
        request_headers=headers,
        remote_endpoint=incoming.remote,
        body=None,
    )
    small = request_fits_inline(request, headers)
    await write(stream, http.continue_if_expected(), relay.config.write_timeout)
    exchange = HttpExchange(
        request_id=request_id, expires_at=time.monotonic() + relay.config.request_timeout
    )
    owner = listener if rendezvous is None else None
    if owner is not None:
        owner.exchanges[request_id] = exchange
        relay.registry.exchanges[request_id] = (owner, exchange)
    reused = rendezvous
    try:
        with anyio.move_on_after(relay.config.request_timeout):
            if rendezvous is not None:
                rendezvous = await _request_on_rendezvous(incoming, message, rendezvous, stats)
                exchange.rendezvous = rendezvous
            elif small:
                assert owner is not None
                body = await read_body(stream, http)
                stats.bytes_in += len(body)
                _still_listening(owner, request.headers)
                owner.channel.send_request(_with_body(message, bool(body)), body)
                await owner.socket.flush()
                await exchange.answered.wait()
            else:
                assert owner is not None
                # Only the address: listeners (hyco-https among them) tell an announcement
                # from an inline request by the absence of everything else.
                _still_listening(owner, request.headers)
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
                    await _request_on_rendezvous(incoming, message, exchange.rendezvous, stats)
            await _answer(incoming, exchange, stats)
            return exchange.rendezvous or rendezvous
        raise Refusal(
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
        relay.registry.exchanges.pop(request_id, None)
        if owner is not None:
            owner.exchanges.pop(request_id, None)


def _still_listening(listener: Listener, headers: Headers) -> None:
    """Refuse as if no listener were there when the one picked has closed its control channel
    since (while the sender's body was read): it is leaving, and cannot be told."""
    if listener.channel.state is not ChannelState.OPEN:
        raise Refusal(502, no_listener(headers), code="EndpointNotFound")


async def _request_on_rendezvous(
    incoming: Incoming, message: Request, rendezvous: ChannelSocket, stats: EntityStats
) -> ChannelSocket:
    """Send the full request over the rendezvous, streaming the sender's body."""
    stream, http = incoming.stream, incoming.http
    channel = rendezvous.channel
    assert isinstance(channel, ServiceHttpRendezvous)
    first = await next_body_event(stream, http)
    has_body = isinstance(first, BodyPiece)
    channel.send_request(_with_body(message, has_body))
    await rendezvous.flush()
    event = first
    while isinstance(event, BodyPiece):
        stats.bytes_in += len(event.data)
        following = await next_body_event(stream, http)
        if channel.state is ChannelState.OPEN:  # the listener may answer before reading all
            channel.send_body(event.data, final=isinstance(following, BodyEnd))
            await rendezvous.flush()
        event = following
    return rendezvous


async def _answer(incoming: Incoming, exchange: HttpExchange, stats: EntityStats) -> None:
    """Write the listener's answer to the HTTP sender."""
    stream, http, namespace = incoming.stream, incoming.http, incoming.namespace
    if exchange.inline is not None:
        response, body = exchange.inline
        try:
            check_listener_response(response)
        except ListenerResponseError as error:
            raise listeners_fault(error, namespace, None) from None
        await stream.send(_response_head(http, response, namespace, len(body)))
        await stream.send(http.send_body(body) + http.end_response())
        stats.bytes_out += len(body)
        return
    rendezvous = exchange.rendezvous
    if rendezvous is None:
        raise Refusal(502, "The listener went away before it answered", code="BadGateway")
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
        raise listeners_fault(unsendable, namespace, None)
    if not done.is_set():
        if started:
            raise Abort
        raise Refusal(502, "The listener closed the rendezvous before it answered")


async def serve_http_rendezvous(relay: RelayContext, incoming: Incoming) -> None:
    entry = relay.registry.exchanges.get(incoming.url.tracking_id or "")
    if entry is None or entry[1].answered.is_set():
        raise Refusal(400, "Unknown or expired request rendezvous")
    owner, exchange = entry
    if registry_key(owner.namespace, owner.entity) != registry_key(
        incoming.namespace, incoming.entity
    ):
        raise Refusal(400, "Unknown or expired request rendezvous")
    answer, trailing = incoming.http.accept_websocket()
    await write(incoming.stream, answer, relay.config.write_timeout)
    socket = ChannelSocket(
        incoming.stream,
        ServiceHttpRendezvous(now=time.monotonic(), trailing=trailing),
        write_timeout=relay.config.write_timeout,
    )
    exchange.rendezvous = socket
    exchange.answered.set()
    await socket.wait_released()


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
    return dataclasses.replace(message, body=body)


async def _next_head(
    stream: anyio.abc.ByteStream, http: HttpServer, rendezvous: ChannelSocket | None
) -> IncomingRequest | None:
    """An HTTP sender's next request head. Meanwhile its idle rendezvous is read, so that the
    listener's pings are answered and its close is noticed (the request then goes to a listener
    afresh instead of failing with 502 on a dead rendezvous)."""
    if rendezvous is None or rendezvous.channel.state is not ChannelState.OPEN:
        return await read_head(stream, http)
    idle_over = anyio.Event()

    async def ignore(_event: Event) -> None:
        pass

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_run_until, rendezvous, ignore, idle_over)
        try:
            request = await read_head(stream, http)
        finally:
            idle_over.set()
    return request

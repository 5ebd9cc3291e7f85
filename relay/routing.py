"""Routing: what a request is (an operations read, a listener, a WebSocket or HTTP sender, a
rendezvous) and which part of the relay serves it."""

from __future__ import annotations

from urllib.parse import parse_qs

import anyio.abc

from hyco_core import RemoteEndpoint
from hyco_core.service import HttpServer, IncomingRequest

from .authorization import operations_token, verify_namespace
from .context import RelayContext
from .http import serve_http_rendezvous, serve_http_sender
from .incoming import Incoming, namespace_for, resolve
from .listeners import serve_listener
from .operations import PRESENCE_PATH, describe_entity, serve_health, serve_presence, serve_stats
from .refusals import Refusal
from .rendezvous import OneWay
from .websockets import serve_accept_rendezvous, serve_sender


async def route(
    relay: RelayContext,
    stream: anyio.abc.ByteStream,
    http: HttpServer,
    request: IncomingRequest,
    remote: RemoteEndpoint | None,
) -> OneWay | None:
    """Serve ``request``; a relayed WebSocket comes back as the direction this connection's
    task is to pump."""
    path = request.target.split("?", 1)[0]
    operations = request.method == "GET" and not request.is_websocket
    if operations and path == "/health":
        await serve_health(relay, stream, http)
        return None
    if operations and path == "/stats" and not relay.config.stats_requires_manage:
        await serve_stats(relay, stream, http, None)
        return None
    host, namespace = namespace_for(relay.config, request)
    if operations and path == "/stats":  # with stats_requires_manage
        verify_namespace(relay.config, operations_token(request), host, namespace)
        await serve_stats(relay, stream, http, namespace)
        return None
    if operations and path == PRESENCE_PATH:
        await serve_presence(relay, stream, http, request, namespace)
        return None
    url, entity = resolve(request, host, namespace, secure=relay.secure)
    incoming = Incoming(stream, http, request, remote, namespace, entity, url)
    if not request.is_websocket:
        if not url.is_http:
            raise Refusal(400, "A $hc address needs a WebSocket upgrade")
        if request.method == "GET" and "api-version" in parse_qs(url.query):
            await describe_entity(relay, incoming)
            return None
        await serve_http_sender(relay, incoming)
        return None
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in (
        request.headers
    ):
        raise Refusal(400, "A WebSocket upgrade request carries no body")
    action = url.action or "connect"
    if action == "connect":
        return await serve_sender(relay, incoming)
    if action == "accept":
        return await serve_accept_rendezvous(relay, incoming)
    if action == "listen":
        await serve_listener(relay, incoming)
    elif action == "request":
        await serve_http_rendezvous(relay, incoming)
    else:
        raise Refusal(400, f"Unknown action {action!r}")
    return None

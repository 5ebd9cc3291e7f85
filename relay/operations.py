"""Operations endpoints: ``/health``, ``/stats``, the ``/$presence`` event stream, and the
management read of an entity's description."""

from __future__ import annotations

from xml.sax.saxutils import escape as xml_escape

import anyio
import anyio.abc

from hyco_core.service import HttpServer, IncomingRequest
from hyco_transports.pump import STREAM_ERRORS

from .authorization import authorize, operations_token, query_parameters, verify, verify_namespace
from .config import NamespaceConfig, Right
from .context import RelayContext
from .incoming import Incoming
from .refusals import Refusal, send_json, write
from .registry import registry_key

PRESENCE_PATH = "/$presence"
_MANAGEMENT_NAMESPACE = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"


async def serve_health(relay: RelayContext, stream: anyio.abc.ByteStream, http: HttpServer) -> None:
    await send_json(stream, http, 200, {"status": "ok"}, relay.config.write_timeout)


async def serve_stats(
    relay: RelayContext,
    stream: anyio.abc.ByteStream,
    http: HttpServer,
    namespace: NamespaceConfig | None,
) -> None:
    """The counters of every entity, or of ``namespace``'s only."""
    stats = relay.registry.stats(namespace)
    await send_json(stream, http, 200, stats, relay.config.write_timeout)


async def describe_entity(relay: RelayContext, incoming: Incoming) -> None:
    """The management read the .NET SDK's GetRuntimeInformationAsync makes (any right)."""
    namespace, entity = incoming.namespace, incoming.entity
    authorize(relay.config, incoming, Right(0))
    listeners = relay.registry.listener_count(namespace.name, entity.name)
    created = relay.started_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    address = relay.public_address(namespace).url(False, f"/{entity.name}")
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
    http = incoming.http
    await write(
        incoming.stream,
        http.start_response(200, "OK", headers, content_length=len(body))
        + http.send_body(body)
        + http.end_response(),
        relay.config.write_timeout,
    )


async def serve_presence(
    relay: RelayContext,
    stream: anyio.abc.ByteStream,
    http: HttpServer,
    request: IncomingRequest,
    namespace: NamespaceConfig,
) -> None:
    """Server-sent events of listeners going online and offline (needs Manage)."""
    host = request.headers.get("host", namespace.name)
    token = operations_token(request)
    wanted = query_parameters(request).get("entity")
    key: tuple[str, str] | None = None
    if wanted:
        entity = namespace.entity(wanted)
        if entity is None:
            raise Refusal(404, f"No hybrid connection {wanted!r}", code="EndpointNotFound")
        verify(relay.config, token, host, namespace, entity, Right.MANAGE)
        key = registry_key(namespace, entity)
    else:
        verify_namespace(relay.config, token, host, namespace)
    headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
    with relay.registry.presence(namespace, key) as receiver:
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

"""One client's connection as the relay sees it: the record of its facts, reading its HTTP
requests from the stream, and the namespace and entity a request names."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import anyio.abc

from hyco_core import InvalidUrlError, RelayUrl, RemoteEndpoint, parse_relay_url
from hyco_core.service import (
    BodyEnd,
    BodyPiece,
    HttpServer,
    IncomingRequest,
    forwarded_connect_headers,
    normalize_namespace,
)
from hyco_transports.pump import READ_SIZE

from .config import EntityConfig, NamespaceConfig, RelayConfig
from .hooks import ConnectionInfo
from .refusals import Refusal

HEAD_TIMEOUT = 10.0


@dataclass(frozen=True, eq=False, slots=True)
class Incoming:
    """A client's connection once its request names an entity: where it came from, what it
    asked for, and the entity of which namespace serves it. A keep-alive HTTP sender's later
    requests are the same connection with another ``request`` and ``url``."""

    stream: anyio.abc.ByteStream
    http: HttpServer
    request: IncomingRequest
    remote: RemoteEndpoint | None
    namespace: NamespaceConfig
    entity: EntityConfig
    url: RelayUrl

    @property
    def host(self) -> str:
        """The host the client addressed: the resource its token must name."""
        return self.request.headers.get("host", self.namespace.name)

    def info(self, kind: str) -> ConnectionInfo:
        """What a sender's hook is told about this connection."""
        headers = forwarded_connect_headers(self.request.headers)
        return ConnectionInfo(
            kind=kind,
            namespace=self.namespace.name,
            entity=self.entity.name,
            remote_endpoint=self.remote,
            headers=headers.without(["authorization"]) if kind == "http" else headers,
            suffix=self.url.suffix,
            query=self.url.query,
            method=self.request.method,
        )


def remote_endpoint(stream: anyio.abc.ByteStream) -> RemoteEndpoint | None:
    try:
        address = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return None
    if isinstance(address, tuple):
        return RemoteEndpoint(address=str(address[0]), port=int(address[1]))
    return None


async def read_head(stream: anyio.abc.ByteStream, http: HttpServer) -> IncomingRequest | None:
    while True:
        event = http.next_event()
        if isinstance(event, IncomingRequest):
            return event
        try:
            data = await stream.receive(READ_SIZE)
        except anyio.EndOfStream:
            return None
        http.receive_data(data)


async def next_body_event(stream: anyio.abc.ByteStream, http: HttpServer) -> BodyPiece | BodyEnd:
    while True:
        event = http.next_event()
        if isinstance(event, BodyPiece | BodyEnd):
            return event
        try:
            data = await stream.receive(READ_SIZE)
        except anyio.EndOfStream:
            data = b""
        http.receive_data(data)


async def read_body(stream: anyio.abc.ByteStream, http: HttpServer) -> bytes:
    body = bytearray()
    while isinstance(event := await next_body_event(stream, http), BodyPiece):
        body += event.data
    return bytes(body)


def namespace_for(config: RelayConfig, request: IncomingRequest) -> tuple[str, NamespaceConfig]:
    """The request's ``Host`` and the namespace it selects.

    The Host header only selects a namespace; it never shapes an address the relay hands
    out (those come from the relay's ``public_address``), and it must be a host to do even that.
    """
    host = request.headers.get("host", "")
    try:
        normalize_namespace(host)
    except InvalidUrlError as error:
        raise Refusal(400, f"The Host header is not a host name: {error}") from None
    namespace = config.namespace(host)
    if namespace is None:
        raise Refusal(404, f"No namespace is served at host {host!r}", code="EndpointNotFound")
    return host, namespace


def resolve(
    request: IncomingRequest, host: str, namespace: NamespaceConfig, *, secure: bool
) -> tuple[RelayUrl, EntityConfig]:
    """The request's address and the entity of ``namespace`` it names (404 otherwise)."""
    scheme = ("ws" if request.is_websocket else "http") + ("s" if secure else "")
    try:
        url = parse_relay_url(f"{scheme}://{host}{request.target}", entities=namespace.hosted)
    except InvalidUrlError as error:
        message = f"Endpoint does not exist: {error}"
        raise Refusal(404, message, code="EndpointNotFound") from None
    entity = namespace.entity(url.entity)
    if entity is None:  # the kernel and the configuration disagree on a name: never serve it
        raise Refusal(404, "Endpoint does not exist", code="EndpointNotFound")
    return url, entity

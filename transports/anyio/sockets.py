"""Opening a channel's socket on anyio: TCP, TLS, an HTTP CONNECT proxy, the handshake; and
the tokens and clocks the channels need."""

from __future__ import annotations

import logging
import ssl
import time
from urllib.parse import urlsplit

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from hyco_core import (
    Event,
    Opened,
    WebSocketChannel,
    handshake_outcome,
)
from hyco_transports.auth import RelayToken, TokenProvider
from hyco_transports.errors import connect_failure
from hyco_transports.proxy import ProxyError, connect_request, parse_connect_response, proxy_for
from hyco_transports.pump import READ_SIZE, STREAM_ERRORS, ChannelSocket

__all__ = ["close_stream", "connect_stream", "fetch_token", "monotonic_expiry", "open_socket"]

logger = logging.getLogger("hyco.transports.anyio")


async def open_socket(
    url: str,
    channel: WebSocketChannel,
    *,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
) -> tuple[ChannelSocket, Opened | None, list[Event]]:
    """Connect to ``url`` and run the handshake of ``channel``.

    Returns the socket, the ``Opened`` event (``None`` when the handshake ended otherwise, e.g. a
    delivered rejection) and the events that followed it. Refusals raise their typed error.
    """
    parts = urlsplit(url)
    secure = parts.scheme in ("wss", "https")
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    stream: anyio.abc.ByteStream
    try:
        with anyio.fail_after(timeout):
            stream = await connect_stream(host, port, secure=secure, ssl_context=ssl_context)
    except (OSError, anyio.EndOfStream, anyio.BrokenResourceError) as error:
        raise connect_failure(error, host, port, secure=secure, timeout=timeout) from None
    socket = ChannelSocket(stream, channel)
    try:
        await socket.flush()
        while True:
            outcome = handshake_outcome(channel.events())
            if outcome is not None:
                return socket, *outcome
            deadline = channel.get_timer()
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            with anyio.move_on_after(wait):
                try:
                    data = await stream.receive(READ_SIZE)
                except STREAM_ERRORS:
                    channel.receive_eof()
                else:
                    channel.receive_data(data, time.monotonic())
                continue
            channel.handle_timer(time.monotonic())
    except BaseException:
        await close_stream(stream)
        raise


async def connect_stream(
    host: str, port: int, *, secure: bool, ssl_context: ssl.SSLContext | None
) -> anyio.abc.ByteStream:
    """TCP (through an HTTP CONNECT proxy when the environment names one), then TLS."""
    proxy = proxy_for(host, secure=secure)
    if proxy is None:
        if secure:
            return await anyio.connect_tcp(
                host, port, tls=True, ssl_context=ssl_context, tls_standard_compatible=False
            )
        return await anyio.connect_tcp(host, port)
    stream: anyio.abc.ByteStream = await anyio.connect_tcp(proxy.host, proxy.port)
    try:
        await stream.send(connect_request(host, port, proxy))
        head = b""
        while (end := parse_connect_response(head)) is None:
            head += await stream.receive()
        if head[end:]:
            raise ProxyError("the proxy sent data before the tunnel was used")
        if secure:
            stream = await TLSStream.wrap(
                stream,
                hostname=host,
                ssl_context=ssl_context or ssl.create_default_context(),
                standard_compatible=False,
            )
    except BaseException:
        await close_stream(stream)
        raise
    return stream


async def close_stream(stream: anyio.abc.AsyncResource) -> None:
    """Close a stream even while the closing task is being cancelled."""
    with anyio.CancelScope(shield=True):
        await stream.aclose()


async def fetch_token(provider: TokenProvider | None, resource: str) -> RelayToken | None:
    if provider is None:
        return None
    if provider.blocking:
        return await anyio.to_thread.run_sync(provider.get_token, resource)
    return provider.get_token(resource)


def monotonic_expiry(token: RelayToken | None) -> float | None:
    """A token's Unix expiry on the monotonic clock the kernel runs on."""
    if token is None or token.expires_at is None:
        return None
    return time.monotonic() + (token.expires_at - time.time())

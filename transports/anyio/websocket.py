"""A relayed WebSocket on anyio, and ``connect``, which opens a sender's."""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager

import anyio
import anyio.abc

from hyco_core import (
    Accept,
    ChannelClosed,
    ChannelConfig,
    ChannelState,
    ConnectionClosed,
    Event,
    Headers,
    KeepAlive,
    ListenerObserver,
    LocalProtocolError,
    MessageAssembly,
    MessageReceived,
    Opened,
    RelayedWebSocket,
    RemoteProtocolError,
    connection_closed,
    sender_channel,
)
from hyco_transports._listening import payload_size
from hyco_transports.auth import RelayEndpoint
from hyco_transports.pump import ChannelSocket, LazyEvent, MessageQueue

from .sockets import close_stream, fetch_token, open_socket

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "WebSocket", "connect"]

logger = logging.getLogger("hyco.transports.anyio")

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
_CLOSE_WRITE_TIMEOUT = 10.0


class WebSocket:
    """An end-to-end WebSocket through the relay: a sender's, or one a listener accepted.

    ``recv`` returns whole messages (``str`` for text, ``bytes`` for binary); a slow reader slows
    the peer down. Iterating yields messages until the connection closes normally.
    """

    __slots__ = (
        "__weakref__",
        "_assembly",
        "_closed",
        "_done",
        "_local_close",
        "_messages",
        "_observer",
        "_socket",
        "accept",
        "subprotocol",
    )

    def __init__(
        self,
        socket: ChannelSocket,
        opened: Opened,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        accept: Accept | None = None,
        observer: ListenerObserver | None = None,
    ) -> None:
        self._socket = socket
        self._observer = observer
        self.subprotocol = opened.subprotocol
        self.accept = accept
        self._messages = MessageQueue(4)
        self._assembly = MessageAssembly(max_message_size)  # of the message being received
        self._closed: ChannelClosed | None = None
        self._local_close: tuple[int, str] | None = None
        self._done = LazyEvent()

    def __repr__(self) -> str:
        return f"<WebSocket {self._socket.channel.state.value}>"

    @property
    def close_code(self) -> int | None:
        return self._closed.code if self._closed else None

    @property
    def close_reason(self) -> str | None:
        return self._closed.reason if self._closed else None

    async def send(self, data: str | bytes) -> None:
        """Send one text (``str``) or binary message."""
        channel = self._channel()
        try:
            channel.send_message(data)
        except LocalProtocolError:
            closed = self._closed_error()
            raise closed from closed.__cause__
        await self._socket.flush()
        if self._observer is not None:
            self._observer.sent("websocket", payload_size(data))

    async def recv(self) -> str | bytes:
        """The next whole message; raises :class:`~hyco_core.ConnectionClosed` once closed."""
        message = await self._messages.get()
        if message is None:
            raise self._closed_error()  # with the failure as its cause, if there was one
        return message

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        """The next message; iteration ends at a normal close (1000, 1001), else raises."""
        try:
            return await self.recv()
        except ConnectionClosed as closed:
            if closed.ends_normally:
                raise StopAsyncIteration from None
            raise

    async def ping(self, payload: bytes = b"") -> None:
        try:
            self._channel().ping(payload)
        except LocalProtocolError:
            closed = self._closed_error()
            raise closed from closed.__cause__
        await self._socket.flush()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close and wait until the peer has answered (or the close timeout has passed).

        Messages not read yet are dropped: the reader must be free to see the peer's answer.
        """
        channel = self._channel()
        if channel.state is ChannelState.OPEN:  # the first close decides what the user is told
            self._local_close = (code, reason)
        self._messages.discard()
        channel.close(code, reason, now=time.monotonic())
        # Once taken from the kernel, the close frame must reach the wire even if this task is
        # cancelled meanwhile; the close timeout bounds the wait.
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + _CLOSE_WRITE_TIMEOUT):
            await self._socket.flush()
        await self._done.wait()

    async def __aenter__(self) -> WebSocket:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _channel(self) -> RelayedWebSocket:
        channel = self._socket.channel
        assert isinstance(channel, RelayedWebSocket)
        return channel

    def _closed_error(self) -> ConnectionClosed:
        return connection_closed(self._closed, closed_here=self._local_close)

    async def _run(self, leftover: list[Event]) -> None:
        """The reader task: feeds the kernel, assembles messages, queues them."""
        try:
            for event in leftover:
                await self._on_event(event)
            await self._socket.run(self._on_event)
        finally:
            self._messages.end()  # what is queued can still be read; then recv reports the close
            self._done.set()
            await close_stream(self._socket.stream)
            self._socket.mark_released()

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            try:
                whole = self._assembly.add(event.data, event.final)
            except RemoteProtocolError:
                self._local_close = MessageAssembly.TOO_BIG
                self._channel().close(*MessageAssembly.TOO_BIG, now=time.monotonic())
                return
            if whole is not None:
                if self._observer is not None:
                    self._observer.received("websocket", payload_size(whole))
                await self._messages.put(whole)  # dropped if closed here: nobody will read it
        elif isinstance(event, ChannelClosed):
            self._closed = event


@asynccontextmanager
async def connect(
    target: str | RelayEndpoint,
    *,
    path: str | None = None,
    suffix: str = "",
    query: str = "",
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    subprotocols: Iterable[str] = (),
    token_in_query: bool = False,
    tracking_id: str | None = None,
    connect_timeout: float = 70.0,
    ssl_context: ssl.SSLContext | None = None,
    keepalive: KeepAlive | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> AsyncIterator[WebSocket]:
    """Open a sender's WebSocket to a hybrid connection (a connection string or an endpoint)."""
    endpoint = RelayEndpoint.of(target, path=path)
    token = await fetch_token(endpoint.token_provider, endpoint.resource)
    url, channel = sender_channel(
        endpoint.namespace,
        endpoint.path,
        token=token.token if token else None,
        now=time.monotonic(),
        nonce=os.urandom(16),
        token_in_query=token_in_query,
        tracking_id=tracking_id,
        suffix=suffix,
        query=query,
        headers=list(Headers(headers).items()),
        subprotocols=list(subprotocols),
        secure=endpoint.secure,
        config=ChannelConfig(handshake_timeout=connect_timeout, keepalive=keepalive or KeepAlive()),
    )
    socket, opened, leftover = await open_socket(
        url, channel, ssl_context=ssl_context, timeout=connect_timeout
    )
    assert opened is not None
    websocket = WebSocket(socket, opened, max_message_size=max_message_size)
    failure: Exception | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(websocket._run, leftover)
        try:
            yield websocket
        except Exception as error:
            # Raised again outside the task group, which would wrap it in an ExceptionGroup:
            # the caller catches ConnectionClosed (or its own error) as itself.
            failure = error
        finally:
            with anyio.CancelScope(shield=True):
                await websocket.close()  # idempotent: also releases what a peer's close left
    if failure is not None:
        raise failure

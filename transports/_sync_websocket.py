"""The blocking relayed WebSocket and ``connect``, written once for :mod:`hyco_transports.sync`
and ``.gevent``: each binds them to its :class:`~._sync_io.Backend` (threads or greenlets).
Every socket has a reader worker; messages are handed out with backpressure."""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from hyco_core import (
    Accept,
    ChannelClosed,
    ChannelConfig,
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
    WebSocketChannel,
    connection_closed,
    sender_channel,
)

from ._listening import payload_size
from ._sync_io import (
    Backend,
    Mailbox,
    Pump,
    Worker,
    fetch_token,
    open_channel,
)
from .auth import RelayEndpoint

__all__ = ["CLOSE_TIMEOUT", "DEFAULT_MAX_MESSAGE_SIZE", "Connector", "WebSocket", "closer"]

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
CLOSE_TIMEOUT = 10.0


class WebSocket:
    """An end-to-end WebSocket through the relay: a sender's, or one a listener accepted.

    ``recv`` returns whole messages (``str`` for text, ``bytes`` for binary); a slow reader slows
    the peer down. Iterating yields messages until the connection closes normally. Any worker
    may send while another receives.
    """

    def __init__(
        self,
        pump: Pump[RelayedWebSocket],
        opened: Opened,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        accept: Accept | None = None,
        observer: ListenerObserver | None = None,
    ) -> None:
        self._pump = pump
        self._observer = observer
        self.subprotocol = opened.subprotocol
        self.accept = accept
        self._max_message_size = max_message_size
        self._messages: Mailbox[str | bytes] = Mailbox(pump.backend, 4)
        self._closed: ChannelClosed | None = None

    def __repr__(self) -> str:
        return f"<WebSocket {self._pump.channel.state.value}>"

    @property
    def close_code(self) -> int | None:
        return self._closed.code if self._closed else None

    @property
    def close_reason(self) -> str | None:
        return self._closed.reason if self._closed else None

    def send(self, data: str | bytes) -> None:
        """Send one text (``str``) or binary message; returns once it is written."""
        try:
            self._pump.call(lambda channel: channel.send_message(data))
        except LocalProtocolError:
            closed = self._closed_error()
            raise closed from closed.__cause__
        if self._observer is not None:
            self._observer.sent("websocket", payload_size(data))

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next whole message.

        Raises :class:`~hyco_core.ConnectionClosed` once closed, ``TimeoutError`` when nothing
        arrived within ``timeout`` seconds.
        """
        message = self._messages.get(timeout)
        if message is None:
            # Closed here while the close handshake may still run: report its outcome.
            self._pump.done.wait(CLOSE_TIMEOUT)
            raise self._closed_error()
        return message

    def __iter__(self) -> Iterator[str | bytes]:
        while True:
            try:
                yield self.recv()
            except ConnectionClosed as closed:
                if closed.ends_normally:
                    return
                raise

    def ping(self, payload: bytes = b"") -> None:
        try:
            self._pump.call(lambda channel: channel.ping(payload))
        except LocalProtocolError:
            closed = self._closed_error()
            raise closed from closed.__cause__

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close and wait until the peer has answered (or the close timeout has passed)."""
        self._begin_close(code, reason)
        if not self._pump.done.wait(CLOSE_TIMEOUT):
            self._pump.expire()
            self._pump.done.wait(CLOSE_TIMEOUT)

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _begin_close(self, code: int, reason: str) -> None:
        self._pump.call(lambda channel: channel.close(code, reason, now=time.monotonic()))
        # Unblocks a reader waiting for room, so that it can read the peer's answer.
        self._messages.discard()

    def _closed_error(self) -> ConnectionClosed:
        return connection_closed(self._closed)

    def _start(self, leftover: list[Event]) -> Worker:
        return self._pump.backend.spawn(lambda: self._run(leftover), "hyco-websocket")

    def _run(self, leftover: list[Event]) -> None:
        """The reader: feeds the kernel, assembles messages, queues them."""
        assembly = MessageAssembly(self._max_message_size)

        def on_event(event: Event) -> None:
            if isinstance(event, MessageReceived):
                try:
                    whole = assembly.add(event.data, event.final)
                except RemoteProtocolError:
                    self._pump.call(closer(*MessageAssembly.TOO_BIG), wait=False)
                    return
                if whole is not None:
                    if self._observer is not None:
                        self._observer.received("websocket", payload_size(whole))
                    self._messages.put(whole)
            elif isinstance(event, ChannelClosed):
                self._closed = event

        try:
            self._pump.run(on_event, leftover)
        finally:
            self._messages.close()


class Connector:
    """``connect`` bound to a backend."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    @contextmanager
    def connect(
        self,
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
    ) -> Iterator[WebSocket]:
        """Open a sender's WebSocket to a hybrid connection (a connection string or an endpoint).

        A refusal raises its typed error (``RejectedError`` with the listener's status, ...,
        each with the relay's tracking id). The connection is closed when the block ends.
        """
        backend = self._backend
        endpoint = RelayEndpoint.of(target, path=path)
        token = fetch_token(backend, endpoint.token_provider, endpoint.resource)
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
            config=ChannelConfig(
                handshake_timeout=connect_timeout, keepalive=keepalive or KeepAlive()
            ),
        )
        pump, opened, leftover = open_channel(
            backend, url, channel, ssl_context=ssl_context, timeout=connect_timeout
        )
        assert opened is not None
        websocket = WebSocket(pump, opened, max_message_size=max_message_size)
        reader = websocket._start(leftover)
        try:
            yield websocket
        finally:
            websocket.close()
            reader.join(CLOSE_TIMEOUT)


def closer(code: int, reason: str) -> Callable[[WebSocketChannel], None]:
    def close(channel: WebSocketChannel) -> None:
        channel.close(code, reason, now=time.monotonic())

    return close

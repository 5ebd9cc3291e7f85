"""The anyio transport behind the blocking interface the shared scenarios are written against.

Its event loop (asyncio or trio) runs in a portal thread of its own; the scenarios' handlers,
blocking as they are written, run in that loop's worker threads and reach the transport's
objects back through the portal. Nothing here decides anything: each call is the anyio
transport's own, so a scenario passing here passes on anyio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.from_thread import BlockingPortal

from hyco_core import AcceptContext, ConnectionClosed, HycoError, ListenerStatus
from hyco_transports import anyio as anyio_transport
from hyco_transports import sync
from hyco_transports.auth import RelayEndpoint

T = TypeVar("T")


class BlockingWebSocket:
    """An anyio WebSocket, called from any thread but the loop's."""

    def __init__(self, portal: BlockingPortal, websocket: anyio_transport.WebSocket) -> None:
        self._portal = portal
        self._websocket = websocket
        self.subprotocol = websocket.subprotocol
        self.accept = websocket.accept

    @property
    def close_code(self) -> int | None:
        return self._websocket.close_code

    @property
    def close_reason(self) -> str | None:
        return self._websocket.close_reason

    def send(self, data: str | bytes) -> None:
        self._portal.call(self._websocket.send, data)

    def recv(self, timeout: float | None = None) -> str | bytes:
        async def receive() -> str | bytes:
            with anyio.fail_after(timeout):
                return await self._websocket.recv()

        return self._portal.call(receive)

    def __iter__(self) -> Iterator[str | bytes]:
        while True:
            try:
                yield self.recv()
            except ConnectionClosed as closed:
                if closed.ends_normally:
                    return
                raise

    def ping(self, payload: bytes = b"") -> None:
        self._portal.call(self._websocket.ping, payload)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._portal.call(self._websocket.close, code, reason)

    def __enter__(self) -> BlockingWebSocket:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class BlockingHttpRequest:
    """An anyio HTTP request as a blocking handler reads it."""

    def __init__(self, portal: BlockingPortal, request: anyio_transport.HttpRequest) -> None:
        self._portal = portal
        self._request = request
        self.method = request.method
        self.target = request.target
        self.path = request.path
        self.query = request.query
        self.headers = request.headers
        self.remote_endpoint = request.remote_endpoint
        self.deadline = request.deadline

    def time_left(self) -> float:
        return self._request.time_left()

    def stream(self) -> Iterator[bytes]:
        pieces = aiter(self._request.stream())
        while True:
            try:
                yield self._portal.call(anext, pieces)
            except StopAsyncIteration:
                return

    def body(self) -> bytes:
        return b"".join(self.stream())


async def _streamed(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    """A blocking handler's streamed body, each piece taken in a worker thread."""
    iterator = iter(pieces)
    end = object()
    try:
        while (piece := await anyio.to_thread.run_sync(next, iterator, end)) is not end:
            assert isinstance(piece, bytes)
            yield piece
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _answer(response: sync.HttpResponse) -> anyio_transport.HttpResponse:
    body = response.body
    return anyio_transport.HttpResponse(
        response.status,
        headers=response.headers,
        body=body if isinstance(body, bytes) else _streamed(body),
        reason=response.reason,
    )


class BlockingListener:
    """An anyio listener with blocking handlers; :attr:`portal` is the loop it runs on."""

    portal: ClassVar[BlockingPortal]

    def __init__(
        self,
        endpoint: RelayEndpoint,
        *,
        accept_handler: Callable[[AcceptContext], object] | None = None,
        connection_handler: Callable[[BlockingWebSocket], object] | None = None,
        request_handler: Callable[[BlockingHttpRequest], sync.HttpResponse] | None = None,
        **options: Any,
    ) -> None:
        portal = self.portal

        async def decide(context: AcceptContext) -> None:
            assert accept_handler is not None
            await anyio.to_thread.run_sync(accept_handler, context)

        async def serve(websocket: anyio_transport.WebSocket) -> None:
            assert connection_handler is not None
            await anyio.to_thread.run_sync(connection_handler, BlockingWebSocket(portal, websocket))

        async def answer(request: anyio_transport.HttpRequest) -> anyio_transport.HttpResponse:
            assert request_handler is not None
            blocking = BlockingHttpRequest(portal, request)
            return _answer(await anyio.to_thread.run_sync(request_handler, blocking))

        self._listener = anyio_transport.Listener(
            endpoint,
            accept_handler=decide if accept_handler else None,
            connection_handler=serve if connection_handler else None,
            request_handler=answer if request_handler else None,
            **options,
        )
        self._running: AbstractContextManager[anyio_transport.Listener] | None = None

    @classmethod
    def from_connection_string(
        cls, connection_string: str, *, path: str | None = None, **options: Any
    ) -> BlockingListener:
        return cls(RelayEndpoint.from_connection_string(connection_string, path=path), **options)

    @property
    def status(self) -> ListenerStatus:
        return self._listener.status

    @property
    def last_error(self) -> HycoError | None:
        return self._listener.last_error

    @property
    def tracking_id(self) -> str:
        return self._listener.tracking_id

    def __enter__(self) -> BlockingListener:
        running = self.portal.wrap_async_context_manager(self._listener)
        running.__enter__()
        self._running = running
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._running is not None
        self._running.__exit__(*exc)

    def accept(self, timeout: float | None = None) -> BlockingWebSocket:
        async def next_connection() -> anyio_transport.WebSocket:
            with anyio.fail_after(timeout):
                return await self._listener.accept()

        return BlockingWebSocket(self.portal, self.portal.call(next_connection))

    def __iter__(self) -> Iterator[BlockingWebSocket]:
        while True:
            try:
                yield self.accept()
            except ConnectionClosed:
                return

    def close(self) -> None:
        self.portal.call(self._listener.close)

    def wait_closed(self, timeout: float | None = None) -> bool:
        async def wait() -> bool:
            with anyio.move_on_after(timeout):
                await self._listener.wait_closed()
                return True
            return False

        return self.portal.call(wait)


class AnyioTransport:
    """The names the scenarios take from a transport module, on one portal's loop."""

    def __init__(self, portal: BlockingPortal) -> None:
        self.portal = portal
        self.Listener = type("Listener", (BlockingListener,), {"portal": portal})

    @contextmanager
    def connect(self, target: str | RelayEndpoint, **options: Any) -> Iterator[BlockingWebSocket]:
        with self.portal.wrap_async_context_manager(
            anyio_transport.connect(target, **options)
        ) as websocket:
            yield BlockingWebSocket(self.portal, websocket)

"""One HTTP request through an ASGI app: its body in, its response out, inline or streamed."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hyco_adapters.hosting import relayed_response_headers
from hyco_core import INLINE_BODY_LIMIT, ConnectionLostError, LocalProtocolError
from hyco_transports.anyio import HttpRequest, HttpResponse

from .interface import ASGIApp, ClientDisconnected, Message, Scope, status_code

__all__ = ["INTERNAL_ERROR_BODY", "HttpExchange", "ResponseBody"]

logger = logging.getLogger("hyco.adapters.asgi")

INTERNAL_ERROR_BODY = b"Internal Server Error"


class HttpExchange:
    """One request through the app: feeds it the body, turns its messages into an HttpResponse.

    The transport gets the response as soon as it is known: at ``http.response.start`` for
    streamed bodies, once the whole body is in for small ones. ``done`` (the app's
    ``http.disconnect``) is set once the response is handed over completely or abandoned; once
    abandoned, ``send`` raises :class:`ClientDisconnected` (ASGI 2.4).
    """

    def __init__(
        self, app: ASGIApp, scope: Scope, request: HttpRequest, on_done: Callable[[], object]
    ) -> None:
        self._app = app
        self._scope = scope
        self._request = request
        self._on_done = on_done
        self._body = request.stream()
        self._body_read = False
        self._reading = anyio.Lock()
        self._reader: anyio.CancelScope | None = None
        self.ready = anyio.Event()
        self.response: HttpResponse | None = None
        self.done = anyio.Event()
        self.failed = False
        self._finished = False
        self._abandoned = False
        self._bodyless = False
        self._status: int | None = None
        self._headers: list[tuple[str, str]] = []
        self._buffer: bytearray | None = None
        self._complete = False
        self._piece_sender: MemoryObjectSendStream[bytes] | None = None

    async def run(self) -> None:
        try:
            await self._app(self._scope, self.receive, self.send)
        except ClientDisconnected:
            logger.debug("%s: the sender went away", self._describe())
        except Exception:
            logger.exception("the application failed on %s", self._describe())
        else:
            if self._status is None:
                logger.error("the application returned without a response to %s", self._describe())
            elif not self._complete:
                logger.error("the application returned before finishing %s", self._describe())
        finally:
            if not self._complete:
                self._fail()

    def _describe(self) -> str:
        return f"{self._request.method} {self._scope['path']}"

    # -- receive -----------------------------------------------------------------------------

    async def receive(self) -> Message:
        async with self._reading:
            if not self._body_read and not self.done.is_set():
                with anyio.CancelScope() as self._reader:
                    try:
                        piece = await anext(self._body)
                    except StopAsyncIteration:
                        self._body_read = True
                        return {"type": "http.request", "body": b"", "more_body": False}
                    except (anyio.ClosedResourceError, ConnectionLostError):
                        # The transport stops the body once the response has started, or the
                        # sender went away in the middle of it.
                        logger.warning("%s: the request body was cut off", self._describe())
                        self.done.set()
                    else:
                        return {"type": "http.request", "body": piece, "more_body": True}
        await self.done.wait()
        return {"type": "http.disconnect"}

    def finish(self) -> None:
        """The response is out (or abandoned): the app's next ``receive`` is a disconnect."""
        if self._finished:
            return
        self._finished = True
        self.done.set()
        if self._reader is not None:
            self._reader.cancel()
        self._on_done()

    def abandon(self, pieces: MemoryObjectReceiveStream[bytes] | None = None) -> None:
        """The response will not reach the sender: it is gone, or the relay gave up on it."""
        self._abandoned = True
        if pieces is not None:
            pieces.close()
        self.finish()

    def _check_connected(self) -> None:
        if self._abandoned:
            raise ClientDisconnected(1006, "the sender is gone")

    # -- send --------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self._status is not None:
                raise LocalProtocolError("the application sent http.response.start twice")
            self._check_connected()
            self._start(message)
        elif kind == "http.response.body":
            if self._status is None:
                raise LocalProtocolError("http.response.body came before http.response.start")
            if self._complete:
                raise LocalProtocolError("http.response.body came after the last piece")
            body = message.get("body", b"")
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise LocalProtocolError("the body of http.response.body must be bytes")
            more = bool(message.get("more_body", False))
            self._complete = not more
            await self._add_piece(bytes(body), more)
        else:
            raise LocalProtocolError(f"{kind!r} is not a message for an HTTP request")

    def _start(self, message: Message) -> None:
        status = status_code(message.get("status"))
        headers, length = _response_headers(message.get("headers", ()))
        self._status, self._headers = status, headers
        if self._request.method.upper() == "HEAD" or status in (204, 304) or status < 200:
            self._bodyless = True
            self._hand_over(b"")
        elif length is not None and length <= INLINE_BODY_LIMIT:
            self._buffer = bytearray()
        else:
            self._stream(b"")

    def _stream(self, first: bytes) -> None:
        # No buffer: the app's send returns once the transport has taken the piece.
        self._piece_sender, pieces = anyio.create_memory_object_stream[bytes](0)
        self._hand_over(ResponseBody(self, pieces, first))

    async def _add_piece(self, body: bytes, more: bool) -> None:
        self._check_connected()
        if self._bodyless:
            return
        if self._buffer is not None:
            self._buffer += body
            if not more:
                self._hand_over(bytes(self._buffer))
            elif len(self._buffer) > INLINE_BODY_LIMIT:
                self._stream(bytes(self._buffer))
            else:
                return
            self._buffer = None
            return
        assert self._piece_sender is not None
        if body:
            try:
                await self._piece_sender.send(body)
            except anyio.BrokenResourceError:
                self._check_connected()
                raise
        if not more:
            self._piece_sender.close()

    def _hand_over(self, body: bytes | ResponseBody) -> None:
        assert self._status is not None
        self.response = HttpResponse(self._status, self._headers, body)
        self.ready.set()
        if isinstance(body, bytes):
            self.finish()

    def _fail(self) -> None:
        self.failed = True
        if not self.ready.is_set():
            self._status = 500
            self._headers = [("Content-Type", "text/plain; charset=utf-8")]
            self._hand_over(INTERNAL_ERROR_BODY)
        elif self._piece_sender is not None:
            # The streamed body ends here; the transport sees ``failed`` and cuts the response.
            self._piece_sender.close()


class ResponseBody:
    """A streamed response body, pulled by the transport piece by piece.

    If the transport drops it before the end (the sender went away, or the rendezvous could not
    be opened), the finalizer tells the app (``http.disconnect``) and unblocks its ``send``.
    """

    def __init__(
        self, exchange: HttpExchange, pieces: MemoryObjectReceiveStream[bytes], first: bytes
    ) -> None:
        self._exchange = exchange
        self._pieces = pieces
        self._first = first
        self._finalizer = weakref.finalize(self, exchange.abandon, pieces)

    def __aiter__(self) -> ResponseBody:
        return self

    async def aclose(self) -> None:
        """The transport is done with the body; unfinished, the app learns the sender is gone."""
        self._finalizer()

    async def __anext__(self) -> bytes:
        if self._first:
            piece, self._first = self._first, b""
            return piece
        try:
            return await self._pieces.receive()
        except anyio.EndOfStream:
            self._finalizer.detach()
            self._pieces.close()
            self._exchange.finish()
            if self._exchange.failed:
                raise LocalProtocolError(
                    "the application failed after it started the response"
                ) from None
            raise StopAsyncIteration from None


def _response_headers(raw: Iterable[Any]) -> tuple[list[tuple[str, str]], int | None]:
    """The app's headers as the relay can carry them, and the Content-Length it declared."""
    decoded: list[tuple[str, str]] = []
    for name_bytes, value_bytes in raw:
        if not isinstance(name_bytes, (bytes, bytearray)) or not isinstance(
            value_bytes, (bytes, bytearray)
        ):
            raise LocalProtocolError("response header names and values must be byte strings")
        decoded.append((bytes(name_bytes).decode("latin-1"), bytes(value_bytes).decode("latin-1")))
    return relayed_response_headers(decoded, logger)

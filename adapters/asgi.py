"""ASGI hosting behind a hybrid connection: any ASGI 3 app (FastAPI, Starlette, Django) serves the
HTTP requests and WebSockets that senders make through Azure Relay, with outbound connections only.

::

    from hyco_adapters.asgi import run

    run("myproject.main:app", connection_string)  # or: await serve(app, connection_string)

Routes match as if the app were mounted at ``/{hybrid connection}``: a request to
``https://{namespace}/{entity}/items/7`` has ``root_path`` ``/{entity}`` and ``path``
``/{entity}/items/7``, as the ASGI specification has it (``path`` includes ``root_path``), so
Starlette, FastAPI and Django route on ``/items/7`` and build URLs that work for the sender.

The scopes declare ASGI spec version 2.4: ``send`` raises :class:`ClientDisconnected` (an
``OSError``) once the sender is gone. Before 2.4, Starlette's ``StreamingResponse`` watches for
the disconnect by calling ``receive`` itself, and so takes request body messages away from an
app that streams its request body into its response.

What the relay's protocol cannot carry, and what this module does about it:

- Response bodies are framed by the relay, so ``Content-Length``, ``Transfer-Encoding``,
  ``Connection`` and the other hop-by-hop headers are dropped. A body the app declares to be at
  most 64 KiB is collected and sent inline on the control channel; any other body is streamed over
  a rendezvous as the app produces it, with backpressure.
- Response headers travel as one JSON object: repeated headers are joined with ``", "``. That
  cannot be done for ``Set-Cookie`` (cookie values and ``Expires`` contain commas, and clients
  read one joined header as one cookie), so only the *last* ``Set-Cookie`` is sent, and the
  dropped ones are logged. Put one cookie per response, or carry state in one cookie.
- The relay drops ``Host``; it is restored as the namespace the sender addressed.
- A WebSocket accept cannot carry headers (``websocket.accept`` ``headers`` are ignored), and a
  refusal carries a status and a reason phrase but no body (the ``websocket.http.response``
  extension sets the status; its body is discarded).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import multiprocessing.connection
import signal
import ssl
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from types import FrameType
from typing import Any, Literal, cast
from urllib.parse import quote, unquote

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hyco_core import (
    INLINE_BODY_LIMIT,
    ConnectionClosed,
    Headers,
    HycoError,
    ListenerStatus,
    ListenerStatusChanged,
    LocalProtocolError,
    parse_relay_url,
    reason_phrase,
)
from hyco_transports.anyio import AcceptContext, HttpRequest, HttpResponse, Listener, WebSocket
from hyco_transports.auth import RelayEndpoint

from ._app_import import AppImportError, import_app
from ._headers import relayed_response_headers

__all__ = [
    "ASGIApp",
    "AppImportError",
    "ClientDisconnected",
    "LifespanMode",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "load_app",
    "run",
    "serve",
    "serve_workers",
]

logger = logging.getLogger("hyco.adapters.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
LifespanMode = Literal["auto", "on", "off"]
StatusHandler = Callable[[ListenerStatusChanged], None]

# How long the app may take to accept or refuse a WebSocket: the relay's accept address is
# valid for about 30 s, and the transport needs time to connect to it.
DECISION_TIMEOUT = 20.0
# How long an accepted WebSocket may wait for its rendezvous (the transport gives up after 20 s).
RENDEZVOUS_WAIT = 30.0

_INTERNAL_ERROR_BODY = b"Internal Server Error"


class ClientDisconnected(ConnectionClosed, OSError):
    """The sender is gone: what ``send`` raises then, for HTTP and WebSockets alike (the ASGI
    spec wants an ``OSError``, which frameworks such as Starlette turn into their own)."""


def _asgi_version() -> dict[str, str]:
    return {"version": "3.0", "spec_version": "2.4"}


# -- HTTP --------------------------------------------------------------------------------------


class _HttpExchange:
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
                    except anyio.ClosedResourceError:
                        # The transport stops the body once the response has started.
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
        status = _status_code(message.get("status"))
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
        self._hand_over(_ResponseBody(self, pieces, first))

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

    def _hand_over(self, body: bytes | _ResponseBody) -> None:
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
            self._hand_over(_INTERNAL_ERROR_BODY)
        elif self._piece_sender is not None:
            # The streamed body ends here; the transport sees ``failed`` and cuts the response.
            self._piece_sender.close()


class _ResponseBody:
    """A streamed response body, pulled by the transport piece by piece.

    If the transport drops it before the end (the sender went away, or the rendezvous could not
    be opened), the finalizer tells the app (``http.disconnect``) and unblocks its ``send``.
    """

    def __init__(
        self, exchange: _HttpExchange, pieces: MemoryObjectReceiveStream[bytes], first: bytes
    ) -> None:
        self._exchange = exchange
        self._pieces = pieces
        self._first = first
        self._finalizer = weakref.finalize(self, exchange.abandon, pieces)

    def __aiter__(self) -> _ResponseBody:
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


def _status_code(status: object) -> int:
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 999:
        return status
    raise LocalProtocolError(f"the status must be an integer from 100 to 999, not {status!r}")


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


# -- WebSockets --------------------------------------------------------------------------------


class _WebSocketSession:
    """One relayed WebSocket through the app, from ``websocket.connect`` to the disconnect.

    The app decides while the accept handler waits (``decided``); the WebSocket itself arrives
    later, once the transport has completed the rendezvous (``attach``).
    """

    def __init__(
        self, app: ASGIApp, scope: Scope, context: AcceptContext, on_abandon: Callable[[], object]
    ) -> None:
        self._app = app
        self._scope = scope
        self._offered = context.subprotocols
        self._on_abandon = on_abandon
        self._connect_delivered = False
        self.decided = anyio.Event()
        self.rejection: tuple[int, str] | None = None
        self.subprotocol: str | None = None
        self._denial_status: int | None = None
        self._attached = anyio.Event()
        self._websocket: WebSocket | None = None
        self._closed: tuple[int, str] | None = None
        self.finished = anyio.Event()
        self.failed = False

    async def run(self) -> None:
        try:
            await self._app(self._scope, self.receive, self.send)
        except ClientDisconnected:
            logger.debug("WebSocket %s: the sender went away", self._scope["path"])
        except Exception:
            self.failed = True
            logger.exception("the application failed on WebSocket %s", self._scope["path"])
        else:
            if not self.decided.is_set():
                logger.error(
                    "the application returned without accepting or refusing WebSocket %s",
                    self._scope["path"],
                )
        finally:
            if not self.decided.is_set():
                self.refuse(500, "Internal Server Error")
            self.finished.set()

    def refuse(self, status: int, description: str) -> None:
        self.rejection = (status, description)
        self.decided.set()

    def attach(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._attached.set()

    def abandon(self, code: int, reason: str = "") -> None:
        """The WebSocket will never be usable: the app's next ``receive`` says disconnect."""
        if self._closed is None:
            self._closed = (code, reason)
        self._attached.set()
        self._on_abandon()

    async def shut_down(self) -> None:
        websocket = self._websocket
        if websocket is None:
            self.abandon(1001, "The server is shutting down")
        else:
            await websocket.close(1001, "The server is shutting down")

    async def _connection(self) -> WebSocket | None:
        """The relayed WebSocket, or ``None`` once it is closed or never came."""
        with anyio.move_on_after(RENDEZVOUS_WAIT):
            await self._attached.wait()
        if self._websocket is None:
            self.abandon(1006)
        return self._websocket if self._closed is None else None

    # -- receive -----------------------------------------------------------------------------

    async def receive(self) -> Message:
        if not self._connect_delivered:
            self._connect_delivered = True
            return {"type": "websocket.connect"}
        await self.decided.wait()
        if self.rejection is None:
            websocket = await self._connection()
            if websocket is not None:
                try:
                    data = await websocket.recv()
                except ConnectionClosed as closed:
                    self._closed = (closed.code, closed.reason)
                else:
                    key = "text" if isinstance(data, str) else "bytes"
                    return {"type": "websocket.receive", key: data}
        code, reason = self._closed or (1006, "")
        return {"type": "websocket.disconnect", "code": code, "reason": reason}

    # -- send --------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.send":
            await self._send(message)
        elif kind == "websocket.close":
            await self._close(message)
        elif kind == "websocket.http.response.start":
            if self.decided.is_set() or self._denial_status is not None:
                raise LocalProtocolError("a denial response must come before any decision")
            self._denial_status = _status_code(message.get("status"))
        elif kind == "websocket.http.response.body":
            if self._denial_status is None or self.decided.is_set():
                raise LocalProtocolError("websocket.http.response.body without a response start")
            if not message.get("more_body", False):
                # The relay's refusal carries a status and a reason phrase, but no body.
                self.refuse(self._denial_status, reason_phrase(self._denial_status))
        else:
            raise LocalProtocolError(f"{kind!r} is not a message for a WebSocket")

    def _accept(self, message: Message) -> None:
        if self.decided.is_set() or self._denial_status is not None:
            raise LocalProtocolError("websocket.accept after the connection was decided")
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and subprotocol not in self._offered:
            raise LocalProtocolError(f"the sender did not offer subprotocol {subprotocol!r}")
        self.subprotocol = subprotocol
        self.decided.set()

    async def _send(self, message: Message) -> None:
        if not self.decided.is_set() or self.rejection is not None:
            raise LocalProtocolError("websocket.send needs an accepted connection")
        data = message.get("bytes")
        payload = message.get("text") if data is None else bytes(data)
        if not isinstance(payload, (str, bytes)):
            raise LocalProtocolError("websocket.send needs 'bytes' or 'text'")
        websocket = await self._connection()
        if websocket is None:
            raise ClientDisconnected(*(self._closed or (1006, "")))
        try:
            await websocket.send(payload)
        except ConnectionClosed as closed:
            self._closed = (closed.code, closed.reason)
            raise ClientDisconnected(closed.code, closed.reason) from None

    async def _close(self, message: Message) -> None:
        reason = message.get("reason") or ""
        if not self.decided.is_set():
            if self._denial_status is not None:
                raise LocalProtocolError("websocket.close in the middle of a denial response")
            self.refuse(403, reason or "Forbidden")
            return
        if self.rejection is not None:
            return
        websocket = await self._connection()
        if websocket is None:
            return
        code = message.get("code") or 1000
        await websocket.close(code, reason)
        self._closed = (websocket.close_code or code, websocket.close_reason or reason)


# -- lifespan ----------------------------------------------------------------------------------


class _Lifespan:
    """The ASGI lifespan protocol: startup before the listener opens, shutdown after it closed."""

    def __init__(self, app: ASGIApp, mode: LifespanMode, timeout: float) -> None:
        self._app = app
        self._mode = mode
        self._timeout = timeout
        self.state: dict[str, Any] = {}
        self.supported = False
        self._received = 0
        self._answered = False
        self._started = anyio.Event()
        self._startup_failure: str | None = None
        self._app_error: Exception | None = None
        self._shutdown_requested = anyio.Event()
        self._shut_down = anyio.Event()
        self._shutdown_failure: str | None = None

    async def startup(self, tasks: anyio.abc.TaskGroup) -> None:
        if self._mode == "off":
            return
        tasks.start_soon(self._run)
        await self._started.wait()
        if self._startup_failure is not None:
            raise HycoError(
                f"the application's lifespan startup failed: {self._startup_failure}"
            ) from self._app_error

    async def shutdown(self) -> None:
        if not self.supported:
            return
        self._shutdown_requested.set()
        with anyio.move_on_after(self._timeout):
            await self._shut_down.wait()
        if not self._shut_down.is_set():
            logger.warning("the application's lifespan shutdown took over %g s", self._timeout)
        elif self._shutdown_failure is not None:
            logger.error("the application's lifespan shutdown failed: %s", self._shutdown_failure)

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": _asgi_version(), "state": self.state}
        try:
            await self._app(scope, self._receive, self._send)
        except Exception as error:
            if self._startup_failure is not None:
                logger.debug("the application raised after its startup failed", exc_info=True)
            elif self._started.is_set():
                logger.exception("the application's lifespan failed")
            elif self._mode == "auto" and not self._answered:
                logger.info("the application does not support the lifespan protocol (%r)", error)
            else:
                self._app_error = error
                self._startup_failure = f"it raised {error!r}"
        else:
            if not self._started.is_set() and self._mode == "on":
                self._startup_failure = "it returned without completing the startup"
        finally:
            self._started.set()
            self._shut_down.set()

    async def _receive(self) -> Message:
        self._received += 1
        if self._received == 1:
            return {"type": "lifespan.startup"}
        if self._received > 2:
            raise LocalProtocolError("lifespan.shutdown was delivered already")
        await self._shutdown_requested.wait()
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: Message) -> None:
        self._answered = True
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.supported = True
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._startup_failure = message.get("message") or "no reason given"
            self._started.set()
        elif kind == "lifespan.shutdown.complete":
            self._shut_down.set()
        elif kind == "lifespan.shutdown.failed":
            self._shutdown_failure = message.get("message") or "no reason given"
            self._shut_down.set()
        else:
            raise LocalProtocolError(f"{kind!r} is not a lifespan message")


# -- the server --------------------------------------------------------------------------------


class _Server:
    """An app behind one listener: the scopes, the handlers the listener calls, the shutdown."""

    def __init__(
        self,
        app: ASGIApp,
        endpoint: RelayEndpoint,
        *,
        lifespan: LifespanMode,
        root_path: str | None,
        shutdown_timeout: float,
        ssl_context: ssl.SSLContext | None,
        on_status: StatusHandler | None,
    ) -> None:
        self._app = app
        self._endpoint = endpoint
        prefix = ("/" + endpoint.path) if root_path is None else root_path
        self._root_path = prefix.rstrip("/")
        self._raw_root_path = quote(self._root_path).encode("ascii")
        self._shutdown_timeout = shutdown_timeout
        self._ssl_context = ssl_context
        self._on_status = on_status
        self._lifespan = _Lifespan(app, lifespan, shutdown_timeout)
        self._stop = anyio.Event()
        self._starting: anyio.CancelScope | None = None
        self._gone: HycoError | None = None
        self._calls: anyio.abc.TaskGroup | None = None
        self._awaiting: dict[str, _WebSocketSession] = {}
        self._open: set[_WebSocketSession] = set()
        self._responding: set[_HttpExchange] = set()
        self._all_sent = anyio.Event()

    def stop(self) -> None:
        self._stop.set()
        if self._starting is not None:
            self._starting.cancel()

    async def stop_when_cancelled(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            self.stop()

    async def run(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Serve until :meth:`stop`; raises a startup failure, or why the listener ended."""
        failure: Exception | None = None
        async with anyio.create_task_group() as lifespan_tasks:
            try:
                with anyio.CancelScope() as self._starting:
                    await self._lifespan.startup(lifespan_tasks)
                self._starting = None
                if not self._stop.is_set():
                    try:
                        await self._serve(task_status)
                    finally:
                        await self._lifespan.shutdown()
            except Exception as error:
                failure = error
            lifespan_tasks.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if self._gone is not None:
            raise self._gone

    async def _serve(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        failure: Exception | None = None
        # The deadline is set when the shutdown starts: in-flight work then has that long.
        with anyio.CancelScope() as serving:
            async with anyio.create_task_group() as self._calls:
                listener = Listener(
                    self._endpoint,
                    accept_handler=self._handle_accept,
                    connection_handler=self._handle_connection,
                    request_handler=self._handle_request,
                    on_status=self._status_changed,
                    ssl_context=self._ssl_context,
                )
                try:
                    async with listener:
                        try:
                            logger.info(
                                "serving on %s/%s (root path %r)",
                                self._endpoint.namespace,
                                self._endpoint.path,
                                self._root_path,
                            )
                            task_status.started()
                            await self._stop.wait()
                            serving.deadline = anyio.current_time() + self._shutdown_timeout
                            await self._wind_down()
                        finally:
                            # Shielded: a listener's exit must not be cancelled halfway.
                            with anyio.CancelScope(shield=True):
                                await listener.close()
                except Exception as error:
                    # Raised outside the task group, which would wrap it in an ExceptionGroup.
                    failure = error
                    self._calls.cancel_scope.cancel()
        if serving.cancelled_caught:
            logger.warning("in-flight work was cancelled after %g s", self._shutdown_timeout)
        if failure is not None:
            raise failure

    async def _wind_down(self) -> None:
        """Close the WebSockets (1001) and let the responses in progress go out.

        The listener stays online meanwhile (new WebSockets are refused with 503): the relay
        fails every request a listener has not answered yet when its control channel closes.
        """
        async with anyio.create_task_group() as closing:
            for session in [*self._open, *self._awaiting.values()]:
                closing.start_soon(session.shut_down)
            while self._responding:
                self._all_sent = anyio.Event()
                await self._all_sent.wait()

    def _status_changed(self, event: ListenerStatusChanged) -> None:
        if event.status is ListenerStatus.CLOSED and event.error is not None:
            self._gone = event.error
            self.stop()
        if self._on_status is not None:
            self._on_status(event)

    # -- scopes ------------------------------------------------------------------------------

    def _base_scope(self, suffix: str, query: str, headers: Headers) -> Scope:
        pairs = [(_wire(name.lower()), _wire(value)) for name, value in headers.items()]
        if "host" not in headers:
            pairs.append((b"host", _wire(self._endpoint.namespace)))
        scope: Scope = {
            "asgi": _asgi_version(),
            "http_version": "1.1",
            "path": self._root_path + unquote(suffix),
            "raw_path": self._raw_root_path + suffix.encode(),
            "query_string": query.encode(),
            "root_path": self._root_path,
            "headers": pairs,
            "server": (self._endpoint.host, self._endpoint.port),
        }
        if self._lifespan.supported:
            scope["state"] = dict(self._lifespan.state)
        return scope

    def _http_scope(self, request: HttpRequest) -> Scope:
        scope = self._base_scope(request.path, request.query, request.headers)
        remote = request.remote_endpoint
        scope.update(
            type="http",
            method=request.method.upper(),
            scheme="https" if self._endpoint.secure else "http",
            client=(remote.address, remote.port) if remote else None,
        )
        return scope

    def _websocket_scope(self, context: AcceptContext) -> Scope:
        url = parse_relay_url(context.accept_message.address, entities=[self._endpoint.path])
        scope = self._base_scope(url.suffix or "/", url.query, context.headers)
        remote = context.remote_endpoint
        scope.update(
            type="websocket",
            scheme="wss" if self._endpoint.secure else "ws",
            client=(remote.address, remote.port) if remote else None,
            subprotocols=list(context.subprotocols),
            extensions={"websocket.http.response": {}},
        )
        return scope

    # -- the listener's handlers -------------------------------------------------------------

    async def _handle_request(self, request: HttpRequest) -> HttpResponse:
        assert self._calls is not None
        exchange = _HttpExchange(
            self._app,
            self._http_scope(request),
            request,
            on_done=lambda: self._response_sent(exchange),
        )
        self._responding.add(exchange)
        self._calls.start_soon(exchange.run)
        with anyio.move_on_after(request.time_left()):
            await exchange.ready.wait()
        response, exchange.response = exchange.response, None
        if response is None:
            # The relay has answered 504 to the sender already; this answer goes nowhere.
            logger.warning("no response to %s %s in time", request.method, request.path)
            exchange.abandon()
            return HttpResponse(503)
        return response

    def _response_sent(self, exchange: _HttpExchange) -> None:
        self._responding.discard(exchange)
        if not self._responding:
            self._all_sent.set()

    async def _handle_accept(self, context: AcceptContext) -> None:
        assert self._calls is not None
        if self._stop.is_set():
            context.reject(503, "The server is shutting down")
            return
        address = context.accept_message.address
        session = _WebSocketSession(
            self._app,
            self._websocket_scope(context),
            context,
            on_abandon=functools.partial(self._awaiting.pop, address, None),
        )
        self._calls.start_soon(session.run)
        with anyio.move_on_after(DECISION_TIMEOUT):
            await session.decided.wait()
        if not session.decided.is_set():
            logger.warning("the application did not accept WebSocket %s in time", context.suffix)
            session.refuse(503, "Service Unavailable")
            session.abandon(1006)
        if session.rejection is not None:
            context.reject(*session.rejection)
            return
        self._awaiting[address] = session
        context.accept(session.subprotocol)

    async def _handle_connection(self, websocket: WebSocket) -> None:
        accept = websocket.accept
        session = self._awaiting.pop(accept.address, None) if accept is not None else None
        if session is None:
            # Given up while the rendezvous was under way: no app is behind it any more.
            code = 1001 if self._stop.is_set() else 1011
            await websocket.close(code, "The connection was given up")
            return
        session.attach(websocket)
        self._open.add(session)
        try:
            if self._stop.is_set():
                await session.shut_down()
            await session.finished.wait()
        finally:
            self._open.discard(session)
        if session.failed:
            await websocket.close(1011, "Internal Error")


def _wire(text: str) -> bytes:
    """A header string as bytes: latin-1 as HTTP has it, UTF-8 for what latin-1 cannot hold."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


# -- entry points ------------------------------------------------------------------------------


async def serve(
    app: ASGIApp,
    connection_string: str | RelayEndpoint,
    *,
    path: str | None = None,
    lifespan: LifespanMode = "auto",
    root_path: str | None = None,
    shutdown_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    on_status: StatusHandler | None = None,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on a hybrid connection until cancelled.

    ``connection_string`` (or a :class:`~hyco_transports.auth.RelayEndpoint`) names the hybrid
    connection; ``path`` gives it when the string has no ``EntityPath``. The app's lifespan
    startup runs first (``lifespan="auto"`` tolerates apps without it, ``"on"`` requires it,
    ``"off"`` skips it); a failed startup raises. Then the listener opens (failing fast with a
    typed error) and ``task_status.started()`` is called. ``root_path`` defaults to
    ``/{hybrid connection}``; give ``""`` to route on the full request path instead.

    When cancelled (or when the hybrid connection is deleted, which raises its error), the
    listener goes offline, open WebSockets are closed with 1001, in-flight requests get
    ``shutdown_timeout`` seconds to finish, and the lifespan shutdown runs.
    """
    if lifespan not in ("auto", "on", "off"):
        raise ValueError(f"lifespan must be 'auto', 'on' or 'off', not {lifespan!r}")
    endpoint = (
        connection_string
        if isinstance(connection_string, RelayEndpoint)
        else RelayEndpoint.from_connection_string(connection_string, path=path)
    )
    server = _Server(
        app,
        endpoint,
        lifespan=lifespan,
        root_path=root_path,
        shutdown_timeout=shutdown_timeout,
        ssl_context=ssl_context,
        on_status=on_status,
    )
    failure: Exception | None = None
    async with anyio.create_task_group() as watcher:
        watcher.start_soon(server.stop_when_cancelled)
        # Shielded: a cancellation becomes an orderly stop (through the watcher), not an abort.
        with anyio.CancelScope(shield=True):
            try:
                await server.run(task_status)
            except Exception as error:
                failure = error
        watcher.cancel_scope.cancel()
    if failure is not None:
        raise failure


def load_app(import_string: str) -> ASGIApp:
    """Import ``"package.module:attribute"`` (the attribute may be dotted) and return the app.

    Raises :class:`AppImportError` when the string names no callable that can be imported.
    """
    return cast(ASGIApp, import_app(import_string, "ASGI"))


def run(
    app: ASGIApp | str,
    connection_string: str,
    *,
    path: str | None = None,
    lifespan: LifespanMode = "auto",
    root_path: str | None = None,
    shutdown_timeout: float = 10.0,
    backend: str = "asyncio",
) -> None:
    """Serve ``app`` (or the app an import string names) until SIGINT or SIGTERM.

    The first signal stops the server in order (see :func:`serve`); later ones are ignored while
    it does. Raises what :func:`serve` raises.
    """
    application = load_app(app) if isinstance(app, str) else app
    anyio.run(
        _serve_until_signalled,
        application,
        connection_string,
        {
            "path": path,
            "lifespan": lifespan,
            "root_path": root_path,
            "shutdown_timeout": shutdown_timeout,
        },
        backend=backend,
    )


async def _serve_until_signalled(
    app: ASGIApp, connection_string: str, options: Mapping[str, Any]
) -> None:
    if sys.platform == "win32":
        # asyncio on Windows cannot watch signals; Ctrl+C interrupts without the orderly stop.
        await serve(app, connection_string, **options)
        return
    failure: Exception | None = None
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tasks:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    logger.info("%s: stopping", signal.Signals(signum).name)
                    tasks.cancel_scope.cancel()

            tasks.start_soon(stop_on_signal)
            try:
                await serve(app, connection_string, **options)
            except Exception as error:
                failure = error
            tasks.cancel_scope.cancel()
    if failure is not None:
        raise failure


def serve_workers(
    import_string: str,
    connection_string: str,
    workers: int,
    *,
    path: str | None = None,
    lifespan: LifespanMode = "auto",
    root_path: str | None = None,
    shutdown_timeout: float = 10.0,
) -> None:
    """Run ``workers`` processes, each serving the app as one more listener on the same hybrid
    connection (the relay spreads senders across listeners; at most 25 per hybrid connection).

    Processes are spawned (each imports the app afresh). SIGINT or SIGTERM stops them in order;
    if one exits on its own with an error, the others are stopped and :class:`HycoError` raised.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    options: dict[str, Any] = {
        "path": path,
        "lifespan": lifespan,
        "root_path": root_path,
        "shutdown_timeout": shutdown_timeout,
    }
    level = logging.getLogger().getEffectiveLevel()
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_worker,
            args=(import_string, connection_string, options, level),
            name=f"hyco-worker-{number}",
        )
        for number in range(1, workers + 1)
    ]
    # SIGTERM stops the workers as Ctrl+C does (signal handlers belong to the main thread).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    failed: list[str] = []
    running: list[multiprocessing.process.BaseProcess] = []
    try:
        for process in processes:
            process.start()
            running.append(process)
        while running and not failed:
            multiprocessing.connection.wait([process.sentinel for process in running])
            for ended in [worker for worker in running if not worker.is_alive()]:
                running.remove(ended)
                if ended.exitcode != 0:
                    failed.append(f"{ended.name} exited with code {ended.exitcode}")
    except KeyboardInterrupt:
        logger.info("stopping %d workers", workers)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        _stop_processes(running, shutdown_timeout + 5.0)
    if failed:
        raise HycoError(f"a worker failed ({failed[0]}); the others were stopped")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_processes(
    processes: Sequence[multiprocessing.process.BaseProcess], timeout: float
) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()


def _worker(
    import_string: str, connection_string: str, options: dict[str, Any], level: int
) -> None:
    logging.basicConfig(level=level, format="%(asctime)s [%(process)d] %(name)s: %(message)s")
    try:
        run(import_string, connection_string, **options)
    except HycoError as error:
        logger.error("%s", error)
        sys.exit(1)

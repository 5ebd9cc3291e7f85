"""WSGI hosting behind a hybrid connection: any PEP 3333 app (Flask, Django, Bottle) serves the
HTTP requests that senders make through Azure Relay, over the blocking transports.

::

    from hyco_adapters.wsgi import load_app, serve

    serve(load_app("myproject.wsgi:application"), connection_string)  # until Ctrl+C or SIGTERM

Routes match as if the app were mounted at ``/{hybrid connection}``: a request to
``https://{namespace}/{entity}/items/7`` has ``SCRIPT_NAME`` ``/{entity}`` and ``PATH_INFO``
``/items/7``, so frameworks route on ``/items/7`` and build URLs that work for the sender.

Concurrency: ``transport="sync"`` answers each request in a thread of its own, ``"gevent"`` in a
greenlet (gevent's sockets, nothing monkey-patched: the app should not block the OS thread). At
most ``workers`` requests are in the app at once, counted until the response body is out;
further requests wait for a slot (backpressure), and one still waiting when the relay's 60 s
deadline passes is answered 503.

What the relay's protocol cannot carry, and what this module does about it (as the ASGI
adapter does):

- Response bodies are framed by the relay, so ``Content-Length``, ``Transfer-Encoding`` and the
  other hop-by-hop headers are dropped. A body the app declares to be at most 64 KiB is
  collected and sent inline; any other body is streamed over a rendezvous as the app's iterable
  produces it. If the app fails once its body has started, the response is cut off (the sender
  sees an incomplete response, never a truncated one passing as whole).
- Only the *last* ``Set-Cookie`` of a response is sent (headers travel as one JSON object).
- The relay drops ``Host``; it is restored as the namespace the sender addressed. Request
  headers whose names hold ``_`` are dropped: in the environ they would be indistinguishable
  from the same name with ``-``.
- The request body's length is known (``CONTENT_LENGTH``) only when the relay sends it whole;
  a streamed body has no ``CONTENT_LENGTH`` and ends where ``wsgi.input`` says so
  (``wsgi.input_terminated`` is set, as Werkzeug expects).
- ``write()`` is supported, but what it is given is sent once the app returns (or when the
  iterable yields next), not before.
- WSGI has no WebSockets: senders' WebSocket connections are refused with 501.
"""

from __future__ import annotations

import collections
import importlib
import logging
import re
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Literal, Protocol, cast
from urllib.parse import unquote_to_bytes

from hyco_core import (
    INLINE_BODY_LIMIT,
    LocalProtocolError,
)
from hyco_transports.auth import RelayEndpoint
from hyco_transports.sync import AcceptContext, HttpRequest, HttpResponse

from ._headers import relayed_response_headers
from .hosting import (
    AppImportError,
    ListenerFate,
    StatusHandler,
    endpoint_of,
    import_app,
    stop_on_signals,
)

__all__ = [
    "AppImportError",
    "Environ",
    "ExcInfo",
    "Server",
    "StartResponse",
    "Transport",
    "WSGIApp",
    "WriteCallable",
    "load_app",
    "serve",
]

logger = logging.getLogger("hyco.adapters.wsgi")

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
WriteCallable = Callable[[bytes], object]
Transport = Literal["sync", "gevent"]


class StartResponse(Protocol):
    """PEP 3333's ``start_response``."""

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = ..., /
    ) -> WriteCallable: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_STATUS = re.compile(r"([1-9][0-9]{2})(?: ([^\r\n\x00]*))?")
_INTERNAL_ERROR_BODY = b"Internal Server Error"
# How often the gevent flavour looks at the stop signal: another OS thread may set it, and
# gevent's own events cannot be set from there.
_STOP_POLL = 0.05


class _Slots(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float | None = ...) -> bool: ...

    def release(self) -> None: ...


# -- the request -------------------------------------------------------------------------------


class _Input:
    """``wsgi.input``: the request body as a binary file, pulled from the relay as it is read."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buffer = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        """Append the next piece to the buffer; ``False`` once the body has ended."""
        if not self._eof:
            piece = next(self._pieces, None)
            if piece is None:
                self._eof = True
            else:
                self._buffer += piece
        return not self._eof

    def _take(self, size: int) -> bytes:
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                length = end + 1
                break
            if 0 <= limit <= len(self._buffer) or not self._fill():
                length = len(self._buffer)
                break
        return self._take(length if limit < 0 else min(length, limit))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


def _wsgi_string(raw: bytes) -> str:
    """Bytes as a PEP 3333 "native string": each byte one latin-1 character."""
    return raw.decode("latin-1")


def _wire(text: str) -> bytes:
    """A header string as bytes: latin-1 as HTTP has it, UTF-8 for what latin-1 cannot hold."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


# -- the response ------------------------------------------------------------------------------


def _parse_status(status: object) -> tuple[int, str]:
    match = _STATUS.fullmatch(status) if isinstance(status, str) else None
    if match is None:
        raise LocalProtocolError(f"the status must look like '200 OK', not {status!r}")
    return int(match[1]), match[2] or ""


def _response_headers(raw: object) -> tuple[list[tuple[str, str]], int | None]:
    """The app's headers as the relay can carry them, and the Content-Length it declared."""
    if not isinstance(raw, list):
        raise LocalProtocolError("the response headers must be a list of (name, value) tuples")
    for pair in raw:
        if not (
            isinstance(pair, tuple)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], str)
        ):
            raise LocalProtocolError("the response headers must be (str, str) tuples")
    return relayed_response_headers(raw, logger)


class _Exchange:
    """One request through the app: ``start_response``, ``write`` and the app's iterable."""

    def __init__(
        self, app: WSGIApp, environ: Environ, description: str, release: Callable[[], None]
    ) -> None:
        self._app = app
        self._environ = environ
        self.description = description
        self._release: Callable[[], None] | None = release
        self._status: tuple[int, str] | None = None
        self._headers: list[tuple[str, str]] = []
        self._length: int | None = None
        self._committed = False
        self._pending: collections.deque[bytes] = collections.deque()
        self._iterable: Iterable[bytes] | None = None
        self._iterator: Iterator[bytes] | None = None

    # -- what the app calls ------------------------------------------------------------------

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None, /
    ) -> WriteCallable:
        error = exc_info[1] if exc_info is not None else None
        if error is not None:
            if self._committed:
                # PEP 3333: too late to change the response, so the app's error goes on.
                raise error
        elif self._status is not None:
            raise LocalProtocolError("start_response was called twice without exc_info")
        self._status = _parse_status(status)
        self._headers, self._length = _response_headers(headers)
        return self._write

    def _write(self, data: bytes) -> None:
        self._pending.append(_checked(data))

    # -- what the transport gets -------------------------------------------------------------

    def respond(self) -> HttpResponse:
        try:
            self._iterable = self._app(self._environ, self.start_response)
            self._iterator = iter(self._iterable)
            first, exhausted = self._prefetch()
        except Exception:
            logger.exception("the application failed on %s", self.description)
            self.close()
            return HttpResponse(
                500, headers=[("Content-Type", "text/plain")], body=_INTERNAL_ERROR_BODY
            )
        except BaseException:
            self.close()
            raise
        assert self._status is not None
        status, reason = self._status
        self._committed = True
        if exhausted or self._bodyless():
            self.close()
            body: bytes | Iterable[bytes] = b"" if self._bodyless() else first
        else:
            body = _ResponseBody(self, first)
        return HttpResponse(status, headers=self._headers, body=body, reason=reason or None)

    def _bodyless(self) -> bool:
        assert self._status is not None
        status = self._status[0]
        return self._environ["REQUEST_METHOD"] == "HEAD" or status in (204, 304) or status < 200

    def _prefetch(self) -> tuple[bytes, bool]:
        """Read up to the first non-empty piece (or, for a small declared body, all of it):
        until then the app may still change its status with ``exc_info``."""
        collected = bytearray()
        exhausted = False
        while self._status is None or not self._bodyless():
            piece = self.next_piece()
            if piece is None:
                exhausted = True
                break
            if not piece:
                continue
            if self._status is None:
                raise LocalProtocolError("the application produced a body before start_response")
            collected += piece
            small = self._length is not None and self._length <= INLINE_BODY_LIMIT
            if not small or len(collected) > INLINE_BODY_LIMIT:
                break
        if self._status is None:
            raise LocalProtocolError("the application returned without calling start_response")
        return bytes(collected), exhausted

    def next_piece(self) -> bytes | None:
        """The next piece of the body (``write()`` output first); ``None`` at its end."""
        assert self._iterator is not None
        while not self._pending:
            piece = next(self._iterator, None)
            if piece is None:
                return None
            self._pending.append(_checked(piece))
        return self._pending.popleft()

    def close(self) -> None:
        """Close the app's iterable (PEP 3333 wants it always closed) and free the slot."""
        release, self._release = self._release, None
        if release is None:
            return
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        except Exception:
            logger.exception("closing the application's response failed on %s", self.description)
        finally:
            release()


def _checked(piece: object) -> bytes:
    if not isinstance(piece, bytes):
        raise LocalProtocolError(f"a WSGI body piece must be bytes, not {type(piece).__name__}")
    return piece


class _ResponseBody:
    """A streamed response body: pulls the app's iterable as the transport sends.

    Whoever drops it unfinished (the sender went away, the rendezvous never opened) closes the
    app's iterable with it.
    """

    def __init__(self, exchange: _Exchange, first: bytes) -> None:
        self._exchange = exchange
        self._first = first

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            return first
        try:
            while (piece := self._exchange.next_piece()) == b"":
                pass
        except Exception as error:
            # The transport logs the traceback as it cuts the response.
            logger.error(
                "the application failed on %s after its response started (%s): cutting it",
                self._exchange.description,
                type(error).__name__,
            )
            self._exchange.close()
            raise
        if piece is None:
            self._exchange.close()
            raise StopIteration
        return piece

    def close(self) -> None:
        """The transport is done with the body: close the app's iterable with it."""
        self._exchange.close()

    def __del__(self) -> None:
        self.close()


# -- the server --------------------------------------------------------------------------------


def _refuse_websocket(context: AcceptContext) -> None:
    context.reject(501, "WebSockets are not served by this WSGI application")


class Server:
    """A WSGI app served on one hybrid connection; :func:`serve` with the signals left out.

    :meth:`serve_forever` blocks in its own thread (for ``"gevent"``, on that thread's hub) until
    :meth:`stop` is called from any thread, or the hybrid connection is gone (then its error is
    raised). Opening fails fast with a typed error.
    """

    def __init__(
        self,
        app: WSGIApp,
        endpoint: RelayEndpoint,
        *,
        transport: Transport = "sync",
        workers: int = 16,
        script_name: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_status: StatusHandler | None = None,
    ) -> None:
        if transport not in ("sync", "gevent"):
            raise ValueError(f"transport must be 'sync' or 'gevent', not {transport!r}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.app = app
        self.endpoint = endpoint
        self.transport = transport
        self.workers = workers
        self._default_script_name = script_name is None
        self.script_name = "/" + endpoint.path if script_name is None else script_name
        self._ssl_context = ssl_context
        self._stop = threading.Event()
        self._online = threading.Event()
        self._fate = ListenerFate(self._stop.set, on_status)
        self.interrupted = False
        """Whether Ctrl-C stopped :meth:`serve_forever` under gevent, whose own signal watcher
        makes it a quiet, orderly stop (the other transports get ``KeyboardInterrupt``)."""

    def __repr__(self) -> str:
        return f"<Server {self.endpoint.namespace}/{self.endpoint.path} {self.transport}>"

    def wait_online(self, timeout: float | None = None) -> bool:
        """Wait (from another thread) until the listener is online; ``False`` on timeout."""
        return self._online.wait(timeout)

    def stop(self) -> None:
        """Go offline in order: answers under way are completed first. Any thread may call it."""
        self._stop.set()

    def serve_forever(self) -> None:
        transport = importlib.import_module(f"hyco_transports.{self.transport}")
        slots = self._slots()
        listener = transport.Listener(
            self.endpoint,
            request_handler=lambda request: self._handle(request, slots),
            accept_handler=_refuse_websocket,
            on_status=self._fate,
            ssl_context=self._ssl_context,
        )
        with listener:
            self._online.set()
            try:
                self._wait_for_stop()
            finally:
                self._online.clear()
        self._fate.raise_if_gone()

    def _interrupt(self) -> None:
        self.interrupted = True
        self.stop()

    def _slots(self) -> _Slots:
        if self.transport == "gevent":
            import gevent.lock  # type: ignore[import-untyped]

            return cast(_Slots, gevent.lock.BoundedSemaphore(self.workers))
        return threading.BoundedSemaphore(self.workers)

    def _wait_for_stop(self) -> None:
        if self.transport == "gevent":
            import gevent

            # A KeyboardInterrupt raised inside gevent's hub is printed by the hub on its way
            # out; a signal watcher of gevent's own makes Ctrl-C a quiet, orderly stop instead.
            on_main_thread = threading.current_thread() is threading.main_thread()
            watcher = (
                gevent.signal_handler(signal.SIGINT, self._interrupt) if on_main_thread else None
            )
            try:
                while not self._stop.is_set():
                    gevent.sleep(_STOP_POLL)
            finally:
                if watcher is not None:
                    watcher.cancel()
        else:
            self._stop.wait()

    def _handle(self, request: HttpRequest, slots: _Slots) -> HttpResponse:
        description = f"{request.method} {request.path}"
        if not slots.acquire(timeout=request.time_left()):
            logger.warning("all %d workers stayed busy; refusing %s", self.workers, description)
            return HttpResponse(503, body=b"Service Unavailable")
        exchange = _Exchange(self.app, self._environ(request), description, slots.release)
        return exchange.respond()

    def _path_info(self, request: HttpRequest) -> bytes:
        if self._default_script_name:
            return unquote_to_bytes(request.path)
        # The transport has taken the hybrid connection's name off ``path``: start over.
        full = unquote_to_bytes(request.target.partition("?")[0])
        prefix = self.script_name.encode()
        if prefix and full.startswith(prefix) and full[len(prefix) :][:1] in (b"", b"/"):
            return full[len(prefix) :]
        return full

    def _environ(self, request: HttpRequest) -> Environ:
        endpoint = self.endpoint
        environ: Environ = {
            "REQUEST_METHOD": request.method.upper(),
            "SCRIPT_NAME": _wsgi_string(self.script_name.encode()),
            "PATH_INFO": _wsgi_string(self._path_info(request)),
            "QUERY_STRING": _wsgi_string(request.query.encode()),
            "SERVER_NAME": endpoint.host,
            "SERVER_PORT": str(endpoint.port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if endpoint.secure else "http",
            "wsgi.input": _Input(request.stream()),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            # Greenlets, like threads, run requests side by side in one process.
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        # The relay sends small bodies whole (their length known), larger ones as a stream.
        inline = request._body
        if inline is not None:
            environ["CONTENT_LENGTH"] = str(len(inline))
        for name, value in request.headers.items():
            if "_" in name:
                continue
            key = name.upper().replace("-", "_")
            if key == "CONTENT_LENGTH":
                continue
            if key != "CONTENT_TYPE":
                key = "HTTP_" + key
            environ[key] = _wsgi_string(_wire(value))
        environ.setdefault("HTTP_HOST", endpoint.namespace)
        remote = request.remote_endpoint
        if remote is not None:
            environ["REMOTE_ADDR"] = remote.address
            environ["REMOTE_PORT"] = str(remote.port)
        return environ


# -- entry points ------------------------------------------------------------------------------


def serve(
    app: WSGIApp,
    connection_string: str | RelayEndpoint,
    *,
    path: str | None = None,
    transport: Transport = "sync",
    workers: int = 16,
    script_name: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    on_status: StatusHandler | None = None,
) -> signal.Signals | None:
    """Serve ``app`` on a hybrid connection until SIGINT (Ctrl-C) or SIGTERM, and return the
    signal.

    ``connection_string`` (or a :class:`~hyco_transports.auth.RelayEndpoint`) names the hybrid
    connection; ``path`` gives it when the string has no ``EntityPath``. ``script_name``
    defaults to ``/{hybrid connection}``; give ``""`` to route on the full request path. At
    most ``workers`` requests run in the app at once; others wait for a slot. ``on_status``
    sees each change of the listener's status.

    On a signal the listener goes offline and the responses under way are completed; later
    signals are ignored meanwhile. Raises the listener's typed error when it cannot open or the
    hybrid connection is deleted.
    """
    server = Server(
        app,
        endpoint_of(connection_string, path),
        transport=transport,
        workers=workers,
        script_name=script_name,
        ssl_context=ssl_context,
        on_status=on_status,
    )
    with stop_on_signals() as stopped:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            logger.info("stopped by a signal")
    if server.interrupted:
        stopped.record(signal.SIGINT)
    return stopped.signal


def load_app(import_string: str) -> WSGIApp:
    """Import ``"package.module:attribute"`` (the attribute may be dotted) and return the app.

    Raises :class:`AppImportError` when the string names no callable that can be imported.
    """
    return cast(WSGIApp, import_app(import_string, "WSGI"))

"""A WSGI app behind one listener (:class:`Server`), and :func:`serve`, which runs it until a
signal."""

from __future__ import annotations

import importlib
import logging
import signal
import ssl
import sys
import threading
from typing import Protocol, cast
from urllib.parse import unquote_to_bytes

from hyco_adapters.hosting import (
    ListenerFate,
    StatusHandler,
    Stopped,
    header_bytes,
    import_app,
    stop_on_signals,
)
from hyco_adapters.vitals import Vitals
from hyco_core import ListenerObserver
from hyco_transports.auth import RelayEndpoint
from hyco_transports.sync import AcceptContext, HttpRequest, HttpResponse

from .interface import Environ, Transport, WSGIApp
from .request import Input, native_string
from .response import Exchange

__all__ = ["Server", "load_app", "serve"]

logger = logging.getLogger("hyco.adapters.wsgi")

# How often the gevent flavour looks at the stop signal: another OS thread may set it, and
# gevent's own events cannot be set from there.
_STOP_POLL = 0.05


class _Slots(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float | None = ...) -> bool: ...

    def release(self) -> None: ...


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
        shutdown_timeout: float = 10.0,
        observer: ListenerObserver | None = None,
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
        self._shutdown_timeout = shutdown_timeout
        self._observer = observer
        self._stop = threading.Event()
        self._online = threading.Event()
        self._fate = ListenerFate(self._stop.set, on_status)
        self.stopped = Stopped()
        """Under gevent, the signal that stopped :meth:`serve_forever`: gevent's own signal
        watchers make SIGINT and SIGTERM a quiet, orderly stop (the other transports get
        ``KeyboardInterrupt``). Replace it to hear the signal as it arrives."""

    def __repr__(self) -> str:
        return f"<Server {self.endpoint.namespace}/{self.endpoint.path} {self.transport}>"

    def wait_online(self, timeout: float | None = None) -> bool:
        """Wait (from another thread) until the listener is online; ``False`` on timeout."""
        return self._online.wait(timeout)

    def stop(self) -> None:
        """Go offline in order: requests arriving meanwhile get 503 with ``Retry-After``, and
        those under way have ``shutdown_timeout`` seconds to complete before they are cut. Any
        thread may call it."""
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
            drain_timeout=self._shutdown_timeout,
            observer=self._observer,
        )
        with listener:
            self._online.set()
            try:
                self._wait_for_stop()
            finally:
                self._online.clear()
        self._fate.raise_if_gone()

    def _signalled(self, signum: signal.Signals) -> None:
        self.stopped.record(signum)
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
            # out; signal watchers of gevent's own make a signal a quiet, orderly stop instead.
            on_main_thread = threading.current_thread() is threading.main_thread()
            watchers = [
                gevent.signal_handler(number, self._signalled, number)
                for number in (signal.SIGINT, signal.SIGTERM)
                if on_main_thread
            ]
            try:
                while not self._stop.is_set():
                    gevent.sleep(_STOP_POLL)
            finally:
                for watcher in watchers:
                    watcher.cancel()
        else:
            self._stop.wait()

    def _handle(self, request: HttpRequest, slots: _Slots) -> HttpResponse:
        description = f"{request.method} {request.path}"
        if not slots.acquire(timeout=request.time_left()):
            logger.warning("all %d workers stayed busy; refusing %s", self.workers, description)
            return HttpResponse(503, body=b"Service Unavailable")
        exchange = Exchange(self.app, self._environ(request), description, slots.release)
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
            "SCRIPT_NAME": native_string(self.script_name.encode()),
            "PATH_INFO": native_string(self._path_info(request)),
            "QUERY_STRING": native_string(request.query.encode()),
            "SERVER_NAME": endpoint.host,
            "SERVER_PORT": str(endpoint.port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if endpoint.secure else "http",
            "wsgi.input": Input(request.stream()),
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
            environ[key] = native_string(header_bytes(value))
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
    shutdown_timeout: float = 10.0,
    vitals: Vitals | None = None,
    observer: ListenerObserver | None = None,
) -> signal.Signals | None:
    """Serve ``app`` on a hybrid connection until SIGINT (Ctrl-C) or SIGTERM, and return the
    signal.

    ``connection_string`` (or a :class:`~hyco_transports.auth.RelayEndpoint`) names the hybrid
    connection; ``path`` gives it when the string has no ``EntityPath``. ``script_name``
    defaults to ``/{hybrid connection}``; give ``""`` to route on the full request path. At
    most ``workers`` requests run in the app at once; others wait for a slot. ``on_status``
    sees each change of the listener's status, ``observer`` what the listener counts.

    On a signal the listener closes: requests arriving get 503 with ``Retry-After``, the
    responses under way get ``shutdown_timeout`` seconds to complete (then they are cut: a
    sender sees an error, never a truncated body passed off as whole); later signals are
    ignored meanwhile. ``vitals``, a command's, hear the stop as the signal arrives, and beat
    from a thread meanwhile (a WSGI server has no event loop of its own). Raises the listener's
    typed error when it cannot open or the hybrid connection is deleted.
    """
    server = Server(
        app,
        RelayEndpoint.of(connection_string, path=path),
        transport=transport,
        workers=workers,
        script_name=script_name,
        ssl_context=ssl_context,
        on_status=on_status,
        shutdown_timeout=shutdown_timeout,
        observer=observer,
    )
    vitals = vitals or Vitals()
    with vitals.beating_in_thread(), stop_on_signals(vitals.stopping) as stopped:
        server.stopped = stopped
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            logger.info("stopped by a signal")
    return stopped.signal


def load_app(import_string: str) -> WSGIApp:
    """Import ``"package.module:attribute"`` (the attribute may be dotted) and return the app.

    Raises :class:`AppImportError` when the string names no callable that can be imported.
    """
    return cast(WSGIApp, import_app(import_string, "WSGI"))

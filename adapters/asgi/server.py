"""An ASGI app behind one listener, and the ways to run it: ``serve`` (in an event loop),
``run`` (until a signal) and ``serve_workers`` (in worker processes)."""

from __future__ import annotations

import functools
import logging
import signal
import ssl
import sys
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import quote, unquote

import anyio
import anyio.abc

from hyco_adapters.hosting import (
    ListenerFate,
    StatusHandler,
    Stopped,
    header_bytes,
    import_app,
    run_worker_processes,
)
from hyco_adapters.log_format import LogFormat, configure_logging
from hyco_adapters.vitals import Vitals
from hyco_core import Headers, HycoError, ListenerObserver, parse_relay_url
from hyco_transports.anyio import AcceptContext, HttpRequest, HttpResponse, Listener, WebSocket
from hyco_transports.auth import RelayEndpoint

from .http import HttpExchange
from .interface import ASGIApp, LifespanMode, Scope, asgi_version
from .lifespan import Lifespan
from .websocket import WebSocketSession

__all__ = ["Server", "load_app", "run", "serve", "serve_workers"]

logger = logging.getLogger("hyco.adapters.asgi")


# How long the app may take to accept or refuse a WebSocket: the relay's accept address is
# valid for about 30 s, and the transport needs time to connect to it.
DECISION_TIMEOUT = 20.0


class Server:
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
        observer: ListenerObserver | None = None,
    ) -> None:
        self._app = app
        self._observer = observer
        self._endpoint = endpoint
        prefix = ("/" + endpoint.path) if root_path is None else root_path
        self._root_path = prefix.rstrip("/")
        self._raw_root_path = quote(self._root_path).encode("ascii")
        self._shutdown_timeout = shutdown_timeout
        self._ssl_context = ssl_context
        self._fate = ListenerFate(self.stop, on_status)
        self._lifespan = Lifespan(app, lifespan, shutdown_timeout)
        self._stop = anyio.Event()
        self._starting: anyio.CancelScope | None = None
        self._calls: anyio.abc.TaskGroup | None = None
        self._awaiting: dict[str, WebSocketSession] = {}
        self._open: set[WebSocketSession] = set()
        self._responding: set[HttpExchange] = set()
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
        self._fate.raise_if_gone()

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
                    on_status=self._fate,
                    ssl_context=self._ssl_context,
                    observer=self._observer,
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
                            with anyio.CancelScope(shield=True):
                                await listener.close()
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

        The listener is closing meanwhile: what the relay still passes it is refused with 503
        and ``Retry-After`` (new WebSockets too), and it goes offline once the answers that
        travel on its control channel are out, for the relay to send the rest elsewhere.
        """
        async with anyio.create_task_group() as closing:
            for session in [*self._open, *self._awaiting.values()]:
                closing.start_soon(session.shut_down)
            while self._responding:
                self._all_sent = anyio.Event()
                await self._all_sent.wait()

    # -- scopes ------------------------------------------------------------------------------

    def _base_scope(self, suffix: str, query: str, headers: Headers) -> Scope:
        pairs = [
            (header_bytes(name.lower()), header_bytes(value)) for name, value in headers.items()
        ]
        if "host" not in headers:
            pairs.append((b"host", header_bytes(self._endpoint.namespace)))
        scope: Scope = {
            "asgi": asgi_version(),
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
        exchange = HttpExchange(
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

    def _response_sent(self, exchange: HttpExchange) -> None:
        self._responding.discard(exchange)
        if not self._responding:
            self._all_sent.set()

    async def _handle_accept(self, context: AcceptContext) -> None:
        assert self._calls is not None
        if self._stop.is_set():
            context.reject(503, "The server is shutting down")
            return
        address = context.accept_message.address
        session = WebSocketSession(
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
    observer: ListenerObserver | None = None,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on a hybrid connection until cancelled.

    ``connection_string`` (or a :class:`~hyco_transports.auth.RelayEndpoint`) names the hybrid
    connection; ``path`` gives it when the string has no ``EntityPath``. The app's lifespan
    startup runs first (``lifespan="auto"`` tolerates apps without it, ``"on"`` requires it,
    ``"off"`` skips it); a failed startup raises. Then the listener opens (failing fast with a
    typed error) and ``task_status.started()`` is called. ``root_path`` defaults to
    ``/{hybrid connection}``; give ``""`` to route on the full request path instead.
    ``on_status`` sees each change of the listener's status, ``observer`` what the listener
    counts.

    When cancelled (or when the hybrid connection is deleted, which raises its error), the
    listener closes (requests arriving meanwhile get 503 with ``Retry-After``, and it goes
    offline once its inline answers are out), open WebSockets are closed with 1001, in-flight
    requests get ``shutdown_timeout`` seconds to finish (then they are cut: a sender sees an
    error, never a truncated body passed off as whole), and the lifespan shutdown runs.
    """
    if lifespan not in ("auto", "on", "off"):
        raise ValueError(f"lifespan must be 'auto', 'on' or 'off', not {lifespan!r}")
    server = Server(
        app,
        RelayEndpoint.of(connection_string, path=path),
        lifespan=lifespan,
        root_path=root_path,
        shutdown_timeout=shutdown_timeout,
        ssl_context=ssl_context,
        on_status=on_status,
        observer=observer,
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
    on_status: StatusHandler | None = None,
    observer: ListenerObserver | None = None,
    backend: str = "asyncio",
    vitals: Vitals | None = None,
) -> signal.Signals | None:
    """Serve ``app`` (or the app an import string names) until SIGINT or SIGTERM, and return
    the signal.

    The first signal stops the server in order (see :func:`serve`); later ones are ignored while
    it does. ``vitals``, a command's, hear the stop as the signal arrives, and beat in the
    server's event loop. Raises what :func:`serve` raises.
    """
    application = load_app(app) if isinstance(app, str) else app
    options = {
        "path": path,
        "lifespan": lifespan,
        "root_path": root_path,
        "shutdown_timeout": shutdown_timeout,
        "on_status": on_status,
        "observer": observer,
    }
    stopped = Stopped(vitals.stopping if vitals is not None else None)
    anyio.run(
        _serve_until_signalled,
        application,
        connection_string,
        options,
        stopped,
        vitals or Vitals(),
        backend=backend,
    )
    return stopped.signal


async def _serve_until_signalled(
    app: ASGIApp,
    connection_string: str,
    options: Mapping[str, Any],
    stopped: Stopped,
    vitals: Vitals,
) -> None:
    # The beats go on while the server stops in order, until it has.
    failure: Exception | None = None
    async with anyio.create_task_group() as beside:
        beside.start_soon(vitals.keep_beating)
        try:
            await _serve_until_stopped(app, connection_string, options, stopped)
        except Exception as error:
            # Raised outside the task group, which would wrap it in an ExceptionGroup.
            failure = error
        beside.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _serve_until_stopped(
    app: ASGIApp, connection_string: str, options: Mapping[str, Any], stopped: Stopped
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
                    stopped.record(signum)
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
    on_status: StatusHandler | None = None,
    on_stop: Callable[[], None] | None = None,
    log_format: LogFormat = "text",
) -> signal.Signals | None:
    """Run ``workers`` processes, each serving the app as one more listener on the same hybrid
    connection (the relay spreads senders across listeners; at most 25 per hybrid connection).

    Processes are spawned: each imports the app afresh, and gets its own copy of ``on_status``,
    which must be picklable; ``log_format`` is how they write their log lines. SIGINT or
    SIGTERM stops them in order (``on_stop`` is called as it arrives), and is returned, as
    :func:`run` does; if one exits on its own with an error, the others are stopped and
    :class:`HycoError` raised.
    """
    options: dict[str, Any] = {
        "path": path,
        "lifespan": lifespan,
        "root_path": root_path,
        "shutdown_timeout": shutdown_timeout,
        "on_status": on_status,
    }
    level = logging.getLogger().getEffectiveLevel()
    return run_worker_processes(
        _worker,
        (import_string, connection_string, options, level, log_format),
        workers,
        shutdown_timeout=shutdown_timeout,
        on_stop=on_stop,
    )


def _worker(
    import_string: str,
    connection_string: str,
    options: dict[str, Any],
    level: int,
    log_format: LogFormat,
    number: int,
) -> None:
    if log_format == "json":
        configure_logging(level, log_format)  # each line names its process
    else:
        logging.basicConfig(level=level, format="%(asctime)s [%(process)d] %(name)s: %(message)s")
    try:
        run(import_string, connection_string, **options)
    except HycoError as error:
        logger.error("%s", error)
        sys.exit(1)

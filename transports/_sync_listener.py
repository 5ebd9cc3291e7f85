"""The blocking listener, written once for :mod:`hyco_transports.sync` and ``.gevent``.

As :mod:`hyco_transports.anyio`'s, with plain calls instead of ``await``: each public module
binds it to its :class:`~._sync_io.Backend` (threads or greenlets). The kernel's supervisor
decides; this module starts a worker per accepted connection and per HTTP exchange.
"""

from __future__ import annotations

import os
import random
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

from hyco_core import (
    RENDEZVOUS_CONFIG,
    AcceptContext,
    AnswerRequest,
    ChannelClosed,
    ChannelState,
    ConnectionClosed,
    ConnectionLostError,
    ControlChannel,
    DefaultAnswer,
    Event,
    HttpRendezvous,
    HycoError,
    InvalidUrlError,
    KeepAlive,
    ListenerObserver,
    ListenerStatus,
    ListenerStatusChanged,
    ListenerSupervisor,
    OfferSender,
    Opened,
    RefreshToken,
    RejectChannel,
    Request,
    RequestBodyReceived,
    RequestReceived,
    ServeRendezvous,
    UnknownContentIgnored,
    WebSocketChannel,
)
from hyco_core.timing import Backoff

from ._listening import ListenerBase, head_of, tell_status
from ._sync_http import HttpRequest, HttpResponse, send_response
from ._sync_io import (
    Backend,
    Mailbox,
    Pump,
    WorkerPool,
    fetch_token,
    monotonic_expiry,
    open_channel,
)
from ._sync_websocket import DEFAULT_MAX_MESSAGE_SIZE, WebSocket, closer
from .auth import RelayEndpoint, RelayToken

__all__ = [
    "AcceptContext",
    "AcceptHandler",
    "ConnectionHandler",
    "Listener",
    "RequestHandler",
    "StatusHandler",
]

_RENDEZVOUS_TIMEOUT = RENDEZVOUS_CONFIG.handshake_timeout
_CONTROL_TIMEOUT = 70.0
_ABORT_WAIT = 5.0

L = TypeVar("L", bound="Listener")


# -- listeners ---------------------------------------------------------------------------------


AcceptHandler = Callable[[AcceptContext], object]
ConnectionHandler = Callable[[WebSocket], object]
RequestHandler = Callable[[HttpRequest], HttpResponse]
StatusHandler = Callable[[ListenerStatusChanged], object]


class Listener(ListenerBase):
    """A listener on one hybrid connection: stays online, accepts WebSockets, answers HTTP.

    Opening (``with``) fails fast with a typed error (bad token, unknown entity, ...). Once
    online, any loss is retried on the backoff schedule until the hybrid connection is gone or
    the listener is closed; ``on_status`` hears every ``connecting`` / ``online`` / ``offline``
    / ``closed``. Handlers are plain callables, each called in a worker of its own.

    Leaving the ``with`` block closes the listener: no new work is taken (requests get 503
    with ``Retry-After``), HTTP answers under way are completed, connections still open are
    closed with 1001 (going away), and every worker is joined; what is still under way after
    ``drain_timeout`` seconds is cut (a sender sees an error, never a truncated body passed off
    as whole).

    ``observer`` hears each sender's outcome, each HTTP answer, the bytes each way and each
    reconnection (see :class:`~hyco_core.ListenerObserver`).
    """

    _backend: ClassVar[Backend]

    def __init__(
        self,
        endpoint: RelayEndpoint,
        *,
        accept_handler: AcceptHandler | None = None,
        connection_handler: ConnectionHandler | None = None,
        request_handler: RequestHandler | None = None,
        on_status: StatusHandler | None = None,
        ssl_context: ssl.SSLContext | None = None,
        backoff: Backoff | None = None,
        keepalive: KeepAlive | None = None,
        tracking_id: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        accept_queue: int = 16,
        drain_timeout: float = ListenerSupervisor.REQUEST_TIMEOUT,
        observer: ListenerObserver | None = None,
    ) -> None:
        backend = self._backend
        super().__init__(
            endpoint,
            serves_http=request_handler is not None,
            on_status=on_status,
            ssl_context=ssl_context,
            backoff=backoff,
            keepalive=keepalive,
            tracking_id=tracking_id,
            max_message_size=max_message_size,
            observer=observer,
        )
        self._drain_timeout = drain_timeout
        self._accept_handler = accept_handler
        self._connection_handler = connection_handler
        self._request_handler = request_handler
        self._accepted: Mailbox[WebSocket] = Mailbox(backend, accept_queue)
        self._lock = backend.lock()
        self._control: Pump[ControlChannel] | None = None
        self._workers = WorkerPool(backend, "hyco-listener")
        self._websockets: set[WebSocket] = set()
        self._rendezvous: set[Pump[HttpRendezvous]] = set()
        self._first_outcome = backend.signal()
        self._closing = backend.signal()
        self._ended = backend.signal()
        self._leaving = False

    def __enter__(self: L) -> L:
        self._workers.spawn(self._run)
        self._first_outcome.wait()
        if self.status is not ListenerStatus.ONLINE:
            self._workers.join(time.monotonic() + _ABORT_WAIT)
            self._notify()
            raise self.last_error or ConnectionLostError("the listener could not open")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
        with self._lock:
            self._leaving = True
            websockets = list(self._websockets)
        for websocket in [*self._accepted.discard(), *websockets]:
            self._say_goodbye(websocket)
        self._retire_idle_rendezvous()
        if not self._workers.join(time.monotonic() + self._drain_timeout):
            self._backend.logger.warning("listener work still under way; dropping connections")
            with self._lock:
                pumps: list[Pump[Any]] = [ws._pump for ws in self._websockets]
                pumps += self._rendezvous
                if self._control is not None:
                    pumps.append(self._control)
            for pump in pumps:
                pump.abort()
            if not self._workers.join(time.monotonic() + _ABORT_WAIT):
                self._backend.logger.warning("some listener handlers did not return")
        self._notify()

    def __iter__(self) -> Iterator[WebSocket]:
        while (websocket := self._accepted.get()) is not None:
            yield websocket

    def accept(self, timeout: float | None = None) -> WebSocket:
        """The next accepted connection (when no connection handler is set).

        Raises ``TimeoutError`` after ``timeout`` seconds, and
        :class:`~hyco_core.ConnectionClosed` (code 1001) once the listener is closed.
        """
        websocket = self._accepted.get(timeout)
        if websocket is None:
            raise self._closed_error()
        return websocket

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the listener is offline for good: after :meth:`close`, or when the relay
        ends it (its hybrid connection was deleted), then raise the relay's reason. ``False``
        when ``timeout`` passed first."""
        if not self._ended.wait(timeout):
            return False
        if not self._closing.is_set() and self.last_error is not None:
            raise self.last_error
        return True

    def close(self) -> None:
        """Go offline: no new connections; in-flight responses and connections continue.

        Work the relay still announces is declined with 503. The control channel stays open
        until the requests that arrived on it are answered, as their answers travel on it.
        """
        with self._lock:
            if not self._supervisor.close():
                return
            self._closing.set()
            control = self._control
            drained = self._supervisor.control_may_close
        for unclaimed in self._accepted.discard():
            self._say_goodbye(unclaimed)
        if control is not None and drained:
            control.call(closer(1000, "listener closed"))
        self._retire_idle_rendezvous()

    # -- workers -----------------------------------------------------------------------------

    # -- the control channel -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._stay_online()
        finally:
            self._first_outcome.set()
            self._accepted.close()
            self._notify()
            self._ended.set()

    def _stay_online(self) -> None:
        supervisor = self._supervisor
        while True:
            with self._lock:
                if self._closing.is_set():
                    return
                supervisor.connecting()
            self._notify()
            error: HycoError | None
            try:
                control, leftover = self._open_control()
            except HycoError as failure:
                error = failure
            else:
                with self._lock:
                    online = supervisor.online()
                    if online:
                        self._control = control
                if not online:  # closed while it opened
                    control.close_socket()
                    return
                self._notify()
                self._first_outcome.set()
                closed = self._serve_control(control, leftover)
                with self._lock:
                    self._control = None
                error = closed.error if closed else None
            with self._lock:
                delay = supervisor.lost(error, random_fraction=random.random())  # noqa: S311
            self._notify()
            if delay is None:
                return
            self._backend.logger.warning(
                "listener offline (%s); reconnecting in %.1f s", self.last_error, delay
            )
            self._closing.wait(delay)

    def _open_control(self) -> tuple[Pump[ControlChannel], list[Event]]:
        token = self._token()
        channel = self._supervisor.control_channel(
            token.token if token else None,
            monotonic_expiry(token),
            now=time.monotonic(),
            nonce=os.urandom(16),
        )
        pump, _opened, leftover = open_channel(
            self._backend,
            self._supervisor.control_url,
            channel,
            ssl_context=self._ssl_context,
            timeout=_CONTROL_TIMEOUT,
        )
        return pump, leftover

    def _token(self) -> RelayToken | None:
        try:
            return fetch_token(self._backend, self.endpoint.token_provider, self.endpoint.resource)
        except HycoError:
            raise
        except Exception as error:
            raise self._supervisor.token_failure(error) from error

    def _serve_control(
        self, control: Pump[ControlChannel], leftover: list[Event]
    ) -> ChannelClosed | None:
        closed: list[ChannelClosed] = []

        def on_event(event: Event) -> None:
            if isinstance(event, ChannelClosed):
                closed.append(event)
                return
            with self._lock:
                work = self._supervisor.dispatch(event, now=time.monotonic())
            if isinstance(work, OfferSender):
                self._workers.spawn(self._handle_accept, work)
            elif isinstance(work, AnswerRequest):
                self._workers.spawn(self._answer_inline, control, work)
            elif isinstance(work, ServeRendezvous):
                self._workers.spawn(self._serve_rendezvous, work.request.address)
            elif isinstance(work, RefreshToken):
                control.hurry = True  # set before the renewal starts, cleared as it lands
                self._workers.spawn(self._renew, control)
            elif isinstance(event, UnknownContentIgnored):
                self._backend.logger.debug(
                    "ignored %.100s from the relay %.200s", event.kind, event.fields
                )

        control.run(on_event, leftover)
        return closed[0] if closed else None

    def _renew(self, control: Pump[ControlChannel]) -> None:
        try:
            token = self._token()
        except HycoError:
            self._backend.logger.exception(
                "could not get a fresh token; the relay will close at expiry"
            )
            token = None
        expires_at = monotonic_expiry(token)

        def renew(channel: ControlChannel) -> None:
            control.hurry = False
            if token is not None and channel.state is ChannelState.OPEN:
                channel.renew_token(token.token, now=time.monotonic(), expires_at=expires_at)

        control.call(renew)

    def _notify(self) -> None:
        with self._lock:
            events = self._supervisor.status_changes()
        tell_status(events, self._on_status, path=self.endpoint.path, logger=self._backend.logger)

    # -- accepting WebSockets ----------------------------------------------------------------

    def _handle_accept(self, work: OfferSender) -> None:
        logger = self._backend.logger
        accept = work.accept
        supervisor = self._supervisor
        try:
            context = work.context()
        except InvalidUrlError as error:  # the relay's address is unusable: nothing to answer
            logger.warning("could not complete the rendezvous for %s: %s", accept.id, error)
            with self._lock:
                supervisor.rendezvous_failed(error)
            return
        if work.refusal is None and self._accept_handler is not None:
            try:
                self._accept_handler(context)
            except Exception:
                logger.exception("the accept handler failed; rejecting with 502")
                context.reject(*ListenerSupervisor.ACCEPT_HANDLER_FAILED)
        try:
            channel = supervisor.rendezvous_channel(
                context, now=time.monotonic(), nonce=os.urandom(16)
            )
            accepted, opened, leftover = self._open(accept.address, channel)
        except HycoError as error:
            logger.warning("could not complete the rendezvous for %s: %s", accept.id, error)
            with self._lock:
                supervisor.rendezvous_failed(error)
            return
        with self._lock:
            supervisor.rendezvous_opened(work, context, now=time.monotonic())
        if isinstance(channel, RejectChannel):
            accepted.close_socket()
            return
        assert opened is not None
        websocket = WebSocket(
            accepted,
            opened,
            max_message_size=self._max_message_size,
            accept=accept,
            observer=self._observer,
        )
        with self._lock:
            self._websockets.add(websocket)
            leaving = self._leaving
        self._workers.spawn(self._read_websocket, websocket, leftover)
        if leaving:
            self._say_goodbye(websocket)
            return
        if self._connection_handler is not None:
            try:
                self._connection_handler(websocket)
            except ConnectionClosed as closed:
                logger.debug("connection %s ended: %s", accept.id, closed)
            except Exception:
                # One connection's failure must not take the listener down.
                logger.exception("the connection handler failed; closing with 1011")
                websocket.close(*ListenerSupervisor.CONNECTION_HANDLER_FAILED)
            else:
                websocket.close()
            return
        if not self._accepted.put(websocket):
            websocket.close(*ListenerSupervisor.UNCLAIMED)

    def _read_websocket(self, websocket: WebSocket, leftover: list[Event]) -> None:
        try:
            websocket._run(leftover)
        finally:
            with self._lock:
                self._websockets.discard(websocket)

    def _say_goodbye(self, websocket: WebSocket) -> None:
        """Start closing with 1001 (going away), without waiting for the answer."""
        try:
            websocket._begin_close(*ListenerSupervisor.UNCLAIMED)
        except HycoError as error:
            self._backend.logger.debug("could not close %r: %s", websocket, error)

    def _open(
        self, address: str, channel: WebSocketChannel
    ) -> tuple[Pump[Any], Opened | None, list[Event]]:
        return open_channel(
            self._backend,
            address,
            channel,
            ssl_context=self._ssl_context,
            timeout=_RENDEZVOUS_TIMEOUT,
        )

    # -- HTTP --------------------------------------------------------------------------------

    def _answer_inline(self, control: Pump[ControlChannel], work: AnswerRequest) -> None:
        request = work.request
        try:
            http_request = self._http_request(request, body=work.body)
            response = self._respond(http_request, work.default)
            inline = response.body if isinstance(response.body, bytes) else None
            if self._supervisor.answers_inline(inline):
                head = head_of(request, response)
                answer = inline or b""

                def send(channel: ControlChannel) -> bool:
                    if channel.state is not ChannelState.OPEN:
                        return False
                    channel.send_response(head, answer)
                    return True

                if control.call(send):
                    if self._observer is not None and answer:
                        self._observer.sent("http", len(answer))
                    self._answered(http_request, head)
                return
            # Too big for the control channel: answer over a rendezvous, which the relay then
            # uses for this sender's later requests. Once it is open, the request is answered.
            opened = self._open_rendezvous(request.address, request)
            if opened is not None:
                rendezvous, leftover = opened
                self._workers.spawn(
                    self._send_response, rendezvous, request, http_request, response
                )
                self._workers.spawn(self._run_rendezvous, rendezvous, leftover)
        finally:
            with self._lock:
                drained = self._supervisor.answered()
            if drained:
                control.call(closer(1000, "listener closed"))

    def _serve_rendezvous(self, address: str) -> None:
        opened = self._open_rendezvous(address, None)
        if opened is not None:
            self._run_rendezvous(*opened)

    def _open_rendezvous(
        self, address: str, request: Request | None
    ) -> tuple[Pump[HttpRendezvous], list[Event]] | None:
        channel = HttpRendezvous(
            address=address,
            now=time.monotonic(),
            nonce=os.urandom(16),
            request=request,
            config=self._supervisor.rendezvous_config,
        )
        try:
            pump, _, leftover = self._open(address, channel)
        except HycoError as error:
            self._backend.logger.warning("could not open the HTTP rendezvous: %s", error)
            return None
        with self._lock:
            self._rendezvous.add(pump)
        return pump, leftover

    def _run_rendezvous(self, rendezvous: Pump[HttpRendezvous], leftover: list[Event]) -> None:
        """Serve every exchange on an HTTP rendezvous until the relay closes it."""
        pieces: Mailbox[bytes] | None = None

        def on_event(event: Event) -> None:
            nonlocal pieces
            if isinstance(event, RequestReceived):
                receiver: Mailbox[bytes] | None = None
                if event.body is None:
                    pieces = receiver = Mailbox(self._backend, 4)
                http_request = self._http_request(event.request, body=event.body, pieces=receiver)
                with self._lock:
                    default = self._supervisor.default_answer()
                self._workers.spawn(
                    self._answer_on_rendezvous, rendezvous, event.request, http_request, default
                )
            elif isinstance(event, RequestBodyReceived) and pieces is not None:
                self._body_piece_arrived(event.data)
                if event.data:
                    pieces.put(event.data)
                if event.final:
                    pieces.close()
                    pieces = None
                    self._retire_if_idle(rendezvous)

        try:
            rendezvous.run(on_event, leftover)
        finally:
            if pieces is not None:
                pieces.close(complete=False)
            with self._lock:
                self._rendezvous.discard(rendezvous)

    def _answer_on_rendezvous(
        self,
        rendezvous: Pump[HttpRendezvous],
        request: Request,
        http_request: HttpRequest,
        default: DefaultAnswer | None,
    ) -> None:
        response = self._respond(http_request, default)
        if http_request._pieces is not None:
            http_request._pieces.discard()
        self._send_response(rendezvous, request, http_request, response)

    def _send_response(
        self,
        rendezvous: Pump[HttpRendezvous],
        request: Request,
        http_request: HttpRequest,
        response: HttpResponse,
    ) -> None:
        head = head_of(request, response)
        if send_response(rendezvous, head, response.body, self._backend.logger, self._observer):
            self._answered(http_request, head)
            self._retire_if_idle(rendezvous)

    def _retire_if_idle(self, rendezvous: Pump[HttpRendezvous]) -> None:
        """Once the listener is closing, close a rendezvous between exchanges."""
        if self._closing.is_set():
            rendezvous.call(_retire, wait=False)

    def _retire_idle_rendezvous(self) -> None:
        with self._lock:
            idle = list(self._rendezvous)
        for rendezvous in idle:
            rendezvous.call(_retire)

    def _respond(self, request: HttpRequest, default: DefaultAnswer | None) -> HttpResponse:
        if default is None and self._request_handler is not None:
            try:
                return self._request_handler(request)
            except Exception:
                self._backend.logger.exception(
                    "the request handler failed on %s %s", request.method, request.path
                )
                default = ListenerSupervisor.HANDLER_FAILED
        answer = default or ListenerSupervisor.NOT_SERVED
        return HttpResponse(
            answer.status, headers=answer.headers, body=answer.body, reason=answer.reason
        )

    def _http_request(
        self,
        request: Request,
        *,
        body: bytes | None,
        pieces: Mailbox[bytes] | None = None,
    ) -> HttpRequest:
        http_request = HttpRequest.arrived(request, entity=self.endpoint.path, body=body)
        http_request._pieces = pieces
        self._request_arrived(body)
        return http_request


def _retire(channel: HttpRendezvous) -> None:
    channel.retire_if_idle(now=time.monotonic())

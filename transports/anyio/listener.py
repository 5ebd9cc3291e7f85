"""A listener on anyio: the kernel's supervisor decides, this module does the I/O (tasks, sockets,
calling the handlers)."""

from __future__ import annotations

import logging
import os
import random
import ssl
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import suppress
from types import TracebackType

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

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
    RefreshToken,
    RejectChannel,
    Request,
    RequestBodyReceived,
    RequestReceived,
    Response,
    ServeRendezvous,
    UnknownContentIgnored,
)
from hyco_core.timing import Backoff
from hyco_transports._listening import ListenerBase, head_of, tell_status
from hyco_transports.auth import RelayEndpoint, RelayToken
from hyco_transports.pump import ChannelSocket, Clock

from .http import HttpRequest, HttpResponse, send_response
from .sockets import close_stream, fetch_token, monotonic_expiry, open_socket
from .websocket import DEFAULT_MAX_MESSAGE_SIZE, WebSocket

__all__ = ["HttpRequest", "HttpResponse", "Listener"]


logger = logging.getLogger("hyco.transports.anyio")


AcceptHandler = Callable[[AcceptContext], Awaitable[None]]
ConnectionHandler = Callable[[WebSocket], Awaitable[None]]
RequestHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]
StatusHandler = Callable[[ListenerStatusChanged], None]


class Listener(ListenerBase):
    """A listener on one hybrid connection: stays online, accepts WebSockets, answers HTTP.

    Opening fails fast with a typed error (bad token, unknown entity, ...). Once online, any loss
    is retried on the backoff schedule until the hybrid connection is gone or the listener is
    closed; ``on_status`` hears every ``connecting`` / ``online`` / ``offline`` / ``closed``.

    Leaving the ``async with`` block closes the listener: no new work is taken (requests get
    503 with ``Retry-After``), HTTP answers under way are completed, connections still open are
    closed with 1001 (going away), and every task is awaited; what is still under way after
    ``drain_timeout`` seconds is cut (a sender sees an error, never a truncated body passed off
    as whole).

    ``observer`` hears each sender's outcome, each HTTP answer, the bytes each way and each
    reconnection (see :class:`~hyco_core.ListenerObserver`).
    """

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
        sender, receiver = anyio.create_memory_object_stream[WebSocket](accept_queue)
        self._accepted: MemoryObjectSendStream[WebSocket] = sender
        self._connections: MemoryObjectReceiveStream[WebSocket] = receiver
        self._control: ChannelSocket | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._work: anyio.abc.TaskGroup | None = None
        self._clock = Clock()  # keeps the time of the accepted WebSockets
        self._first_outcome = anyio.Event()
        self._closing = anyio.Event()
        self._ended = anyio.Event()
        self._answers_sent = anyio.Event()  # set once every inline request is answered
        # Accepted, perhaps still open: held weakly, as an idle connection's memory counts.
        self._websockets: weakref.WeakSet[WebSocket] = weakref.WeakSet()
        self._http_rendezvous: set[ChannelSocket] = set()  # open, serving a sender's requests

    async def __aenter__(self) -> Listener:
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._run)
        try:
            await self._first_outcome.wait()
        except BaseException:
            # Cancelled while opening: the block never runs, so its exit must happen here.
            self._tasks.cancel_scope.cancel()
            try:
                await self._tasks.__aexit__(None, None, None)
            finally:
                self._connections.close()
            raise
        if self.status is not ListenerStatus.ONLINE:
            error = self.last_error
            await self._tasks.__aexit__(None, None, None)
            self._connections.close()
            raise error or ConnectionLostError("the listener could not open")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._tasks is not None
        # The work under way has this long; then it is cancelled.
        self._tasks.cancel_scope.deadline = anyio.current_time() + self._drain_timeout
        try:
            with anyio.CancelScope(shield=True):
                await self.close()
                await self._say_goodbye()
                with anyio.move_on_after(self._drain_timeout):
                    await self._answers_sent.wait()
                await self._release_control()  # answered or not: the relay has given up
        finally:
            try:
                if isinstance(exc, Exception):
                    # The block's own error: stop the work and let the error out as itself (the
                    # task group would wrap it in an ExceptionGroup).
                    self._tasks.cancel_scope.cancel()
                    await self._tasks.__aexit__(None, None, None)
                    suppressed = None
                else:
                    suppressed = await self._tasks.__aexit__(exc_type, exc, traceback)
            finally:
                self._connections.close()
        return suppressed

    def __aiter__(self) -> AsyncIterator[WebSocket]:
        return self._connections.__aiter__()

    async def wait_closed(self) -> None:
        """Wait until the listener is offline for good: after :meth:`close`, or when the relay
        ends it (its hybrid connection was deleted); then raise the relay's reason."""
        await self._ended.wait()
        if not self._closing.is_set() and self.last_error is not None:
            raise self.last_error

    async def accept(self) -> WebSocket:
        """The next accepted connection (when no connection handler is set).

        Raises :class:`~hyco_core.ConnectionClosed` (code 1001) once the listener is closed.
        """
        try:
            return await self._connections.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            pass
        raise self._closed_error()  # outside the handler: its cause is the listener's failure

    async def close(self) -> None:
        """Go offline: no new connections; in-flight responses and connections continue.

        Work the relay still announces is declined with 503. The control channel stays open
        until the requests that arrived on it are answered, as their answers travel on it.
        """
        if not self._supervisor.close():
            return
        self._closing.set()
        self._notify()
        self._accepted.close()
        while True:
            try:
                unclaimed = self._connections.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            await unclaimed.close(*ListenerSupervisor.UNCLAIMED)
        for rendezvous in list(self._http_rendezvous):
            await self._retire_if_idle(rendezvous)
        if self._supervisor.control_may_close:
            await self._release_control()

    async def _release_control(self) -> None:
        """Close the control channel: the listener is closing and its requests are answered."""
        self._answers_sent.set()
        control = self._control
        if control is not None:
            await control.release(1000, "listener closed")

    # -- the control channel -----------------------------------------------------------------

    async def _run(self) -> None:
        async with anyio.create_task_group() as timekeeping:
            timekeeping.start_soon(self._clock.run)
            async with anyio.create_task_group() as work:
                self._work = work
                try:
                    await self._stay_online()
                finally:
                    self._ended.set()
                # Wait for in-flight work, but stop reconnecting.
            timekeeping.cancel_scope.cancel()

    async def _stay_online(self) -> None:
        try:
            await self._connect_and_reconnect()
        finally:
            # However the listener's life ends: an open that waits hears the outcome, and
            # iteration over accepted connections ends.
            self._first_outcome.set()
            self._accepted.close()

    async def _connect_and_reconnect(self) -> None:
        supervisor = self._supervisor
        while not self._closing.is_set():
            supervisor.connecting()
            self._notify()
            error: HycoError | None
            try:
                control, leftover = await self._open_control()
            except HycoError as failure:
                error = failure
            else:
                if not supervisor.online():  # closed while it opened
                    await control.release(1000, "listener closed")
                    await close_stream(control.stream)
                    return
                self._control = control
                self._notify()
                self._first_outcome.set()
                closed = await self._serve_control(control, leftover)
                error = closed.error if closed else None
            delay = supervisor.lost(error, random_fraction=random.random())  # noqa: S311
            self._notify()
            if delay is None:
                return
            logger.warning("listener offline (%s); reconnecting in %.1f s", self.last_error, delay)
            with anyio.move_on_after(delay):
                await self._closing.wait()

    async def _open_control(self) -> tuple[ChannelSocket, list[Event]]:
        token = await self._fetch_token()
        channel = self._supervisor.control_channel(
            token.token if token else None,
            monotonic_expiry(token),
            now=time.monotonic(),
            nonce=os.urandom(16),
        )
        socket, _opened, leftover = await open_socket(
            self._supervisor.control_url, channel, ssl_context=self._ssl_context, timeout=70.0
        )
        return socket, leftover

    async def _fetch_token(self) -> RelayToken | None:
        try:
            return await fetch_token(self.endpoint.token_provider, self.endpoint.resource)
        except HycoError:
            raise
        except Exception as error:
            raise self._supervisor.token_failure(error) from error

    async def _serve_control(
        self, socket: ChannelSocket, leftover: list[Event]
    ) -> ChannelClosed | None:
        closed: list[ChannelClosed] = []

        async def on_event(event: Event) -> None:
            if isinstance(event, ChannelClosed):
                closed.append(event)
            else:
                self._on_control_event(event)

        try:
            for event in leftover:
                await on_event(event)
            await socket.run(on_event)
        finally:
            await close_stream(socket.stream)
        return closed[0] if closed else None

    def _on_control_event(self, event: Event) -> None:
        tasks = self._work
        assert tasks is not None
        work = self._supervisor.dispatch(event, now=time.monotonic())
        if isinstance(work, OfferSender):
            tasks.start_soon(_contained, self._handle_accept, work)
        elif isinstance(work, AnswerRequest):
            tasks.start_soon(_contained, self._answer_inline, work)
        elif isinstance(work, ServeRendezvous):
            tasks.start_soon(_contained, self._serve_http_rendezvous, work.request)
        elif isinstance(work, RefreshToken):
            tasks.start_soon(_contained, self._renew)
        elif isinstance(event, UnknownContentIgnored):
            logger.debug("ignored %.100s from the relay %.200s", event.kind, event.fields)

    async def _renew(self) -> None:
        control = self._control
        try:
            token = await self._fetch_token()
        except HycoError:
            logger.exception("could not get a fresh token; the relay will close at expiry")
            return
        if control is None or token is None or control.channel.state is not ChannelState.OPEN:
            return
        channel = control.channel
        assert isinstance(channel, ControlChannel)
        channel.renew_token(token.token, now=time.monotonic(), expires_at=monotonic_expiry(token))
        await control.flush()

    def _notify(self) -> None:
        changes = self._supervisor.status_changes()
        tell_status(changes, self._on_status, path=self.endpoint.path, logger=logger)

    # -- accepting WebSockets ----------------------------------------------------------------

    async def _handle_accept(self, work: OfferSender) -> None:
        accept = work.accept
        websocket = await self._open_accepted(work)
        if websocket is None:
            return
        if self._connection_handler is not None:
            code, reason = 1000, ""
            try:
                await self._connection_handler(websocket)
            except ConnectionClosed as closed:
                logger.debug("connection %s ended: %s", accept.id, closed)
            except Exception:
                # One connection's failure must not take the listener down.
                logger.exception("the connection handler failed; closing with 1011")
                code, reason = ListenerSupervisor.CONNECTION_HANDLER_FAILED
            finally:
                with anyio.CancelScope(shield=True):
                    await websocket.close(code, reason)
            return
        try:
            await self._accepted.send(websocket)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            await websocket.close(*ListenerSupervisor.UNCLAIMED)

    async def _open_accepted(self, work: OfferSender) -> WebSocket | None:
        """Decide, then open the rendezvous (or reject it); an accepted WebSocket comes back
        with its reader running. Nothing of the handshake outlives this call."""
        accept = work.accept
        supervisor = self._supervisor
        try:
            context = work.context()
        except InvalidUrlError as error:  # the relay's address is unusable: nothing to answer
            logger.warning("could not complete the rendezvous for %s: %s", accept.id, error)
            supervisor.rendezvous_failed(error)
            return None
        if work.refusal is None and self._accept_handler is not None:
            try:
                await self._accept_handler(context)
            except Exception:
                logger.exception("the accept handler failed; rejecting with 502")
                context.reject(*ListenerSupervisor.ACCEPT_HANDLER_FAILED)
        try:
            channel = supervisor.rendezvous_channel(
                context, now=time.monotonic(), nonce=os.urandom(16)
            )
            socket, opened, leftover = await open_socket(
                accept.address,
                channel,
                ssl_context=self._ssl_context,
                timeout=RENDEZVOUS_CONFIG.handshake_timeout,
            )
        except HycoError as error:
            logger.warning("could not complete the rendezvous for %s: %s", accept.id, error)
            supervisor.rendezvous_failed(error)
            return None
        supervisor.rendezvous_opened(work, context, now=time.monotonic())
        if isinstance(channel, RejectChannel):
            await close_stream(socket.stream)
            return None
        assert opened is not None
        socket.clock = self._clock
        websocket = WebSocket(
            socket,
            opened,
            max_message_size=self._max_message_size,
            accept=accept,
            observer=self._observer,
        )
        tasks = self._work
        assert tasks is not None
        self._websockets.add(websocket)
        tasks.start_soon(websocket._run, leftover)
        return websocket

    async def _say_goodbye(self) -> None:
        """Close the connections still open with 1001 (going away), all at once."""
        async with anyio.create_task_group() as closing:
            for websocket in list(self._websockets):
                closing.start_soon(websocket.close, *ListenerSupervisor.UNCLAIMED)

    # -- HTTP --------------------------------------------------------------------------------

    async def _answer_inline(self, work: AnswerRequest) -> None:
        try:
            await self._answer_inline_now(work)
        finally:
            if self._supervisor.answered():
                await self._release_control()

    async def _answer_inline_now(self, work: AnswerRequest) -> None:
        request = work.request
        http_request = self._http_request(request, body=work.body)
        response = await self._respond(http_request, work.default)
        control = self._control
        if control is None:
            return
        head = head_of(request, response)
        inline = response.body if isinstance(response.body, bytes) else None
        if self._supervisor.answers_inline(inline):
            channel = control.channel
            assert isinstance(channel, ControlChannel)
            if channel.state is ChannelState.OPEN:
                channel.send_response(head, inline or b"")
                await control.flush()
                if self._observer is not None and inline:
                    self._observer.sent("http", len(inline))
                self._answered(http_request, head)
            return
        # Too large for the control channel: answer over a rendezvous, then keep serving the
        # same sender's later requests on it, as the relay expects.
        await self._serve_http_rendezvous(request, answer=(http_request, head, response.body))

    async def _serve_http_rendezvous(
        self,
        announced: Request,
        *,
        answer: tuple[HttpRequest, Response, bytes | AsyncIterable[bytes]] | None = None,
    ) -> None:
        rendezvous = HttpRendezvous(
            address=announced.address,
            now=time.monotonic(),
            nonce=os.urandom(16),
            request=announced if answer is not None else None,
            config=self._supervisor.rendezvous_config,
        )
        try:
            socket, _, leftover = await open_socket(
                announced.address,
                rendezvous,
                ssl_context=self._ssl_context,
                timeout=RENDEZVOUS_CONFIG.handshake_timeout,
            )
        except HycoError as error:
            logger.warning("could not open the HTTP rendezvous: %s", error)
            return
        self._http_rendezvous.add(socket)
        if answer is not None:
            answered, head, body = answer
            if await send_response(socket, rendezvous, head, body, self._observer):
                self._answered(answered, head)
            await self._retire_if_idle(socket)
        pieces: MemoryObjectSendStream[bytes] | None = None
        receiving: HttpRequest | None = None  # the request whose body ``pieces`` carries
        work = self._work
        assert work is not None

        async def on_event(event: Event) -> None:
            nonlocal pieces, receiving
            if isinstance(event, RequestReceived):
                receiver: MemoryObjectReceiveStream[bytes] | None = None
                if event.body is None:
                    pieces, receiver = anyio.create_memory_object_stream[bytes](4)
                http_request = self._http_request(event.request, body=event.body, pieces=receiver)
                receiving = http_request
                default = self._supervisor.default_answer()
                work.start_soon(
                    _contained,
                    self._answer_on_rendezvous,
                    socket,
                    event.request,
                    http_request,
                    default,
                )
            elif isinstance(event, RequestBodyReceived) and pieces is not None:
                self._body_piece_arrived(event.data)
                if event.data:
                    # The handler may have finished without reading it all: drop the rest.
                    with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await pieces.send(event.data)
                if event.final:
                    assert receiving is not None
                    receiving._complete = True
                    pieces.close()
                    pieces = None
                    await self._retire_if_idle(socket)

        try:
            for event in leftover:
                await on_event(event)
            await socket.run(on_event)
        finally:
            self._http_rendezvous.discard(socket)
            if pieces is not None:
                pieces.close()
            await close_stream(socket.stream)

    async def _retire_if_idle(self, socket: ChannelSocket) -> None:
        """Once the listener is closing, close a rendezvous between exchanges."""
        channel = socket.channel
        assert isinstance(channel, HttpRendezvous)
        if self._closing.is_set() and channel.retire_if_idle(now=time.monotonic()):
            await socket.flush()

    async def _answer_on_rendezvous(
        self,
        socket: ChannelSocket,
        request: Request,
        http_request: HttpRequest,
        default: DefaultAnswer | None,
    ) -> None:
        response = await self._respond(http_request, default)
        channel = socket.channel
        assert isinstance(channel, HttpRendezvous)
        try:
            if channel.state is ChannelState.OPEN:
                head = head_of(request, response)
                if await send_response(socket, channel, head, response.body, self._observer):
                    self._answered(http_request, head)
                await self._retire_if_idle(socket)
        finally:
            # Only now: a streamed response may still be reading the request body.
            if http_request._pieces is not None:
                http_request._pieces.close()

    async def _respond(self, request: HttpRequest, default: DefaultAnswer | None) -> HttpResponse:
        if default is None and self._request_handler is not None:
            try:
                return await self._request_handler(request)
            except Exception:
                logger.exception(
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
        pieces: MemoryObjectReceiveStream[bytes] | None = None,
    ) -> HttpRequest:
        http_request = HttpRequest.arrived(request, entity=self.endpoint.path, body=body)
        http_request._pieces = pieces
        self._request_arrived(body)
        return http_request


async def _contained(function: Callable[..., Awaitable[None]], *args: object) -> None:
    """Run one piece of a listener's work; its failure is logged, never the listener's end."""
    try:
        await function(*args)
    except Exception:
        logger.exception("a listener task failed; the listener carries on")

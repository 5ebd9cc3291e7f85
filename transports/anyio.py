"""hyco on anyio (asyncio or trio): listeners, senders and HTTP, as thin glue around hyco_core.

Sender::

    async with connect(connection_string) as ws:
        await ws.send("hello")
        print(await ws.recv())

Listener::

    async with Listener.from_connection_string(connection_string) as listener:
        async for ws in listener:
            ...

All protocol decisions are the kernel's; this module opens sockets, runs one reader task per
socket, keeps the kernel's timers and hands out messages with backpressure.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from anyio.streams.tls import TLSStream

from hyco_core import (
    RENDEZVOUS_CONFIG,
    Accept,
    AcceptContext,
    AnswerRequest,
    ChannelClosed,
    ChannelConfig,
    ChannelState,
    ConnectionClosed,
    ConnectionLostError,
    ControlChannel,
    DefaultAnswer,
    Event,
    HandshakeRefused,
    Headers,
    HttpRendezvous,
    HycoError,
    InvalidUrlError,
    KeepAlive,
    ListenerStatus,
    ListenerStatusChanged,
    ListenerSupervisor,
    LocalProtocolError,
    MessageAssembly,
    MessageReceived,
    OfferSender,
    Opened,
    RefreshToken,
    RejectDelivered,
    RelayedWebSocket,
    RemoteProtocolError,
    Request,
    RequestBodyReceived,
    RequestReceived,
    Response,
    ServeRendezvous,
    UnknownContentIgnored,
    WebSocketChannel,
    accept_connection,
    connection_closed,
    reject_connection,
    sender_channel,
    tracking_id_from,
)
from hyco_core.timing import Backoff

from ._listening import RequestInfo, head_of, tell_status
from .auth import RelayEndpoint, RelayToken, TokenProvider
from .errors import connect_failure
from .proxy import ProxyError, connect_request, parse_connect_response, proxy_for
from .pump import READ_SIZE, STREAM_ERRORS, ChannelSocket, Clock, LazyEvent, MessageQueue

__all__ = [
    "AcceptContext",
    "HttpRequest",
    "HttpResponse",
    "Listener",
    "WebSocket",
    "connect",
]

logger = logging.getLogger("hyco.transports.anyio")

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
_CLOSE_WRITE_TIMEOUT = 10.0
_RESPONSE_PIECE = 64 * 1024


# -- opening sockets ---------------------------------------------------------------------------


async def _open(
    url: str,
    channel: WebSocketChannel,
    *,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
) -> tuple[ChannelSocket, Opened | None, list[Event]]:
    """Connect to ``url`` and run the handshake of ``channel``.

    Returns the socket, the ``Opened`` event (``None`` when the handshake ended otherwise, e.g. a
    delivered rejection) and the events that followed it. Refusals raise their typed error.
    """
    parts = urlsplit(url)
    secure = parts.scheme in ("wss", "https")
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    stream: anyio.abc.ByteStream
    try:
        with anyio.fail_after(timeout):
            stream = await _connect_stream(host, port, secure=secure, ssl_context=ssl_context)
    except (OSError, anyio.EndOfStream, anyio.BrokenResourceError) as error:
        raise connect_failure(error, host, port, secure=secure, timeout=timeout) from None
    socket = ChannelSocket(stream, channel)
    try:
        await socket.flush()
        while True:
            events = channel.events()
            for index, event in enumerate(events):
                if isinstance(event, Opened):
                    return socket, event, events[index + 1 :]
                if isinstance(event, HandshakeRefused):
                    raise event.error
                if isinstance(event, RejectDelivered):
                    return socket, None, []
                if isinstance(event, ChannelClosed):
                    raise event.error or ConnectionLostError("closed during the handshake")
            deadline = channel.get_timer()
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            with anyio.move_on_after(wait):
                try:
                    data = await stream.receive(READ_SIZE)
                except STREAM_ERRORS:
                    channel.receive_eof()
                else:
                    channel.receive_data(data, time.monotonic())
                continue
            channel.handle_timer(time.monotonic())
    except BaseException:
        await _close(stream)
        raise


async def _connect_stream(
    host: str, port: int, *, secure: bool, ssl_context: ssl.SSLContext | None
) -> anyio.abc.ByteStream:
    """TCP (through an HTTP CONNECT proxy when the environment names one), then TLS."""
    proxy = proxy_for(host, secure=secure)
    if proxy is None:
        if secure:
            return await anyio.connect_tcp(
                host, port, tls=True, ssl_context=ssl_context, tls_standard_compatible=False
            )
        return await anyio.connect_tcp(host, port)
    stream: anyio.abc.ByteStream = await anyio.connect_tcp(proxy.host, proxy.port)
    try:
        await stream.send(connect_request(host, port, proxy))
        head = b""
        while (end := parse_connect_response(head)) is None:
            head += await stream.receive()
        if head[end:]:
            raise ProxyError("the proxy sent data before the tunnel was used")
        if secure:
            stream = await TLSStream.wrap(
                stream,
                hostname=host,
                ssl_context=ssl_context or ssl.create_default_context(),
                standard_compatible=False,
            )
    except BaseException:
        await _close(stream)
        raise
    return stream


async def _close(stream: anyio.abc.AsyncResource) -> None:
    """Close a stream even while the closing task is being cancelled."""
    with anyio.CancelScope(shield=True):
        await stream.aclose()


async def _token(provider: TokenProvider | None, resource: str) -> RelayToken | None:
    if provider is None:
        return None
    if provider.blocking:
        return await anyio.to_thread.run_sync(provider.get_token, resource)
    return provider.get_token(resource)


# -- relayed WebSockets ------------------------------------------------------------------------


class WebSocket:
    """An end-to-end WebSocket through the relay: a sender's, or one a listener accepted.

    ``recv`` returns whole messages (``str`` for text, ``bytes`` for binary); a slow reader slows
    the peer down. Iterating yields messages until the connection closes normally.
    """

    __slots__ = (
        "_assembly",
        "_closed",
        "_done",
        "_local_close",
        "_messages",
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
    ) -> None:
        self._socket = socket
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
            if closed.code in (1000, 1001) and closed.__cause__ is None:
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
        self._local_close = (code, reason)
        self._messages.discard()
        self._channel().close(code, reason, now=time.monotonic())
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
            await _close(self._socket.stream)
            self._socket.mark_released()

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            try:
                whole = self._assembly.add(event.data, event.final)
            except RemoteProtocolError:
                self._channel().close(*MessageAssembly.TOO_BIG, now=time.monotonic())
                return
            if whole is not None:
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
    token = await _token(endpoint.token_provider, endpoint.resource)
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
    socket, opened, leftover = await _open(
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


# -- listeners ---------------------------------------------------------------------------------


@dataclass
class HttpRequest(RequestInfo):
    """An HTTP request a sender made through the relay.

    ``path`` is the part after the hybrid connection's name (``/`` at least); ``deadline`` is the
    monotonic time by which the relay wants the answer (60 s after arrival).
    """

    _pieces: MemoryObjectReceiveStream[bytes] | None = field(default=None, repr=False)

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, piece by piece, as it arrives."""
        if self._body is not None:
            if self._body:
                yield self._body
            return
        if self._pieces is not None:
            async for piece in self._pieces:
                yield piece

    async def body(self) -> bytes:
        return b"".join([piece async for piece in self.stream()])


@dataclass
class HttpResponse:
    """A handler's answer. ``body`` may be bytes or an async iterable of bytes (streamed)."""

    status: int = 200
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()
    body: bytes | AsyncIterable[bytes] = b""
    reason: str | None = None


AcceptHandler = Callable[[AcceptContext], Awaitable[None]]
ConnectionHandler = Callable[[WebSocket], Awaitable[None]]
RequestHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]
StatusHandler = Callable[[ListenerStatusChanged], None]


class Listener:
    """A listener on one hybrid connection: stays online, accepts WebSockets, answers HTTP.

    Opening fails fast with a typed error (bad token, unknown entity, ...). Once online, any loss
    is retried on the backoff schedule until the hybrid connection is gone or the listener is
    closed; ``on_status`` hears every ``connecting`` / ``online`` / ``offline`` / ``closed``.
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
    ) -> None:
        self.endpoint = endpoint
        self._accept_handler = accept_handler
        self._connection_handler = connection_handler
        self._request_handler = request_handler
        self._on_status = on_status
        self._ssl_context = ssl_context
        self._supervisor = ListenerSupervisor(
            namespace=endpoint.namespace,
            path=endpoint.path,
            secure=endpoint.secure,
            tracking_id=tracking_id or tracking_id_from(os.urandom(16)),
            serves_http=request_handler is not None,
            keepalive=keepalive,
            backoff=backoff,
        )
        self.tracking_id = self._supervisor.tracking_id
        self._max_message_size = max_message_size
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

    @classmethod
    def from_connection_string(
        cls, connection_string: str, *, path: str | None = None, **options: object
    ) -> Listener:
        endpoint = RelayEndpoint.from_connection_string(connection_string, path=path)
        return cls(endpoint, **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<Listener {self.endpoint.namespace}/{self.endpoint.path} {self.status.value}>"

    @property
    def status(self) -> ListenerStatus:
        return self._supervisor.status

    @property
    def last_error(self) -> HycoError | None:
        return self._supervisor.last_error

    async def __aenter__(self) -> Listener:
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._run)
        await self._first_outcome.wait()
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
        try:
            with anyio.CancelScope(shield=True):
                await self.close()
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
        """The next accepted connection (when no connection handler is set)."""
        return await self._connections.receive()

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
        if not self._supervisor.control_may_close:
            with anyio.move_on_after(ListenerSupervisor.REQUEST_TIMEOUT):
                await self._answers_sent.wait()
        while True:
            try:
                unclaimed = self._connections.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            await unclaimed.close(*ListenerSupervisor.UNCLAIMED)
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
                    await _close(control.stream)
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
        token = await self._token()
        channel = self._supervisor.control_channel(
            token.token if token else None,
            _monotonic_expiry(token),
            now=time.monotonic(),
            nonce=os.urandom(16),
        )
        socket, _opened, leftover = await _open(
            self._supervisor.control_url, channel, ssl_context=self._ssl_context, timeout=70.0
        )
        return socket, leftover

    async def _token(self) -> RelayToken | None:
        try:
            return await _token(self.endpoint.token_provider, self.endpoint.resource)
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
            await _close(socket.stream)
        return closed[0] if closed else None

    def _on_control_event(self, event: Event) -> None:
        tasks = self._work
        assert tasks is not None
        work = self._supervisor.dispatch(event)
        if isinstance(work, OfferSender):
            tasks.start_soon(_contained, self._handle_accept, work.accept, work.refusal)
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
            token = await self._token()
        except HycoError:
            logger.exception("could not get a fresh token; the relay will close at expiry")
            return
        if control is None or token is None or control.channel.state is not ChannelState.OPEN:
            return
        channel = control.channel
        assert isinstance(channel, ControlChannel)
        channel.renew_token(token.token, now=time.monotonic(), expires_at=_monotonic_expiry(token))
        await control.flush()

    def _notify(self) -> None:
        changes = self._supervisor.status_changes()
        tell_status(changes, self._on_status, path=self.endpoint.path, logger=logger)

    # -- accepting WebSockets ----------------------------------------------------------------

    async def _handle_accept(self, accept: Accept, refusal: tuple[int, str] | None) -> None:
        websocket = await self._open_accepted(accept, refusal)
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

    async def _open_accepted(
        self, accept: Accept, refusal: tuple[int, str] | None
    ) -> WebSocket | None:
        """Decide, then open the rendezvous (or reject it); an accepted WebSocket comes back
        with its reader running. Nothing of the handshake outlives this call."""
        try:
            context = AcceptContext(accept)
        except InvalidUrlError as error:  # the relay's address is unusable: nothing to answer
            logger.warning("could not complete the rendezvous for %s: %s", accept.id, error)
            return None
        if refusal is not None:
            context.reject(*refusal)
        elif self._accept_handler is not None:
            try:
                await self._accept_handler(context)
            except Exception:
                logger.exception("the accept handler failed; rejecting with 502")
                context.reject(*ListenerSupervisor.ACCEPT_HANDLER_FAILED)
        try:
            if context.rejection is not None:
                status, description = context.rejection
                channel: WebSocketChannel = reject_connection(
                    accept,
                    status_code=status,
                    description=description,
                    now=time.monotonic(),
                    nonce=os.urandom(16),
                )
                socket, _, _ = await _open(
                    accept.address,
                    channel,
                    ssl_context=self._ssl_context,
                    timeout=RENDEZVOUS_CONFIG.handshake_timeout,
                )
                await _close(socket.stream)
                return None
            channel = accept_connection(
                accept,
                subprotocol=context.subprotocol,
                now=time.monotonic(),
                nonce=os.urandom(16),
                config=self._supervisor.rendezvous_config,
            )
            socket, opened, leftover = await _open(
                accept.address,
                channel,
                ssl_context=self._ssl_context,
                timeout=RENDEZVOUS_CONFIG.handshake_timeout,
            )
        except HycoError as error:
            logger.warning("could not complete the rendezvous for %s: %s", accept.id, error)
            return None
        assert opened is not None
        socket.clock = self._clock
        websocket = WebSocket(
            socket, opened, max_message_size=self._max_message_size, accept=accept
        )
        work = self._work
        assert work is not None
        work.start_soon(websocket._run, leftover)
        return websocket

    # -- HTTP --------------------------------------------------------------------------------

    async def _answer_inline(self, work: AnswerRequest) -> None:
        try:
            await self._answer_inline_now(work)
        finally:
            if self._supervisor.answered():
                self._answers_sent.set()

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
            return
        # Too large for the control channel: answer over a rendezvous, then keep serving the
        # same sender's later requests on it, as the relay expects.
        await self._serve_http_rendezvous(request, answer=(head, response.body))

    async def _serve_http_rendezvous(
        self,
        announced: Request,
        *,
        answer: tuple[Response, bytes | AsyncIterable[bytes]] | None = None,
    ) -> None:
        rendezvous = HttpRendezvous(
            address=announced.address,
            now=time.monotonic(),
            nonce=os.urandom(16),
            request=announced if answer is not None else None,
            config=self._supervisor.rendezvous_config,
        )
        try:
            socket, _, leftover = await _open(
                announced.address,
                rendezvous,
                ssl_context=self._ssl_context,
                timeout=RENDEZVOUS_CONFIG.handshake_timeout,
            )
        except HycoError as error:
            logger.warning("could not open the HTTP rendezvous: %s", error)
            return
        if answer is not None:
            await _send_response(socket, rendezvous, *answer)
        pieces: MemoryObjectSendStream[bytes] | None = None
        work = self._work
        assert work is not None

        async def on_event(event: Event) -> None:
            nonlocal pieces
            if isinstance(event, RequestReceived):
                receiver: MemoryObjectReceiveStream[bytes] | None = None
                if event.body is None:
                    pieces, receiver = anyio.create_memory_object_stream[bytes](4)
                http_request = self._http_request(event.request, body=event.body, pieces=receiver)
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
                if event.data:
                    # The handler may have finished without reading it all: drop the rest.
                    with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await pieces.send(event.data)
                if event.final:
                    pieces.close()
                    pieces = None

        try:
            for event in leftover:
                await on_event(event)
            await socket.run(on_event)
        finally:
            if pieces is not None:
                pieces.close()
            await _close(socket.stream)

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
                await _send_response(socket, channel, head, response.body)
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
        return HttpResponse(answer.status, body=answer.body, reason=answer.reason)

    def _http_request(
        self,
        request: Request,
        *,
        body: bytes | None,
        pieces: MemoryObjectReceiveStream[bytes] | None = None,
    ) -> HttpRequest:
        http_request = HttpRequest.arrived(request, entity=self.endpoint.path, body=body)
        http_request._pieces = pieces
        return http_request


async def _contained(function: Callable[..., Awaitable[None]], *args: object) -> None:
    """Run one piece of a listener's work; its failure is logged, never the listener's end."""
    try:
        await function(*args)
    except Exception:
        logger.exception("a listener task failed; the listener carries on")


async def _send_response(
    socket: ChannelSocket,
    channel: HttpRendezvous,
    head: Response,
    body: bytes | AsyncIterable[bytes],
) -> None:
    """Send a response over a rendezvous. If the sender is gone or a streamed body fails, the
    rendezvous is closed without the final frame, so the sender sees a cut, never a truncated
    body that looks complete."""
    try:
        channel.send_response(head)
        await socket.flush()
        if not head.body:
            return
        if isinstance(body, bytes):
            for start in range(0, len(body), _RESPONSE_PIECE):
                piece = body[start : start + _RESPONSE_PIECE]
                channel.send_body(piece, final=start + _RESPONSE_PIECE >= len(body))
                await socket.flush()
            return
        pieces = aiter(body)
        try:
            async for piece in pieces:
                if piece:
                    channel.send_body(piece, final=False)
                    await socket.flush()
        finally:
            # Closed here, not left to the garbage collector: a producer blocked on a full
            # body learns at once that nobody reads it any more.
            close = getattr(pieces, "aclose", None)
            if close is not None:
                await close()
        channel.send_body(b"", final=True)
        await socket.flush()
    except LocalProtocolError:
        logger.info("the HTTP rendezvous closed before the response was sent")
    except Exception:
        logger.exception("the response body failed; cutting the response")
        await socket.release(1011, "The response failed")


def _monotonic_expiry(token: RelayToken | None) -> float | None:
    """A token's Unix expiry on the monotonic clock the kernel runs on."""
    if token is None or token.expires_at is None:
        return None
    return time.monotonic() + (token.expires_at - time.time())

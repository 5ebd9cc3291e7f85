"""The blocking I/O shared by the sync and gevent transports: backends, streams, channel pumps.

Both transports run this code. A :class:`Backend` supplies what differs between them: how a
worker starts (a thread or a greenlet), locks, events, TCP connections, and waiting until a
socket is readable. TLS is done in memory (``ssl.SSLObject``) over the backend's socket, so it
behaves the same under both, with any ``ssl.SSLContext``.

One worker reads each socket and feeds its kernel channel (:meth:`Pump.run`); any worker may act
on the channel (:meth:`Pump.call`); writes leave in the order the kernel produced them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Generic, ParamSpec, Protocol, TypeVar
from urllib.parse import urlsplit

from hyco_core import (
    ChannelState,
    Event,
    Opened,
    WebSocketChannel,
    handshake_outcome,
)

from .auth import RelayToken, TokenProvider
from .errors import connect_failure
from .proxy import ProxyError, connect_request, parse_connect_response, proxy_for

__all__ = [
    "READ_SIZE",
    "Backend",
    "Lock",
    "Mailbox",
    "Pump",
    "RawSocket",
    "Signal",
    "Stream",
    "Worker",
    "WorkerPool",
    "fetch_token",
    "monotonic_expiry",
    "open_channel",
]

READ_SIZE = 65536
_TLS_PIECE = 256 * 1024

# While another worker is about to move a channel's timer (a token renewal in flight), the
# reader cannot be woken early, so it looks again this often.
_HURRY_INTERVAL = 0.05

# How long closing a socket lets a writer finish what the kernel queued last (the answer to
# the peer's close) before the shutdown cuts it off; only a peer that stopped reading makes
# a writer take this long.
_WRITER_GRACE = 2.0

T = TypeVar("T")
P = ParamSpec("P")
C = TypeVar("C", bound=WebSocketChannel)
R = TypeVar("R")


# -- what a backend provides -------------------------------------------------------------------


class Lock(Protocol):
    """A non-reentrant lock: ``threading.Lock`` or ``gevent.lock.Semaphore``."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...

    def __enter__(self) -> object: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> object: ...


class Signal(Protocol):
    """A settable flag others wait on: ``threading.Event`` or ``gevent.event.Event``."""

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = ...) -> bool: ...


class Worker(Protocol):
    """A running worker (a thread or a greenlet)."""

    def join(self, timeout: float | None = ...) -> None: ...

    def is_alive(self) -> bool: ...


class RawSocket(Protocol):
    """The part of a connected socket this module uses (stdlib or gevent)."""

    def recv(self, size: int, /) -> bytes: ...

    def sendall(self, data: bytes, /) -> None: ...

    def shutdown(self, how: int, /) -> None: ...

    def close(self) -> None: ...

    def fileno(self) -> int: ...


class Backend(Protocol):
    """What differs between the thread and the gevent flavours of the blocking transport."""

    logger: logging.Logger

    def spawn(self, function: Callable[[], None], name: str) -> Worker:
        """Start ``function`` in a new worker."""
        ...

    def lock(self) -> Lock: ...

    def signal(self) -> Signal: ...

    def connect_tcp(self, host: str, port: int, timeout: float) -> RawSocket:
        """A connected TCP socket in blocking mode (no timeout), Nagle off."""
        ...

    def wait_readable(self, sock: RawSocket, timeout: float | None) -> bool:
        """Wait until ``sock`` has data or its end; ``False`` when ``timeout`` passed first."""
        ...

    def run_blocking(self, function: Callable[[], T]) -> T:
        """Run a call that blocks the OS thread (a token fetch) without stalling the others."""
        ...


# -- a bounded, closable queue -----------------------------------------------------------------


class WorkerPool:
    """The workers one listener started, each running one piece of its work: spawned, and all
    joined at the end. A piece's failure is logged, never the listener's end."""

    def __init__(self, backend: Backend, name: str) -> None:
        self._backend = backend
        self._name = name
        self._lock = backend.lock()
        self._workers: list[Worker] = []

    def spawn(self, function: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        logger = self._backend.logger

        def work() -> None:
            try:
                function(*args, **kwargs)
            except Exception:
                logger.exception("a listener worker failed")

        with self._lock:
            self._workers = [worker for worker in self._workers if worker.is_alive()]
            self._workers.append(self._backend.spawn(work, self._name))

    def join(self, deadline: float) -> bool:
        """Wait until every worker has finished; ``False`` when ``deadline`` passed first."""
        while True:
            with self._lock:
                self._workers = [worker for worker in self._workers if worker.is_alive()]
                workers = list(self._workers)
            if not workers:
                return True
            for worker in workers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                worker.join(remaining)


class Mailbox(Generic[T]):
    """A bounded queue between workers that either side can close.

    ``put`` waits for room (backpressure). The producer ends the stream with :meth:`close`:
    consumers still get what is queued, then ``None``. The consumer leaves with
    :meth:`discard`: what is queued is handed back and waiting producers are released. Neither
    ``queue.Queue`` (before Python 3.13) nor ``gevent.queue.Queue`` can be closed, so this is
    built from the backend's lock and signals.
    """

    def __init__(self, backend: Backend, capacity: int) -> None:
        self._items: deque[T] = deque()
        self._capacity = max(1, capacity)
        self._lock = backend.lock()
        self._readable = backend.signal()
        self._writable = backend.signal()
        self._writable.set()
        self._ended = False
        self.complete = True

    def put(self, item: T) -> bool:
        """Queue ``item``, waiting for room; ``False`` (item dropped) once closed."""
        while True:
            self._writable.wait()
            with self._lock:
                if self._ended:
                    return False
                if len(self._items) < self._capacity:
                    self._items.append(item)
                    self._readable.set()
                    if len(self._items) >= self._capacity:
                        self._writable.clear()
                    return True

    def get(self, timeout: float | None = None) -> T | None:
        """The next item, or ``None`` once closed and empty; ``TimeoutError`` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._readable.wait(remaining):
                raise TimeoutError(f"nothing arrived within {timeout:g} s")
            with self._lock:
                if self._items:
                    item = self._items.popleft()
                    if not self._ended:
                        self._writable.set()
                        if not self._items:
                            self._readable.clear()
                    return item
                if self._ended:
                    return None

    def close(self, *, complete: bool = True) -> None:
        """The producer is done; ``complete=False`` says the stream was cut short."""
        with self._lock:
            if not self._ended:
                self.complete = complete
            self._ended = True
            self._readable.set()
            self._writable.set()

    def discard(self) -> list[T]:
        """The consumer is gone: close, and return what was still queued."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._ended = True
            self._readable.set()
            self._writable.set()
        return items


# -- one TCP connection, with TLS in memory ----------------------------------------------------


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the system's CA certificates takes milliseconds; one context serves every socket.
    return ssl.create_default_context()


class Stream:
    """A connected socket, encrypted when :meth:`start_tls` ran.

    One worker receives; senders are serialised by the caller. ``shutdown`` may come from any
    worker: it wakes a blocked reader (with the end of the stream) and writer (with an error).
    """

    def __init__(self, backend: Backend, sock: RawSocket) -> None:
        self._backend = backend
        self._sock = sock
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls_lock = backend.lock()

    def tunnel(self, request: bytes, deadline: float) -> None:
        """Ask an HTTP proxy for a tunnel (``CONNECT``) and wait for its answer."""
        self._sock.sendall(request)
        head = b""
        while (end := parse_connect_response(head)) is None:
            if not self._backend.wait_readable(self._sock, max(0.0, deadline - time.monotonic())):
                raise TimeoutError("the proxy did not answer CONNECT in time")
            data = self._sock.recv(READ_SIZE)
            if not data:
                raise ProxyError("the proxy closed the connection instead of opening a tunnel")
            head += data
        if head[end:]:
            raise ProxyError("the proxy sent data before the tunnel was used")

    def start_tls(self, context: ssl.SSLContext, server_hostname: str, deadline: float) -> None:
        """Run the TLS handshake (certificate and host name checked as ``context`` says)."""
        tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            pending = self._outgoing.read()
            if pending:
                self._sock.sendall(pending)
            if not self._backend.wait_readable(self._sock, max(0.0, deadline - time.monotonic())):
                raise TimeoutError("the TLS handshake did not finish in time")
            data = self._sock.recv(READ_SIZE)
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()
        pending = self._outgoing.read()
        if pending:
            self._sock.sendall(pending)
        self._tls = tls

    def receive(self, timeout: float | None) -> bytes | None:
        """Bytes read; ``b""`` at the end of the stream; ``None`` when ``timeout`` passed first."""
        tls = self._tls
        if tls is None:
            if not self._backend.wait_readable(self._sock, timeout):
                return None
            return self._sock.recv(READ_SIZE)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._tls_lock:
                try:
                    return tls.read(READ_SIZE)
                except ssl.SSLWantReadError:
                    pass
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return b""
            # What TLS itself wants to send now (a key update) leaves with the next write.
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._backend.wait_readable(self._sock, remaining):
                return None
            data = self._sock.recv(READ_SIZE)
            with self._tls_lock:
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()

    def send(self, data: bytes) -> None:
        """Write all of ``data``; the caller makes sure only one worker sends at a time."""
        tls = self._tls
        if tls is None:
            self._sock.sendall(data)
            return
        view = memoryview(data)
        # Piece by piece, so that a large message is never held twice, once encrypted.
        for start in range(0, max(len(view), 1), _TLS_PIECE):
            piece = view[start : start + _TLS_PIECE]
            with self._tls_lock:
                while piece:
                    piece = piece[tls.write(piece) :]
                encrypted = self._outgoing.read()
            self._sock.sendall(encrypted)

    def shutdown(self) -> None:
        # An error means it is disconnected already: nothing is left to wake.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._sock.close()


def connect_stream(
    backend: Backend,
    host: str,
    port: int,
    *,
    secure: bool,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
) -> Stream:
    """Connect (through the environment's HTTP proxy, if any; then TLS when ``secure``).

    All of it within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    proxy = proxy_for(host, secure=secure)
    if proxy is None:
        sock = backend.connect_tcp(host, port, timeout)
    else:
        sock = backend.connect_tcp(proxy.host, proxy.port, timeout)
    stream = Stream(backend, sock)
    try:
        if proxy is not None:
            stream.tunnel(connect_request(host, port, proxy), deadline)
        if secure:
            stream.start_tls(ssl_context or _default_ssl_context(), host, deadline)
    except BaseException:
        sock.close()
        raise
    return stream


# -- a stream and its kernel channel -----------------------------------------------------------


class Pump(Generic[C]):
    """A stream and the kernel channel that speaks on it.

    The channel is only touched under the pump's lock. Output is written by whoever holds the
    write lock, in the order the kernel produced it; the reader never waits for that lock, so a
    peer that stops reading while it writes to us cannot stall our reading.
    """

    def __init__(self, backend: Backend, stream: Stream, channel: C) -> None:
        self.backend = backend
        self.stream = stream
        self.channel = channel
        self.done = backend.signal()
        """Set once the reader is finished and the socket is closed."""
        self.hurry = False
        """Set by the reader when it hands a timer change to another worker (a token renewal),
        which clears it in the action that changes the timer, under the kernel's lock."""
        self._kernel = backend.lock()
        self._writing = backend.lock()
        self._flush_wanted = False
        self._closed = False

    def call(self, action: Callable[[C], R], *, wait: bool = True) -> R:
        """Act on the channel, then write what it produced (see :meth:`flush` for ``wait``)."""
        with self._kernel:
            result = action(self.channel)
        self.flush(wait=wait)
        return result

    def flush(self, *, wait: bool = True) -> None:
        """Write what the kernel has queued. With ``wait=False``, leave it to a busy writer."""
        self._flush_wanted = True
        while self._flush_wanted:
            if not self._writing.acquire(blocking=wait):
                return  # the holder looks at _flush_wanted again after releasing
            try:
                self._flush_wanted = False
                self._write_pending()
            finally:
                self._writing.release()

    def _write_pending(self) -> None:
        while True:
            with self._kernel:
                data = self.channel.data_to_send()
            if not data or self._closed:
                return
            try:
                self.stream.send(data)
            except OSError:
                with self._kernel:
                    self.channel.receive_eof()
                self.stream.shutdown()  # the reader wakes up to the end
                return

    def run(self, on_event: Callable[[Event], None], leftover: Sequence[Event] = ()) -> None:
        """The reader: dispatch events, feed the kernel and keep its time until it closes.

        ``leftover`` are events that arrived along with the handshake. The socket is closed
        when this returns.
        """
        channel = self.channel
        events = list(leftover)
        try:
            while True:
                for event in events:
                    on_event(event)
                self.flush(wait=False)
                # Looked at after dispatching: handling an event may move the timer.
                with self._kernel:
                    events = channel.events()
                    closed = channel.state is ChannelState.CLOSED
                    deadline = channel.get_timer()
                    hurry = self.hurry
                if events:
                    continue
                if closed:
                    return
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                if hurry:
                    timeout = _HURRY_INTERVAL if timeout is None else min(timeout, _HURRY_INTERVAL)
                try:
                    data = self.stream.receive(timeout)
                except OSError:
                    data = b""
                now = time.monotonic()
                with self._kernel:
                    if data:
                        channel.receive_data(data, now)
                    elif data is not None:
                        channel.receive_eof()
                    # A peer that keeps sending must not keep a deadline from passing.
                    deadline = channel.get_timer()
                    if deadline is not None and now >= deadline:
                        channel.handle_timer(now)
        finally:
            self.close_socket()
            self.done.set()

    def expire(self) -> None:
        """Act on the channel's deadlines now, and wake the reader to see the outcome."""
        with self._kernel:
            self.channel.handle_timer(time.monotonic())
        self.stream.shutdown()

    def abort(self) -> None:
        """Drop the connection: the reader and any writer wake up to its end."""
        self.stream.shutdown()

    def close_socket(self) -> None:
        # A writer may still be busy (another worker's send) when the channel closes, with
        # the answer to the peer's close queued behind it: shutting down now would lose that
        # answer. So wait for the writer, and write what is left, before the shutdown.
        if self._writing.acquire(timeout=_WRITER_GRACE):
            try:
                self._write_pending()
            finally:
                self._writing.release()
        self.stream.shutdown()
        # Under the write lock: no writer may be inside the socket when its descriptor goes.
        with self._writing:
            if not self._closed:
                self._closed = True
                self.stream.close()


def open_channel(
    backend: Backend,
    url: str,
    channel: C,
    *,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
) -> tuple[Pump[C], Opened | None, list[Event]]:
    """Connect to ``url`` and run the handshake of ``channel``.

    Returns the pump, the ``Opened`` event (``None`` when the handshake ended otherwise, e.g. a
    delivered rejection) and the events that followed it. Refusals raise their typed error (a
    proxy's is a :class:`~hyco_transports.proxy.ProxyError`); I/O failures raise
    :class:`~hyco_core.ConnectionLostError`, timeouts :class:`~hyco_core.RelayTimeoutError`, an
    untrusted certificate :class:`~hyco_core.CertificateError`.
    """
    parts = urlsplit(url)
    secure = parts.scheme in ("wss", "https")
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    try:
        stream = connect_stream(
            backend, host, port, secure=secure, ssl_context=ssl_context, timeout=timeout
        )
    except OSError as error:
        raise connect_failure(error, host, port, secure=secure, timeout=timeout) from None
    pump = Pump(backend, stream, channel)
    try:
        pump.flush()
        while True:
            outcome = handshake_outcome(channel.events())
            if outcome is not None:
                return pump, *outcome
            deadline = channel.get_timer()
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                data = stream.receive(wait)
            except OSError:
                data = b""
            if data is None:
                channel.handle_timer(time.monotonic())
            elif data:
                channel.receive_data(data, time.monotonic())
            else:
                channel.receive_eof()
    except BaseException:
        pump.close_socket()
        raise


# -- tokens ------------------------------------------------------------------------------------


def fetch_token(
    backend: Backend, provider: TokenProvider | None, resource: str
) -> RelayToken | None:
    """A token for ``resource``; providers that block run where they stall no one."""
    if provider is None:
        return None
    if provider.blocking:
        return backend.run_blocking(functools.partial(provider.get_token, resource))
    return provider.get_token(resource)


def monotonic_expiry(token: RelayToken | None) -> float | None:
    """A token's Unix expiry on the monotonic clock the kernel runs on."""
    if token is None or token.expires_at is None:
        return None
    return time.monotonic() + (token.expires_at - time.time())

"""A loopback TCP proxy that breaks connections on purpose, to see how clients and the relay cope.

Clients connect to the proxy instead of the relay; each accepted connection gets a connection of
its own to the relay, and bytes move between the two both ways. Tests then inject faults, on one
connection or on all of them:

- latency: every chunk is held back for a while before it is passed on;
- drop: a direction (or both) goes silent while the sockets stay open, a blackhole, as a dead
  NAT mapping behaves; only a keep-alive notices it;
- cut: both sides are reset at once (RST: ``SO_LINGER`` 0, then ``close``);
- half-close: one direction ends (FIN) while the other keeps flowing;
- any of these once a number of bytes went one way, to break a frame in its middle;
- refusal: the proxy stops listening, so new connections are refused until it listens again.

One thread of its own runs every socket around a selector, so it serves clients on any stack
(threads, asyncio, trio, gevent) and every fault lands between two writes, never inside one.

Connections are told apart by the request line their client sends first: ``action`` is the relay
action asked for (``listen``, ``connect``, ``accept``, ``request``), or ``http`` for a plain HTTP
sender. Nothing of the query is kept, so the proxy never holds or shows a token.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import selectors
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Direction", "Fault", "FaultProxy", "ProxiedConnection"]

T = TypeVar("T")

_CHUNK = 65536
# Bytes a direction may hold (latency, a slow reader) before the proxy stops reading its source,
# so that backpressure reaches the sender as it would without the proxy.
_HIGH_WATER = 256 * 1024
_HEAD_LIMIT = 8192
_CONTROL_TIMEOUT = 10.0
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class Direction(enum.Flag):
    """Which way bytes travel: from the client to the relay, back, or both."""

    UPSTREAM = enum.auto()
    DOWNSTREAM = enum.auto()
    BOTH = UPSTREAM | DOWNSTREAM


class Fault(enum.Enum):
    """What the proxy can do to a connection (besides delaying it)."""

    CUT = "cut"
    """Reset both sides now: each sees ``ECONNRESET``, whatever was still on its way is lost."""
    DROP = "drop"
    """Stop passing bytes on (and the end of the stream too); the sockets stay open."""
    HALF_CLOSE = "half-close"
    """End the direction with a FIN after the bytes already on their way; later bytes are lost."""


@dataclass(frozen=True, eq=False)
class _Injection:
    """A fault asked for: what, on which directions, and when (``None``: at once)."""

    fault: Fault
    direction: Direction
    counted: Direction
    after_bytes: int | None

    def __post_init__(self) -> None:
        if self.after_bytes is not None and self.after_bytes < 0:
            raise ValueError("after_bytes cannot be negative")


def _counted(direction: Direction, counted: Direction | None) -> Direction:
    if counted is None:
        return Direction.UPSTREAM if Direction.UPSTREAM in direction else Direction.DOWNSTREAM
    if counted is Direction.BOTH:
        raise ValueError("bytes are counted in one direction")
    return counted


@dataclass(frozen=True)
class _Mark:
    """A fault waiting in a direction's queue, applied once the bytes before it are written."""

    fault: Fault


@dataclass(eq=False)
class _Pipe:
    """One direction of a proxied connection: what was read from ``source`` waits for ``sink``."""

    direction: Direction
    source: socket.socket
    sink: socket.socket
    queue: deque[tuple[float, bytes | _Mark]] = field(default_factory=deque)
    queued: int = 0
    read: int = 0
    written: int = 0
    triggers: list[tuple[int, _Injection]] = field(default_factory=list)
    discarding: bool = False
    eof: bool = False
    shut: bool = False
    blocked: bool = False
    last_due: float = 0.0

    @property
    def finished(self) -> bool:
        return self.eof and not self.queue and (self.shut or self.discarding)


class ProxiedConnection:
    """A client's connection and the proxy's connection to the relay on its behalf.

    ``action`` and ``path`` are ``None`` until the client's request line has arrived. The fault
    methods may be called from any thread; they return once the proxy has applied the fault or,
    with ``after_bytes``, armed it: it then fires when that many bytes (counted from the start
    of the connection, handshake included) have been read in the watched direction. Bytes up to
    that point still reach the other side; a cut resets both sides right after them.
    """

    def __init__(self, proxy: FaultProxy, number: int, client: socket.socket) -> None:
        self.number = number
        self.action: str | None = None
        self.path: str | None = None
        self.closed = False
        self._proxy = proxy
        self._client = client
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._upstream = upstream
        self._connecting = True
        self._latency = proxy.latency
        self._head = b""
        self._up = _Pipe(Direction.UPSTREAM, client, upstream)
        self._down = _Pipe(Direction.DOWNSTREAM, upstream, client)
        self._interest: dict[socket.socket, int] = {}

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ProxiedConnection #{self.number} {self.action or '?'} {self.path or ''} {state}>"

    @property
    def bytes_up(self) -> int:
        """Bytes read from the client so far."""
        return self._up.read

    @property
    def bytes_down(self) -> int:
        """Bytes read from the relay so far."""
        return self._down.read

    @property
    def delivered_up(self) -> int:
        """Bytes written to the relay so far."""
        return self._up.written

    @property
    def delivered_down(self) -> int:
        """Bytes written to the client so far."""
        return self._down.written

    @property
    def latency(self) -> float:
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency cannot be negative")

        def apply() -> None:
            self._latency = seconds
            self._proxy.faults["latency"] += 1

        self._proxy._call(apply)

    def cut(
        self, *, after_bytes: int | None = None, counted: Direction = Direction.UPSTREAM
    ) -> None:
        """Reset both sides, now or once ``after_bytes`` were read going ``counted``."""
        self.inject(Fault.CUT, Direction.BOTH, after_bytes=after_bytes, counted=counted)

    def drop(
        self,
        direction: Direction = Direction.BOTH,
        *,
        after_bytes: int | None = None,
        counted: Direction | None = None,
    ) -> None:
        """Blackhole ``direction``: nothing more gets through, the sockets stay open."""
        self.inject(Fault.DROP, direction, after_bytes=after_bytes, counted=counted)

    def half_close(
        self,
        direction: Direction = Direction.UPSTREAM,
        *,
        after_bytes: int | None = None,
        counted: Direction | None = None,
    ) -> None:
        """End ``direction`` with a FIN; the other direction keeps flowing."""
        self.inject(Fault.HALF_CLOSE, direction, after_bytes=after_bytes, counted=counted)

    def inject(
        self,
        fault: Fault,
        direction: Direction = Direction.BOTH,
        *,
        after_bytes: int | None = None,
        counted: Direction | None = None,
    ) -> None:
        """Apply ``fault`` to ``direction`` now, or once ``after_bytes`` were read going
        ``counted`` (by default the upstream direction if ``direction`` holds it). A cut always
        resets both sides."""
        injection = _Injection(fault, direction, _counted(direction, counted), after_bytes)
        self._proxy._call(lambda: self._arm(injection))

    # -- everything below runs on the proxy's thread -------------------------------------------

    def _pipes(self, direction: Direction) -> list[_Pipe]:
        return [pipe for pipe in (self._up, self._down) if pipe.direction in direction]

    def _start(self) -> None:
        host, port = self._proxy.upstream
        result = self._upstream.connect_ex((host, port))
        if result not in (0, errno.EINPROGRESS):
            self._cut()
            return
        self._refresh()

    def _arm(self, injection: _Injection) -> None:
        if self.closed:
            return
        watched = self._up if injection.counted is Direction.UPSTREAM else self._down
        if injection.after_bytes is None or injection.after_bytes <= watched.read:
            self._fire(injection, None)
        else:
            watched.triggers.append((injection.after_bytes, injection))
            watched.triggers.sort(key=lambda trigger: trigger[0])
        self._refresh()

    def _fire(self, injection: _Injection, watched: _Pipe | None) -> None:
        """Apply ``injection``: at the position just read on ``watched``, or now (``None``)."""
        if self.closed:
            return
        self._proxy.faults[injection.fault.value] += 1
        fault = injection.fault
        if fault is Fault.CUT:
            if watched is None:
                self._cut()
            else:
                watched.discarding = True
                watched.queue.append((watched.last_due, _Mark(fault)))
            return
        for pipe in self._pipes(injection.direction):
            pipe.discarding = True
            pipe.triggers.clear()
            if fault is Fault.HALF_CLOSE:
                pipe.queue.append((pipe.last_due, _Mark(fault)))
            elif pipe is not watched:
                pipe.queue.clear()
                pipe.queued = 0

    def _on_ready(self, sock: socket.socket, mask: int) -> None:
        if self.closed:
            return
        if sock is self._upstream and self._connecting:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._cut()  # the relay is not there: the client sees a reset
                return
            self._connecting = False
            return
        for pipe in (self._up, self._down):
            if mask & selectors.EVENT_WRITE and pipe.sink is sock:
                pipe.blocked = False
            if mask & selectors.EVENT_READ and pipe.source is sock and not self.closed:
                self._read(pipe)

    def _read(self, pipe: _Pipe) -> None:
        try:
            data = pipe.source.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            if pipe.discarding:
                pipe.eof = True
            else:
                self._cut()  # a reset from one side is passed on to the other
            return
        if not data:
            pipe.eof = True
            return
        if pipe is self._up and self.action is None:
            self._identify(data)
        start = pipe.read
        pipe.read += len(data)
        while data and not pipe.discarding and not self.closed:
            if pipe.triggers and pipe.triggers[0][0] <= start + len(data):
                position, injection = pipe.triggers.pop(0)
                split = max(0, position - start)
                self._enqueue(pipe, data[:split])
                data, start = data[split:], start + split
                self._fire(injection, pipe)
                continue
            self._enqueue(pipe, data)
            return

    def _enqueue(self, pipe: _Pipe, data: bytes) -> None:
        if not data:
            return
        due = max(time.monotonic() + self._latency, pipe.last_due)
        pipe.last_due = due
        pipe.queue.append((due, data))
        pipe.queued += len(data)

    def _identify(self, data: bytes) -> None:
        self._head += data[: _HEAD_LIMIT - len(self._head)]
        if b"\r\n" not in self._head and len(self._head) < _HEAD_LIMIT:
            return
        line = self._head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        target = urlsplit(parts[1] if len(parts) > 1 else "")
        query = {name.lower(): value for name, value in parse_qsl(target.query)}
        action = query.get("sb-hc-action")
        if action is None:
            action = "connect" if target.path.startswith("/$hc/") else "http"
        self.path = target.path
        self.action = action
        self._head = b""
        self._proxy._identified(self)

    def _service(self, now: float) -> None:
        """Write what is due, pass on ends of streams, and close once both directions ended."""
        for pipe in (self._up, self._down):
            self._flush(pipe, now)
            if self.closed:
                return
        if self._up.finished and self._down.finished:
            self._close()
            return
        self._refresh()

    def _flush(self, pipe: _Pipe, now: float) -> None:
        while pipe.queue and not self.closed:
            due, item = pipe.queue[0]
            if due > now:
                return
            if isinstance(item, _Mark):
                pipe.queue.popleft()
                if item.fault is Fault.CUT:
                    self._cut()
                    return
                with contextlib.suppress(OSError):
                    pipe.sink.shutdown(socket.SHUT_WR)
                pipe.shut = True
                continue
            if pipe.blocked or (self._connecting and pipe is self._up):
                return
            try:
                sent = pipe.sink.send(item)
            except BlockingIOError:
                pipe.blocked = True
                return
            except OSError:
                self._cut()
                return
            pipe.written += sent
            pipe.queued -= sent
            if sent < len(item):
                pipe.queue[0] = (due, item[sent:])
                pipe.blocked = True
                return
            pipe.queue.popleft()
        if pipe.eof and not pipe.shut and not pipe.discarding and not self._connecting:
            with contextlib.suppress(OSError):
                pipe.sink.shutdown(socket.SHUT_WR)
            pipe.shut = True

    def _next_due(self) -> float | None:
        dues = [
            pipe.queue[0][0]
            for pipe in (self._up, self._down)
            if pipe.queue
            and (isinstance(pipe.queue[0][1], _Mark) or not pipe.blocked)
            and not (self._connecting and pipe is self._up)
        ]
        return min(dues, default=None)

    def _wanted(self, sock: socket.socket) -> int:
        if sock is self._upstream and self._connecting:
            return selectors.EVENT_WRITE
        mask = 0
        for pipe in (self._up, self._down):
            reading = not pipe.eof and pipe.queued < _HIGH_WATER
            if pipe.source is sock and reading and not (self._connecting and pipe is self._down):
                mask |= selectors.EVENT_READ
            if pipe.sink is sock and pipe.blocked:
                mask |= selectors.EVENT_WRITE
        return mask

    def _refresh(self) -> None:
        if self.closed:
            return
        selector = self._proxy._selector
        for sock in (self._client, self._upstream):
            wanted = self._wanted(sock)
            current = self._interest.get(sock, 0)
            if wanted == current:
                continue
            if not current:
                selector.register(sock, wanted, self._handler(sock))
            elif not wanted:
                selector.unregister(sock)
            else:
                selector.modify(sock, wanted, self._handler(sock))
            self._interest[sock] = wanted

    def _handler(self, sock: socket.socket) -> Callable[[int], None]:
        return lambda mask: self._on_ready(sock, mask)

    def _forget_sockets(self) -> None:
        for sock, mask in self._interest.items():
            if mask:
                self._proxy._selector.unregister(sock)
        self._interest.clear()
        self.closed = True
        self._proxy._closed(self)

    def _cut(self) -> None:
        if self.closed:
            return
        self._forget_sockets()
        for sock in (self._client, self._upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            sock.close()

    def _close(self) -> None:
        if self.closed:
            return
        self._forget_sockets()
        self._client.close()
        self._upstream.close()


class FaultProxy:
    """Listens on 127.0.0.1 (any free port) and forwards every connection to ``upstream_port``.

    ``faults`` counts the faults applied, by kind (``cut``, ``drop``, ``half-close``,
    ``refuse``, ``latency``); ``seen`` counts the connections by action.
    """

    def __init__(
        self, upstream_port: int, *, upstream_host: str = "127.0.0.1", latency: float = 0.0
    ) -> None:
        if latency < 0:
            raise ValueError("latency cannot be negative")
        self.upstream = (upstream_host, upstream_port)
        self.faults: Counter[str] = Counter()
        self.seen: Counter[str] = Counter()
        self._latency = latency
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ, self._on_wake)
        self._commands: deque[tuple[Callable[[], object], Future[object]]] = deque()
        self._commands_lock = threading.Lock()
        self._changed = threading.Condition()
        self._open: list[ProxiedConnection] = []
        self._armed: list[tuple[str, _Injection]] = []
        self._numbers = 0
        self._stopping = False
        self._server: socket.socket | None = None
        self.port = self._listen(0)
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        listening = "listening" if self._server is not None else "refusing"
        return f"<FaultProxy {self.address} -> {self.upstream[1]} {listening}>"

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def address(self) -> str:
        """``host:port`` to give clients instead of the relay's."""
        return f"127.0.0.1:{self.port}"

    @property
    def latency(self) -> float:
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        """Delay every chunk by ``seconds``, on open connections and on new ones."""
        if seconds < 0:
            raise ValueError("latency cannot be negative")

        def apply() -> None:
            self._latency = seconds
            for connection in self._open:
                connection._latency = seconds
            self.faults["latency"] += 1

        self._call(apply)

    def connections(self, action: str | None = None) -> list[ProxiedConnection]:
        """The open connections (of one action), oldest first."""
        with self._changed:
            return [c for c in self._open if action is None or c.action == action]

    def wait_for(
        self, action: str, *, newer_than: int = 0, timeout: float = 10.0
    ) -> ProxiedConnection:
        """The first open connection of ``action`` numbered above ``newer_than``."""

        def found() -> ProxiedConnection | None:
            return next(
                (c for c in self._open if c.action == action and c.number > newer_than), None
            )

        with self._changed:
            if not self._changed.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"no new {action!r} connection within {timeout:g} s")
            connection = found()
            assert connection is not None
            return connection

    def inject_next(
        self,
        action: str,
        fault: Fault,
        direction: Direction = Direction.BOTH,
        *,
        after_bytes: int | None = None,
        counted: Direction | None = None,
    ) -> None:
        """Arm ``fault`` for the next connection of ``action`` (see
        :meth:`ProxiedConnection.inject`)."""
        injection = _Injection(fault, direction, _counted(direction, counted), after_bytes)

        def arm() -> None:
            self._armed.append((action, injection))

        self._call(arm)

    def cut_all(self, action: str | None = None) -> int:
        """Reset every open connection (of one action); how many there were."""
        return self._on_all(action, Fault.CUT, Direction.BOTH)

    def drop_all(self, action: str | None = None, direction: Direction = Direction.BOTH) -> int:
        return self._on_all(action, Fault.DROP, direction)

    def half_close_all(
        self, action: str | None = None, direction: Direction = Direction.UPSTREAM
    ) -> int:
        return self._on_all(action, Fault.HALF_CLOSE, direction)

    def refuse(self) -> None:
        """Stop listening: new connections are refused (the port is closed) until :meth:`admit`.

        Connections already open carry on.
        """

        def stop() -> None:
            if self._server is not None:
                self._selector.unregister(self._server)
                self._server.close()
                self._server = None
            self.faults["refuse"] += 1

        self._call(stop)

    def admit(self) -> None:
        """Listen again, on the same port."""

        def start() -> None:
            if self._server is None:
                self._listen(self.port)

        self._call(start)

    def close(self) -> None:
        """Stop: every connection still open is closed (FIN to both sides)."""
        if not self._thread.is_alive():
            return

        def stop() -> None:
            self._stopping = True

        self._call(stop)
        self._thread.join(_CONTROL_TIMEOUT)
        self._wake_writer.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _on_all(self, action: str | None, fault: Fault, direction: Direction) -> int:
        def apply() -> int:
            chosen = [c for c in self._open if action is None or c.action == action]
            for connection in chosen:
                connection._arm(_Injection(fault, direction, _counted(direction, None), None))
            return len(chosen)

        return self._call(apply)

    def _call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the proxy's thread and return its result."""
        if threading.current_thread() is self._thread:
            return function()
        future: Future[object] = Future()
        with self._commands_lock:
            if not self._thread.is_alive():
                raise RuntimeError("the fault proxy is closed")
            self._commands.append((function, future))
        self._wake_writer.send(b"!")
        result: T = future.result(_CONTROL_TIMEOUT)  # type: ignore[assignment]
        return result

    def _listen(self, port: int) -> int:
        server = socket.create_server(("127.0.0.1", port), backlog=1024)
        server.setblocking(False)
        self._selector.register(server, selectors.EVENT_READ, self._on_accept)
        self._server = server
        return int(server.getsockname()[1])

    def _on_wake(self, _mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_reader.recv(4096):
                pass
        with self._commands_lock:
            commands = list(self._commands)
            self._commands.clear()
        for function, future in commands:
            try:
                future.set_result(function())
            except Exception as error:
                future.set_exception(error)

    def _on_accept(self, _mask: int) -> None:
        while self._server is not None:
            try:
                client, _ = self._server.accept()
            except (BlockingIOError, InterruptedError):
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._numbers += 1
            connection = ProxiedConnection(self, self._numbers, client)
            with self._changed:
                self._open.append(connection)
            connection._start()

    def _identified(self, connection: ProxiedConnection) -> None:
        action = connection.action or ""
        self.seen[action] += 1
        for armed in self._armed:
            if armed[0] == action:
                self._armed.remove(armed)
                connection._arm(armed[1])
                break
        with self._changed:
            self._changed.notify_all()

    def _closed(self, connection: ProxiedConnection) -> None:
        with self._changed:
            if connection in self._open:
                self._open.remove(connection)
            self._changed.notify_all()

    def _run(self) -> None:
        try:
            while not self._stopping:
                now = time.monotonic()
                dues = [due for c in self._open if (due := c._next_due()) is not None]
                timeout = max(0.0, min(dues) - now) if dues else None
                for key, mask in self._selector.select(timeout):
                    handler: Callable[[int], None] = key.data
                    handler(mask)
                now = time.monotonic()
                for connection in list(self._open):
                    connection._service(now)
        finally:
            for connection in list(self._open):
                connection._close()
            if self._server is not None:
                self._server.close()
            with self._commands_lock:
                for _, future in self._commands:
                    future.set_exception(RuntimeError("the fault proxy is closed"))
                self._commands.clear()
            self._selector.close()
            self._wake_reader.close()

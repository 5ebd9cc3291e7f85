"""Faults on the wire, injected by a proxy between clients and the relay, and relay restarts.

What a user relies on when the network misbehaves:

- a listener always comes back online, on its backoff schedule, after its connection is cut,
  half-closed, blackholed, or refused for a while, and says so (offline, connecting, online);
- a relayed stream either arrives byte for byte or fails at both ends with a typed error:
  never a hang, never a clean close over missing bytes;
- an HTTP request through the relay gets its answer, or a clear 502/504 with the relay's JSON
  error, within the relay's request timeout;
- a listener recovers every time the relay restarts or is killed, and traffic resumes.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import pytest

from hyco_core import ConnectionClosed, HycoError, KeepAlive, ListenerStatus, RelayTimeoutError
from hyco_core.timing import DEFAULT_RECONNECT_SCHEDULE, Backoff
from hyco_transports import anyio as anyio_transport
from hyco_transports import sync
from hyco_transports.httpx import RelayAuth

from .conftest import (
    QUICK_KEEPALIVE,
    REQUEST_TIMEOUT,
    SHORT_BACKOFF,
    TRANSPORTS,
    ProcessRelay,
    StatusEntry,
    StatusLog,
    ThreadRelay,
    Transport,
    connection_string,
    open_listener,
)
from .fault_proxy import Direction, Fault, FaultProxy

MiB = 1024 * 1024

# A bound on every wait, far above anything a healthy run needs: reaching it means a hang.
HANG = 20.0


# -- the proxy itself --------------------------------------------------------------------------


@dataclass
class EchoServer:
    """A plain TCP server that echoes, says ``bye`` at the end of its input, and records how
    each connection ended (``eof`` or the error's name) with the bytes it had received."""

    port: int
    ends: list[tuple[str, int]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for_ends(self, count: int) -> list[tuple[str, int]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.ends) >= count, HANG), self.ends
            return list(self.ends)


@contextmanager
def echo_server() -> Iterator[EchoServer]:
    server = socket.create_server(("127.0.0.1", 0))
    echo = EchoServer(server.getsockname()[1])

    def serve_one(client: socket.socket) -> None:
        received = 0
        end = "eof"
        with client:
            try:
                while data := client.recv(65536):
                    received += len(data)
                    client.sendall(data)
                client.sendall(b"bye")
            except OSError as error:
                end = type(error).__name__
        with echo.changed:
            echo.ends.append((end, received))
            echo.changed.notify_all()

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(client,), daemon=True).start()

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    try:
        yield echo
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        acceptor.join(HANG)


def client(proxy: FaultProxy, head: bytes = b"GET /hc1 HTTP/1.1\r\n\r\n") -> socket.socket:
    """A TCP client of the proxy that has sent ``head``."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=HANG)
    sock.sendall(head)
    return sock


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        piece = sock.recv(size - len(data))
        if not piece:
            break
        data += piece
    return data


def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while piece := sock.recv(65536):
        data += piece
    return data


def send_then_read(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data``, then read to the end: a reset shows on either."""
    sock.sendall(data)
    return read_to_end(sock)


LISTEN_HEAD = b"GET /$hc/hc1?sb-hc-action=listen&sb-hc-token=SECRET HTTP/1.1\r\n\r\n"


def test_the_proxy_passes_bytes_both_ways_and_tells_connections_apart() -> None:
    payload = random.randbytes(3 * MiB)
    with echo_server() as server, FaultProxy(server.port) as proxy:
        with client(proxy, LISTEN_HEAD) as sock:
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            assert read_exactly(sock, len(LISTEN_HEAD) + len(payload)) == LISTEN_HEAD + payload
            sender.join()
            connection = proxy.wait_for("listen")
            assert (connection.action, connection.path) == ("listen", "/$hc/hc1")
            assert connection.bytes_up == connection.bytes_down == len(LISTEN_HEAD) + len(payload)
            assert "SECRET" not in repr(connection)
            sock.shutdown(socket.SHUT_WR)
            assert read_to_end(sock) == b"bye"
        assert server.wait_for_ends(1) == [("eof", len(LISTEN_HEAD) + len(payload))]
        with client(proxy, b"GET /$hc/hc1/room?x=1 HTTP/1.1\r\n\r\n"):
            assert proxy.wait_for("connect").path == "/$hc/hc1/room"
        assert proxy.seen == {"listen": 1, "connect": 1}


def test_latency_holds_every_chunk_back() -> None:
    with echo_server() as server, FaultProxy(server.port, latency=0.2) as proxy:
        started = time.monotonic()
        with client(proxy) as sock:
            assert read_exactly(sock, 5) == b"GET /"
            # Held back on the way there and on the way back.
            assert time.monotonic() - started >= 0.4
            connection = proxy.wait_for("http")
            connection.latency = 0.0
            sock.sendall(b"quick")
            assert read_exactly(sock, len(b"hc1 HTTP/1.1\r\n\r\nquick")).endswith(b"quick")


def test_a_cut_resets_both_sides() -> None:
    with echo_server() as server, FaultProxy(server.port) as proxy:
        with client(proxy) as sock:
            connection = proxy.wait_for("http")
            connection.cut()
            with pytest.raises(ConnectionResetError):
                read_to_end(sock)
        assert server.wait_for_ends(1) == [("ConnectionResetError", connection.bytes_up)]
        assert proxy.faults["cut"] == 1
        assert proxy.connections() == []


def test_a_cut_after_some_bytes_lands_inside_the_stream() -> None:
    with echo_server() as server, FaultProxy(server.port) as proxy:
        proxy.inject_next("http", Fault.CUT, after_bytes=100_000)
        with client(proxy) as sock:
            connection = proxy.wait_for("http")
            with pytest.raises(ConnectionResetError):
                send_then_read(sock, random.randbytes(300_000))
        assert connection.delivered_up == 100_000
        [(end, received)] = server.wait_for_ends(1)
        # The server may have stopped reading early: its echo met the reset first.
        assert end == "ConnectionResetError"
        assert received <= 100_000


def test_a_half_close_ends_one_direction_only() -> None:
    with echo_server() as server, FaultProxy(server.port) as proxy:
        with client(proxy) as sock:
            proxy.wait_for("http").half_close(Direction.UPSTREAM)
            sock.sendall(b"lost on the way")
            # The server saw the end of its input, and its answer still comes back.
            assert read_to_end(sock).endswith(b"bye")
        with client(proxy) as sock:
            connection = proxy.wait_for("http", newer_than=1)
            connection.half_close(Direction.DOWNSTREAM)
            # The end comes at once; the echo of the head may have been faster.
            assert b"GET /hc1 HTTP/1.1\r\n\r\n".startswith(read_to_end(sock))
            sock.sendall(b"still arrives")
            sock.shutdown(socket.SHUT_WR)
        ends = server.wait_for_ends(2)
        assert ends[1] == ("eof", len(b"GET /hc1 HTTP/1.1\r\n\r\nstill arrives"))
        assert proxy.faults["half-close"] == 2


def test_a_drop_keeps_the_sockets_open_and_silent() -> None:
    with echo_server() as server, FaultProxy(server.port) as proxy:
        with client(proxy) as sock:
            head = read_exactly(sock, len(b"GET /hc1 HTTP/1.1\r\n\r\n"))
            connection = proxy.wait_for("http")
            connection.drop()
            sock.sendall(b"into the void")
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(1)
            assert connection.bytes_up == len(head) + len(b"into the void")
            connection.cut()
        assert server.wait_for_ends(1) == [("ConnectionResetError", len(head))]


def test_a_refusing_proxy_closes_its_port_until_it_admits_again() -> None:
    with echo_server() as server, FaultProxy(server.port) as proxy:
        with client(proxy) as open_before:
            proxy.refuse()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", proxy.port), timeout=HANG)
            open_before.sendall(b"!")
            assert read_exactly(open_before, len(b"GET /hc1 HTTP/1.1\r\n\r\n!")).endswith(b"!")
            proxy.admit()
            with client(proxy) as again:
                assert read_exactly(again, 5) == b"GET /"
        assert proxy.faults["refuse"] == 1


def test_a_missing_upstream_resets_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        free_port = placeholder.getsockname()[1]
    # The reset may come while connecting or sending, under load, or at the first read.
    with (
        FaultProxy(free_port) as proxy,
        pytest.raises((ConnectionResetError, BrokenPipeError)),
        client(proxy) as sock,
    ):
        read_to_end(sock)


# -- listeners come back -----------------------------------------------------------------------


LISTENER_FAULTS = ["cut", "half-close-up", "half-close-down", "blackhole", "refused"]


def assert_recovered_on_schedule(entries: list[StatusEntry], schedule: tuple[float, ...]) -> None:
    """OFFLINE, CONNECTING, (OFFLINE, CONNECTING)..., ONLINE, each wait the schedule's delay."""
    statuses = [entry.status for entry in entries]
    attempts = (len(statuses) - 1) // 2
    expected = [ListenerStatus.OFFLINE, ListenerStatus.CONNECTING] * attempts
    assert statuses == [*expected, ListenerStatus.ONLINE], statuses
    for attempt in range(attempts):
        offline, connecting = entries[2 * attempt], entries[2 * attempt + 1]
        planned = schedule[min(attempt, len(schedule) - 1)]
        assert offline.retry_in is not None
        assert planned * 0.9 <= offline.retry_in <= planned * 1.1, (attempt, offline.retry_in)
        # It waited that long before trying again (clocks may differ by a tick).
        assert connecting.at - offline.at >= offline.retry_in - 0.02


@pytest.mark.parametrize("fault", LISTENER_FAULTS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_listener_comes_back_online_after(
    relay: ThreadRelay, proxy: FaultProxy, transport: Transport, fault: str
) -> None:
    # A cut is met with the listener's own schedule (0, 1, 2, 5, 10, 30 s): at once.
    schedule = DEFAULT_RECONNECT_SCHEDULE if fault == "cut" else SHORT_BACKOFF
    backoff: Backoff | Literal["own"] = "own" if fault == "cut" else Backoff(schedule, jitter=0.1)
    with open_listener(
        transport,
        connection_string(proxy.address),
        backoff=backoff,
        keepalive=QUICK_KEEPALIVE,
    ) as log:
        control = proxy.wait_for("listen")
        start = len(log.entries)
        if fault == "cut":
            control.cut()
        elif fault == "half-close-up":
            control.half_close(Direction.UPSTREAM)
        elif fault == "half-close-down":
            control.half_close(Direction.DOWNSTREAM)
        elif fault == "blackhole":
            control.drop()
        else:
            proxy.refuse()
            control.cut()
            log.wait_for(ListenerStatus.OFFLINE, 4, timeout=HANG)  # three refused attempts
            proxy.admit()
        log.wait_for(ListenerStatus.ONLINE, 2, timeout=HANG)
        entries = log.since(start)
        assert_recovered_on_schedule(entries, schedule)
        assert entries[0].error in {"ConnectionLostError", "RelayTimeoutError"}
        if fault == "blackhole":
            assert entries[0].error == "RelayTimeoutError"  # the missing pong told it
            control.cut()  # the relay would hold the silent listener until its own ping fails
        if fault == "refused":
            assert len(entries) >= 9
        # Back for real: on the relay, through the proxy, and relaying.
        assert proxy.wait_for("listen", newer_than=control.number).action == "listen"
        deadline = time.monotonic() + HANG
        while relay.listener_count() != 1:
            assert time.monotonic() < deadline, "the relay still counts the old listener"
            time.sleep(0.01)
        with sync.connect(connection_string(relay.address)) as ws:
            ws.send("still there?")
            assert ws.recv(timeout=HANG) == "still there?"


# -- relayed streams ---------------------------------------------------------------------------

STREAM_SIZE = 4 * MiB
PIECE = 256 * 1024
PAYLOAD = random.Random(1).randbytes(STREAM_SIZE)
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
# Inside a frame's payload: frames are 256 KiB plus a 14-byte head, the handshake a few hundred.
MID_STREAM = 1_500_007

STREAM_FAULTS: dict[str, tuple[str, Fault, Direction, Direction] | None] = {
    "none": None,
    "sender-cut-mid-frame-up": ("connect", Fault.CUT, Direction.BOTH, Direction.UPSTREAM),
    "sender-cut-mid-frame-down": ("connect", Fault.CUT, Direction.BOTH, Direction.DOWNSTREAM),
    "sender-half-close-up": (
        "connect",
        Fault.HALF_CLOSE,
        Direction.UPSTREAM,
        Direction.UPSTREAM,
    ),
    "sender-half-close-down": (
        "connect",
        Fault.HALF_CLOSE,
        Direction.DOWNSTREAM,
        Direction.DOWNSTREAM,
    ),
    "sender-blackhole": ("connect", Fault.DROP, Direction.BOTH, Direction.UPSTREAM),
    "listener-cut-mid-frame": ("accept", Fault.CUT, Direction.BOTH, Direction.UPSTREAM),
    "listener-half-close-down": (
        "accept",
        Fault.HALF_CLOSE,
        Direction.DOWNSTREAM,
        Direction.DOWNSTREAM,
    ),
}


@dataclass
class StreamEnd:
    """What one end of a relayed stream saw: the bytes that reached it and how it ended.

    ``error`` is ``None`` when the end finished normally: the sender after reading every byte
    back, the listener at the sender's close (1000).
    """

    received: int = 0
    digest: str = ""
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def complete(self) -> bool:
        return self.received == STREAM_SIZE and self.digest == PAYLOAD_SHA256

    def verdict(self, end: str) -> str:
        """``complete`` or ``typed error``; anything else fails the test."""
        if self.error is None:
            assert self.complete, (
                f"the {end} ended normally with {self.received} of {STREAM_SIZE} bytes"
            )
            return "complete"
        assert isinstance(self.error, HycoError), f"the {end} failed with {self.error!r}"
        if isinstance(self.error, ConnectionClosed):
            assert self.error.code != 1000, f"the {end} was closed with 1000 mid-stream"
        return "typed error"


class StreamRecords:
    """The listener's side of every stream, by the id its sender announced."""

    def __init__(self) -> None:
        self.ends: dict[str, StreamEnd] = {}

    def wait(self, stream: str) -> StreamEnd:
        deadline = time.monotonic() + HANG
        while stream not in self.ends:
            assert time.monotonic() < deadline, "the stream never reached the listener"
            time.sleep(0.01)
        end = self.ends[stream]
        assert end.done.wait(HANG), "the listener's handler hangs"
        return end

    def anyio_handler(self) -> Callable[[anyio_transport.WebSocket], Any]:
        async def handle(ws: anyio_transport.WebSocket) -> None:
            end = StreamEnd()
            digest = hashlib.sha256()
            try:
                with anyio.fail_after(HANG):
                    header = json.loads(await ws.recv())
                self.ends[header["stream"]] = end
                while True:
                    with anyio.fail_after(HANG):
                        message = await ws.recv()
                    assert isinstance(message, bytes)
                    digest.update(message)
                    end.received += len(message)
                    with anyio.fail_after(HANG):
                        await ws.send(message)
            except ConnectionClosed as closed:
                if closed.code != 1000:
                    end.error = closed
            except Exception as error:
                end.error = error
            finally:
                end.digest = digest.hexdigest()
                end.done.set()

        return handle

    def sync_handler(self) -> Callable[[sync.WebSocket], None]:
        def handle(ws: sync.WebSocket) -> None:
            end = StreamEnd()
            digest = hashlib.sha256()
            try:
                header = json.loads(ws.recv(timeout=HANG))
                self.ends[header["stream"]] = end
                while True:
                    message = ws.recv(timeout=HANG)
                    assert isinstance(message, bytes)
                    digest.update(message)
                    end.received += len(message)
                    ws.send(message)
            except ConnectionClosed as closed:
                if closed.code != 1000:
                    end.error = closed
            except Exception as error:
                end.error = error
            finally:
                end.digest = digest.hexdigest()
                end.done.set()

        return handle


def header(stream: str) -> str:
    return json.dumps({"stream": stream, "size": STREAM_SIZE})


def send_with_sync(cs: str, stream: str) -> StreamEnd:
    end = StreamEnd()
    digest = hashlib.sha256()
    written: list[BaseException] = []

    def write(ws: sync.WebSocket) -> None:
        try:
            for start in range(0, STREAM_SIZE, PIECE):
                ws.send(PAYLOAD[start : start + PIECE])
        except Exception as error:
            written.append(error)

    try:
        with sync.connect(cs, keepalive=QUICK_KEEPALIVE, connect_timeout=HANG) as ws:
            ws.send(header(stream))
            writer = threading.Thread(target=write, args=(ws,), daemon=True)
            writer.start()
            try:
                while end.received < STREAM_SIZE:
                    message = ws.recv(timeout=HANG)
                    assert isinstance(message, bytes)
                    digest.update(message)
                    end.received += len(message)
            finally:
                writer.join(HANG)
                assert not writer.is_alive(), "the sender's writer hangs"
    except Exception as error:
        end.error = error
    end.digest = digest.hexdigest()
    return end


def send_with_anyio(cs: str, stream: str) -> StreamEnd:
    end = StreamEnd()
    digest = hashlib.sha256()

    async def write(ws: anyio_transport.WebSocket) -> None:
        with suppress(ConnectionClosed):  # the reader sees the close too
            for start in range(0, STREAM_SIZE, PIECE):
                await ws.send(PAYLOAD[start : start + PIECE])

    async def send() -> None:
        try:
            async with anyio_transport.connect(
                cs, keepalive=QUICK_KEEPALIVE, connect_timeout=HANG
            ) as ws:
                await ws.send(header(stream))
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(write, ws)
                    try:
                        with anyio.fail_after(HANG):
                            while end.received < STREAM_SIZE:
                                message = await ws.recv()
                                assert isinstance(message, bytes)
                                digest.update(message)
                                end.received += len(message)
                    except Exception as error:
                        end.error = error
                        tasks.cancel_scope.cancel()
        except Exception as error:
            end.error = end.error or error

    anyio.run(send)
    end.digest = digest.hexdigest()
    return end


@pytest.mark.parametrize("fault", list(STREAM_FAULTS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_relayed_stream_arrives_whole_or_fails_at_both_ends(
    relay: ThreadRelay, proxy: FaultProxy, transport: Transport, fault: str
) -> None:
    relay_a_stream(relay, proxy, transport, fault)


def test_the_far_end_always_hears_of_a_cut_from_the_relay(
    relay: ThreadRelay, proxy: FaultProxy
) -> None:
    # Both halves of a relayed connection are busy when a cut comes, so the relay learns of it
    # from a write as often as from a read; either way the far end must be told. Repeated, as
    # which of the two comes first is a matter of timing.
    for round_ in range(10):
        fault = "listener-cut-mid-frame" if round_ % 2 else "sender-cut-mid-frame-down"
        for transport in TRANSPORTS:
            relay_a_stream(relay, proxy, transport, fault)


def relay_a_stream(relay: ThreadRelay, proxy: FaultProxy, transport: Transport, fault: str) -> None:
    """Send a stream from a ``transport`` sender through the proxy, with ``fault`` injected,
    and check what both ends saw."""
    records = StreamRecords()
    # The other transport listens, so that each pairing meets the other's behaviour.
    listening: Transport = "sync" if transport == "anyio" else "anyio"
    handler = records.sync_handler() if listening == "sync" else records.anyio_handler()
    plan = STREAM_FAULTS[fault]
    injected = proxy.faults.total()
    if plan is not None:
        action, kind, direction, counted = plan
        proxy.inject_next(action, kind, direction, after_bytes=MID_STREAM, counted=counted)
    stream = str(uuid.uuid4())
    # The listener reaches the relay directly; its rendezvous, like the sender, goes through
    # the proxy (the relay's public address).
    with open_listener(
        listening,
        connection_string(relay.address),
        connection_handler=handler,
        keepalive=QUICK_KEEPALIVE,
    ):
        send = send_with_sync if transport == "sync" else send_with_anyio
        sender = send(connection_string(proxy.address), stream)
        listener = records.wait(stream)
    verdicts = (sender.verdict("sender"), listener.verdict("listener"))
    if plan is None:
        assert verdicts == ("complete", "complete")
        assert sender.received == listener.received == STREAM_SIZE
    else:
        assert proxy.faults.total() == injected + 1
        assert verdicts == ("typed error", "typed error"), (sender.error, listener.error)
        if fault != "sender-blackhole":
            # The relay tells the end away from the fault at once (close 1011: the other side's
            # connection was lost); an end left to find out by its own keepalive missed that close.
            far = listener if fault.startswith("sender") else sender
            assert isinstance(far.error, ConnectionClosed)
            assert not isinstance(far.error.__cause__, RelayTimeoutError), far.error
    if fault == "sender-blackhole":
        # Nothing gets through either way: each end's missing pong tells it.
        for end in (sender, listener):
            assert isinstance(end.error, ConnectionClosed)
            assert isinstance(end.error.__cause__, RelayTimeoutError), end.error


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_dead_relayed_connection_says_why_on_every_call(
    relay: ThreadRelay, proxy: FaultProxy, transport: Transport
) -> None:
    errors: list[ConnectionClosed] = []

    def sync_sender(cs: str) -> None:
        with sync.connect(cs, keepalive=QUICK_KEEPALIVE) as ws:
            ws.send("hello")
            assert ws.recv(timeout=HANG) == "hello"
            proxy.wait_for("connect").drop()
            for call in (lambda: ws.recv(timeout=HANG), lambda: ws.send("x"), ws.ping):
                with pytest.raises(ConnectionClosed) as closed:
                    call()
                errors.append(closed.value)

    async def anyio_sender(cs: str) -> None:
        async with anyio_transport.connect(cs, keepalive=QUICK_KEEPALIVE) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            proxy.wait_for("connect").drop()
            with anyio.fail_after(HANG):
                for call in (ws.recv, lambda: ws.send("x"), ws.ping):
                    with pytest.raises(ConnectionClosed) as closed:
                        await call()
                    errors.append(closed.value)

    with open_listener("anyio", connection_string(relay.address), keepalive=QUICK_KEEPALIVE):
        if transport == "sync":
            sync_sender(connection_string(proxy.address))
        else:
            anyio.run(anyio_sender, connection_string(proxy.address))
    assert [error.code for error in errors] == [1006] * 3
    # Not a bare "closed": the missing pong is the reason, whichever call meets it.
    assert all(isinstance(error.__cause__, RelayTimeoutError) for error in errors), errors


# -- HTTP through a faulty listener connection -------------------------------------------------

BIG = random.Random(2).randbytes(300 * 1024)  # over 64 KiB: answered over a rendezvous


def expected_body(method: str, path: str, body: bytes) -> bytes:
    if path == "/big":
        return BIG
    if method == "POST":
        return body
    return f"hello {path}".encode()


HANDLER_DELAY = 0.1  # answers take a moment, so that faults meet requests in flight


async def anyio_answer(request: anyio_transport.HttpRequest) -> anyio_transport.HttpResponse:
    body = await request.body()
    await anyio.sleep(HANDLER_DELAY)
    return anyio_transport.HttpResponse(200, body=expected_body(request.method, request.path, body))


def sync_answer(request: sync.HttpRequest) -> sync.HttpResponse:
    body = request.body()
    time.sleep(HANDLER_DELAY)
    return sync.HttpResponse(200, body=expected_body(request.method, request.path, body))


@dataclass
class HttpOutcomes:
    """How each request ended: ``ok``, ``502``, ``504``, or ``cut`` (a response cut after its
    head, which the client sees as an incomplete body)."""

    kinds: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str) -> None:
        with self.lock:
            self.kinds.append(kind)


def send_request(
    http: httpx.Client, auth: RelayAuth, method: str, path: str, body: bytes, outcomes: HttpOutcomes
) -> None:
    started = time.monotonic()
    try:
        response = http.request(method, auth.url(path), content=body or None, auth=auth)
    except httpx.RemoteProtocolError:
        outcomes.add("cut")  # the body stopped short of its announced end: not taken as whole
        return
    assert time.monotonic() - started < REQUEST_TIMEOUT + 5, "slower than the relay's timeout"
    if response.status_code == 200:
        assert response.content == expected_body(method, path, body)
        assert "via" in response.headers
        outcomes.add("ok")
        return
    assert response.status_code in (502, 504), (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"]
    assert error["message"]
    outcomes.add(str(response.status_code))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_idle_http_rendezvous_stays_usable_between_requests(
    relay: ThreadRelay, transport: Transport
) -> None:
    # The listener pings the rendezvous it keeps for a sender's next request; the relay must
    # answer while it waits for that request, or the listener gives the rendezvous up and the
    # next request fails with 502.
    cs = connection_string(relay.address)
    auth = RelayAuth.from_connection_string(cs)
    handler = sync_answer if transport == "sync" else anyio_answer
    keepalive = KeepAlive(ping_interval=0.1, pong_timeout=0.15)
    body = random.randbytes(200 * 1024)
    with (
        open_listener(transport, cs, keepalive=keepalive, request_handler=handler),
        httpx.Client(timeout=HANG) as http,
    ):
        for pause in (0.0, 0.5, 0.5):  # each long enough for a ping to go unanswered
            time.sleep(pause)
            response = http.post(auth.url("/echo"), content=body, auth=auth)
            assert (response.status_code, response.content) == (200, body)


REQUESTS = [
    ("GET", "/small", b""),
    ("POST", "/echo", random.Random(3).randbytes(1000)),
    ("POST", "/echo", random.Random(4).randbytes(200 * 1024)),
    ("GET", "/big", b""),
]

HTTP_FAULTS = [
    "latency",
    "cut-control",
    "half-close-control-up",
    "half-close-control-down",
    "cut-rendezvous-mid-request",
    "cut-rendezvous-mid-response",
    "blackhole-control",
]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_http_requests_get_their_answer_or_a_clear_gateway_error(
    relay: ThreadRelay, proxy: FaultProxy, transport: Transport
) -> None:
    cs = connection_string(proxy.address)
    auth = RelayAuth.from_connection_string(cs)
    handler = sync_answer if transport == "sync" else anyio_answer
    log = StatusLog()
    seen: dict[str, list[str]] = {}
    with (
        open_listener(transport, cs, log=log, keepalive=QUICK_KEEPALIVE, request_handler=handler),
        concurrent.futures.ThreadPoolExecutor(8) as pool,
    ):

        def batch(http: httpx.Client, requests: list[tuple[str, str, bytes]]) -> list[str]:
            outcomes = HttpOutcomes()
            futures = [
                pool.submit(send_request, http, auth, method, path, body, outcomes)
                for method, path, body in requests
            ]
            for future in futures:
                future.result(REQUEST_TIMEOUT + HANG)
            return outcomes.kinds

        for fault in HTTP_FAULTS:
            onlines = log.count(ListenerStatus.ONLINE)
            control = proxy.wait_for("listen")
            # A client of its own, so that rendezvous are new and meet the armed faults.
            with httpx.Client(timeout=REQUEST_TIMEOUT + 3) as http:
                if fault == "latency":
                    control.latency = 0.05
                    seen[fault] = batch(http, REQUESTS)
                    control.latency = 0.0
                elif fault.startswith("cut-rendezvous"):
                    counted = Direction.DOWNSTREAM if "request" in fault else Direction.UPSTREAM
                    proxy.inject_next("request", Fault.CUT, after_bytes=100_000, counted=counted)
                    path = "/echo" if "request" in fault else "/big"
                    seen[fault] = batch(http, [("POST", path, random.randbytes(200 * 1024))])
                else:
                    in_flight = pool.submit(batch, http, REQUESTS * 2)
                    time.sleep(HANDLER_DELAY / 2)
                    if fault == "cut-control":
                        control.cut()
                    elif fault == "half-close-control-up":
                        control.half_close(Direction.UPSTREAM)
                    elif fault == "half-close-control-down":
                        control.half_close(Direction.DOWNSTREAM)
                    else:
                        control.drop()
                    seen[fault] = in_flight.result(REQUEST_TIMEOUT + HANG)
                    log.wait_for(ListenerStatus.ONLINE, onlines + 1, timeout=HANG)
                    control.cut()  # a silent listener stays on the relay until its ping fails
                    deadline = time.monotonic() + HANG
                    while relay.listener_count() != 1:
                        assert time.monotonic() < deadline
                        time.sleep(0.01)
                # Whatever happened, the next requests are answered.
                assert batch(http, REQUESTS) == ["ok"] * len(REQUESTS), fault
    print(f"\nHTTP outcomes by fault ({transport} listener): {seen}")
    assert set(seen["latency"]) == {"ok"}
    assert set(seen["cut-rendezvous-mid-request"]) == {"502"}
    assert set(seen["cut-rendezvous-mid-response"]) == {"cut"}
    for fault in HTTP_FAULTS:
        assert set(seen[fault]) <= {"ok", "502", "504", "cut"}, (fault, seen[fault])
    # Requests in flight on a control channel that vanished got 502, not a hang.
    assert "502" in seen["cut-control"]
    assert "504" in seen["blackhole-control"]


# -- relay restarts ----------------------------------------------------------------------------

RESTARTS = 50


@dataclass
class Traffic:
    """Echo round trips and HTTP requests, one after the other, until stopped."""

    cs: str
    successes: list[float] = field(default_factory=list)
    expected_failures: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        auth = RelayAuth.from_connection_string(self.cs)
        with httpx.Client(timeout=5) as http:
            while not self.stop.is_set():
                self._attempt(self._round_trip)
                self._attempt(lambda: self._request(http, auth))

    def _round_trip(self) -> None:
        message = random.randbytes(1000)
        with sync.connect(self.cs, connect_timeout=5) as ws:
            ws.send(message)
            assert ws.recv(timeout=5) == message

    def _request(self, http: httpx.Client, auth: RelayAuth) -> None:
        response = http.post(auth.url("/echo"), content=b"ping", auth=auth)
        if response.status_code in (502, 503, 504):
            raise HttpGatewayError(response.status_code)
        assert (response.status_code, response.content) == (200, b"ping")

    def _attempt(self, work: Callable[[], None]) -> None:
        try:
            work()
        except (HycoError, httpx.TransportError, HttpGatewayError) as error:
            name = type(error).__name__
            self.expected_failures[name] = self.expected_failures.get(name, 0) + 1
            time.sleep(0.01)
        except Exception as error:
            self.unexpected.append(repr(error))
        else:
            self.successes.append(time.monotonic())

    def wait_for_success_after(self, moment: float) -> None:
        deadline = time.monotonic() + HANG
        while not (self.successes and self.successes[-1] > moment):
            assert time.monotonic() < deadline, "traffic did not resume after a restart"
            assert not self.unexpected, self.unexpected
            time.sleep(0.005)


class HttpGatewayError(Exception):
    """The relay answered 502, 503 or 504: expected while it restarts."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")


def test_listeners_recover_from_every_relay_restart_and_kill(tmp_path: Path) -> None:
    # The relay runs as ``hyco relay``: half the time it is killed (SIGKILL: its sockets just
    # vanish), half the time stopped in good order (SIGTERM: listeners hear close 1001); then
    # it starts again on the same port.
    relay = ProcessRelay(tmp_path)
    relay.start(0)
    cs = connection_string(relay.address)
    logs = {transport: StatusLog() for transport in TRANSPORTS}
    recoveries: list[float] = []
    down_times: list[float] = []
    kills = 0
    traffic = Traffic(cs)
    worker = threading.Thread(target=traffic.run, name="traffic", daemon=True)
    try:
        with (
            open_listener("anyio", cs, log=logs["anyio"], request_handler=anyio_answer),
            open_listener("sync", cs, log=logs["sync"], request_handler=sync_answer),
        ):
            worker.start()
            try:
                traffic.wait_for_success_after(time.monotonic())
                for restart in range(1, RESTARTS + 1):
                    # The next relays warm up ahead, so that the relay is down only as long
                    # as this test says.
                    relay.prepare(2)
                    stopped = time.monotonic()
                    if restart % 2:
                        relay.kill()
                        kills += 1
                    else:
                        relay.stop()
                    time.sleep(random.uniform(0.05, 0.15))
                    relay.start()
                    back = time.monotonic()
                    down_times.append(back - stopped)
                    online = [
                        log.wait_for(ListenerStatus.ONLINE, restart + 1) for log in logs.values()
                    ]
                    recoveries.append(max(0.0, max(entry.at for entry in online) - back))
                    traffic.wait_for_success_after(back)
            finally:
                traffic.stop.set()
                worker.join(HANG)
    finally:
        relay.close()
    assert not traffic.unexpected, traffic.unexpected
    for log in logs.values():
        assert log.count(ListenerStatus.ONLINE) == RESTARTS + 1
        assert log.count(ListenerStatus.CLOSED) == 1
    assert kills == RESTARTS // 2
    print(
        f"\n{RESTARTS} relay restarts ({kills} killed), down {min(down_times) * 1000:.0f} to "
        f"{max(down_times) * 1000:.0f} ms: both listeners recovered every time, the slowest "
        f"{max(recoveries) * 1000:.0f} ms after the relay was back; {len(traffic.successes)} "
        f"round trips and requests succeeded; failures while down: {traffic.expected_failures}"
    )

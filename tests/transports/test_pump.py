"""The anyio pump's timekeeping, over real TCP on 127.0.0.1: a :class:`Clock` keeps the time of
many sockets, whose readers then wait on their streams alone."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest

from hyco_core import ChannelClosed, ChannelConfig, Event, KeepAlive, RelayTimeoutError
from hyco_core.service import ServerWebSocket
from hyco_transports.pump import ChannelSocket, Clock, LazyEvent, MessageQueue

pytestmark = pytest.mark.anyio

FAST = ChannelConfig(close_timeout=0.3, keepalive=KeepAlive(ping_interval=0.2, pong_timeout=0.3))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[anyio.abc.SocketStream, socket.socket]]:
    """A stream for the socket under test, and its peer as a plain blocking socket."""
    server = socket.create_server(("127.0.0.1", 0))
    with server:
        stream = await anyio.connect_tcp("127.0.0.1", server.getsockname()[1])
        peer, _ = server.accept()
        with peer:
            async with stream:
                yield stream, peer


async def run_until_closed(socket_: ChannelSocket) -> list[Event]:
    events: list[Event] = []

    async def collect(event: Event) -> None:
        events.append(event)

    with anyio.fail_after(10):
        await socket_.run(collect)
    return events


def received(peer: socket.socket) -> bytes:
    peer.setblocking(False)
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b""


async def test_the_clock_pings_a_silent_peer_then_ends_the_connection() -> None:
    clock = Clock()
    async with anyio.create_task_group() as tasks, tcp_pair() as (stream, peer):
        tasks.start_soon(clock.run)
        socket_ = ChannelSocket(stream, ServerWebSocket(now=time.monotonic(), config=FAST), clock)
        events = await run_until_closed(socket_)
        heard = received(peer)
        tasks.cancel_scope.cancel()
    (closed,) = events
    assert isinstance(closed, ChannelClosed)
    assert closed.code == 1006
    assert isinstance(closed.error, RelayTimeoutError)
    assert heard.startswith(b"\x89")  # the ping went out, from the clock's task


async def test_the_clock_ends_a_close_the_peer_never_answers() -> None:
    clock = Clock()
    config = ChannelConfig(close_timeout=0.3, keepalive=None)
    async with anyio.create_task_group() as tasks, tcp_pair() as (stream, peer):
        tasks.start_soon(clock.run)
        socket_ = ChannelSocket(stream, ServerWebSocket(now=time.monotonic(), config=config), clock)

        async def close_soon() -> None:
            await anyio.sleep(0.1)
            socket_.channel.close(4000, "bye", now=time.monotonic())
            await socket_.flush()  # moves the deadline earlier: the clock must hear of it

        tasks.start_soon(close_soon)
        started = time.monotonic()
        events = await run_until_closed(socket_)
        heard = received(peer)
        tasks.cancel_scope.cancel()
    assert time.monotonic() - started < 5  # the close timeout, not the 10-second guard
    (closed,) = events
    assert isinstance(closed, ChannelClosed)
    assert heard.startswith(b"\x88")  # the close frame


async def test_a_busy_connection_is_not_pinged_and_leaves_one_entry_at_a_time() -> None:
    clock = Clock()
    frame = b"\x82\x85abcd" + bytes(b ^ k for b, k in zip(b"hello", b"abcdabcd", strict=False))
    async with anyio.create_task_group() as tasks, tcp_pair() as (stream, peer):
        tasks.start_soon(clock.run)
        socket_ = ChannelSocket(stream, ServerWebSocket(now=time.monotonic(), config=FAST), clock)
        messages = 0
        most_due = 0

        async def count(event: Event) -> None:
            nonlocal messages, most_due
            messages += 1
            most_due = max(most_due, len(clock._due))

        async def chatter() -> None:
            for _ in range(60):  # 0.6 s of traffic, three ping intervals
                await anyio.to_thread.run_sync(peer.sendall, frame)
                await anyio.sleep(0.01)
            await anyio.to_thread.run_sync(
                peer.sendall, b"\x88\x82abcd" + bytes([0x03 ^ 0x61, 0xE8 ^ 0x62])
            )

        tasks.start_soon(chatter)
        with anyio.fail_after(10):
            await socket_.run(count)
        heard = received(peer)
        tasks.cancel_scope.cancel()
    assert messages == 61  # sixty messages and the close
    assert most_due <= 2
    assert heard.startswith(b"\x88")  # the answer to the close, and no ping before it


async def test_lazy_event_wakes_every_waiter_and_survives_a_cancelled_one() -> None:
    event = LazyEvent()
    woken: list[int] = []

    async def waiter(number: int) -> None:
        await event.wait()
        woken.append(number)

    async with anyio.create_task_group() as tasks:
        with anyio.move_on_after(0.05):
            await event.wait()  # a waiter that gives up
        for number in range(3):
            tasks.start_soon(waiter, number)
        await anyio.sleep(0.05)
        event.set()
    assert sorted(woken) == [0, 1, 2]
    await event.wait()  # set for good


async def test_message_queue_holds_back_the_producer_and_drains_after_the_end() -> None:
    queue = MessageQueue(2)
    produced: list[int] = []

    async def produce() -> None:
        for number in range(5):
            await queue.put(str(number))
            produced.append(number)
        queue.end()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(produce)
        await anyio.sleep(0.05)
        assert produced == [0, 1]  # the third waits for room
        taken = [await queue.get() for _ in range(6)]
    assert taken == ["0", "1", "2", "3", "4", None]


async def test_discarding_frees_a_waiting_producer_and_drops_the_rest() -> None:
    queue = MessageQueue(1)
    async with anyio.create_task_group() as tasks:
        await queue.put("kept")
        tasks.start_soon(queue.put, "dropped")
        await anyio.sleep(0.05)
        queue.discard()
    assert await queue.get() is None

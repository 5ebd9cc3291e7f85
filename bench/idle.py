"""Many idle relayed connections: RSS per connection in the relay and in the listener.

The relay and the listener run in their own processes (RSS read from ``/proc/<pid>/status``
before and after); this process holds the senders, then checks that every connection still
echoes.
"""

from __future__ import annotations

import resource

import anyio

from hyco_transports.anyio import connect

from .processes import Child
from .stats import Results
from .wire import relay_with_listener

__all__ = ["measure_idle", "raise_file_limit"]

_OPENING_AT_ONCE = 32
_SPARE_FILES = 200


def raise_file_limit() -> int:
    """Lift the soft open-file limit to the hard one (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _hold(
    connection_string: str, count: int, relay: Child, listener: Child
) -> tuple[int, int, int]:
    """Open ``count`` connections, return (relay KiB, listener KiB, connections that echoed)."""
    opening = anyio.Semaphore(_OPENING_AT_ONCE)
    all_open, check, release = anyio.Event(), anyio.Event(), anyio.Event()
    opened = echoed = checked = 0
    all_checked = anyio.Event()

    async def one(index: int) -> None:
        nonlocal opened, echoed, checked
        async with opening:
            context = connect(connection_string, connect_timeout=60)
            websocket = await context.__aenter__()
        try:
            opened += 1
            if opened == count:
                all_open.set()
            await check.wait()
            with anyio.move_on_after(30):
                await websocket.send(f"ping {index}")
                if await websocket.recv() == f"ping {index}":
                    echoed += 1
            checked += 1
            if checked == count:
                all_checked.set()
            await release.wait()
        finally:
            await context.__aexit__(None, None, None)

    async with anyio.create_task_group() as tasks:
        for index in range(count):
            tasks.start_soon(one, index)
        await all_open.wait()
        await anyio.sleep(1)  # let buffers and queues of the last connects settle
        sizes = relay.rss_kib(), listener.rss_kib()
        check.set()
        await all_checked.wait()
        release.set()
    return sizes[0], sizes[1], echoed


def measure_idle(results: Results, *, count: int) -> None:
    limit = raise_file_limit()
    # The relay holds two sockets per relayed connection (the sender's and the rendezvous).
    affordable = (limit - _SPARE_FILES) // 2
    if affordable < count:
        results.notes.append(
            f"the open-file limit ({limit}) allows {affordable} of the {count} idle connections"
        )
        count = affordable
    if count <= 0:
        return
    with relay_with_listener() as (relay, listener, connection_string):
        relay_before, listener_before = relay.rss_kib(), listener.rss_kib()
        relay_after, listener_after, echoed = anyio.run(
            _hold, connection_string, count, relay, listener
        )
    results.add(
        "idle: relay RSS per connection",
        "KiB",
        [(relay_after - relay_before) / count],
        higher_is_better=False,
    )
    results.add(
        "idle: listener RSS per connection",
        "KiB",
        [(listener_after - listener_before) / count],
        higher_is_better=False,
    )
    results.add("idle: connections still echoing", "%", [100 * echoed / count])

"""Load: 1,000 senders at once through one relay to one listener, each echoing 1 MiB.

The relay runs as ``hyco relay`` in a process of its own (on the other core, as it would in
production); the listener and every sender run on the anyio transport in this process. Every
byte must come back to the sender that sent it, in order: the listener checks what it received
against what each sender sent, and each sender checks what came back, by SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from hyco_conformance.harness import relay_config
from hyco_transports.anyio import Listener, WebSocket, connect

from .conftest import ProcessRelay, connection_string

SENDERS = 1000
SIZE = 1024 * 1024
PIECE = 64 * 1024
BLOCK = os.urandom(SIZE)
TIMEOUT = 120.0  # far above a healthy run: reaching it means a hang


def piece(sender: int, number: int) -> bytes:
    """The ``number``-th message of ``sender``: unique to both, so that a message delivered to
    the wrong sender, or out of order, changes a digest."""
    start = number * PIECE
    return f"{sender:08d}{number:08d}".encode() + BLOCK[start + 16 : start + PIECE]


def sent_digest(sender: int) -> str:
    digest = hashlib.sha256()
    for number in range(SIZE // PIECE):
        digest.update(piece(sender, number))
    return digest.hexdigest()


@dataclass
class Results:
    listener: dict[int, str] = field(default_factory=dict)
    senders: dict[int, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


async def run_load(cs: str, results: Results) -> float:
    """Echo every sender's megabyte; the wall time from the first connect to the last byte."""

    async def echo(ws: WebSocket) -> None:
        header = await ws.recv()
        assert isinstance(header, str)
        sender = int(json.loads(header)["sender"])
        digest = hashlib.sha256()
        async for message in ws:
            assert isinstance(message, bytes)
            digest.update(message)
            await ws.send(message)
        results.listener[sender] = digest.hexdigest()

    async def send(sender: int) -> None:
        try:
            async with connect(cs, connect_timeout=TIMEOUT) as ws:
                await ws.send(json.dumps({"sender": sender}))
                digest = hashlib.sha256()
                received = 0
                async with anyio.create_task_group() as tasks:

                    async def write() -> None:
                        for number in range(SIZE // PIECE):
                            await ws.send(piece(sender, number))

                    tasks.start_soon(write)
                    while received < SIZE:
                        message = await ws.recv()
                        assert isinstance(message, bytes)
                        digest.update(message)
                        received += len(message)
                results.senders[sender] = digest.hexdigest()
        except Exception as error:
            results.failures.append(f"sender {sender}: {error!r}")

    async with Listener.from_connection_string(cs, connection_handler=echo, accept_queue=SENDERS):
        started = time.monotonic()
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tasks:
                for sender in range(SENDERS):
                    tasks.start_soon(send, sender)
        wall = time.monotonic() - started
        # The listener records a stream once its sender's close has reached it.
        with anyio.fail_after(TIMEOUT):
            while len(results.listener) < SENDERS and not results.failures:
                await anyio.sleep(0.01)
    return wall


def test_a_thousand_concurrent_senders_each_echo_a_megabyte(tmp_path: Path) -> None:
    relay = ProcessRelay(tmp_path, relay_config(request_timeout=60.0, rendezvous_timeout=60.0))
    relay.start(0)
    results = Results()
    try:
        wall = anyio.run(run_load, connection_string(relay.address), results)
        rss, peak = relay.memory()
    finally:
        relay.close()
    assert results.failures == []
    expected = {sender: sent_digest(sender) for sender in range(SENDERS)}
    assert results.listener == expected  # what the listener got is what each sender sent
    assert results.senders == expected  # and every sender got it all back
    mib = 1024 * 1024
    print(
        f"\n{SENDERS} senders x {SIZE // mib} MiB echoed through one relay in {wall:.1f} s "
        f"({2 * SENDERS * SIZE / mib / wall:.0f} MiB/s relayed both ways); relay RSS "
        f"{rss / mib:.0f} MiB at the end, {peak / mib:.0f} MiB at its peak"
    )

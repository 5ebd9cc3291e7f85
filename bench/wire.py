"""Relayed WebSockets: throughput, connect latency and the relay's CPU cost per GiB.

The sender runs in this process; the relay, the listener and every baseline server run in
child processes, so that the relay's CPU time is its own. Baselines measured in the same run:
the same anyio transport straight to a ``websockets`` server (no relay), a raw TCP copy, and
Microsoft's ``hyco-ws`` on both ends of the same relay.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio

from hyco_core import parse_connection_string
from hyco_transports.anyio import connect

from .helpers import DIRECT_ENTITY, DONE, MAX_MESSAGE
from .processes import Child, node_available, start_helper, start_node
from .stats import Results

__all__ = ["measure_connects", "measure_throughput", "node_environment", "relay_with_listener"]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@contextmanager
def relay_with_listener(kind: str = "hyco") -> Iterator[tuple[Child, Child, str]]:
    """A relay child and a listener child (``hyco`` or ``hyco-ws``) online on it."""
    with start_helper("relay") as relay:
        connection_string = str(relay.info["connection_string"])
        if kind == "hyco":
            listener = start_helper("listener", connection_string)
        else:
            listener = start_node("listen", env=node_environment(relay))
        with listener:
            yield relay, listener, connection_string


def node_environment(relay: Child) -> dict[str, str]:
    parsed = parse_connection_string(str(relay.info["connection_string"]))
    return {
        "HYCO_RELAY_ADDRESS": str(relay.info["address"]),
        "HYCO_ENTITY": parsed.entity_path or DIRECT_ENTITY,
        "HYCO_KEY_NAME": parsed.shared_access_key_name or "",
        "HYCO_KEY": parsed.shared_access_key or "",
    }


def _direct_connection_string(address: str) -> str:
    return (
        f"Endpoint=sb://{address}/;EntityPath={DIRECT_ENTITY};SharedAccessKeyName=bench;"
        "SharedAccessKey=YmVuY2g=;UseDevelopmentEmulator=true"
    )


async def _websocket_rates(
    connection_string: str, size: int, count: int, rounds: int
) -> list[float]:
    payload = bytes(size)
    rates = []
    async with connect(connection_string, max_message_size=MAX_MESSAGE) as websocket:
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(count):
                await websocket.send(payload)
            await websocket.send(DONE)
            total = int(await websocket.recv())
            elapsed = time.perf_counter() - started
            if total != size * count:
                raise RuntimeError(f"the receiver counted {total} bytes, not {size * count}")
            rates.append(total / elapsed / MIB)
    return rates


async def _tcp_rates(address: str, total: int, rounds: int) -> list[float]:
    host, port = address.rsplit(":", 1)
    chunk = bytes(MIB)
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        async with await anyio.connect_tcp(host, int(port)) as stream:
            for _ in range(total // MIB):
                await stream.send(chunk)
            await stream.send_eof()
            counted = int(await stream.receive())
        elapsed = time.perf_counter() - started
        if counted != total // MIB * MIB:
            raise RuntimeError(f"the TCP sink counted {counted} bytes")
        rates.append(counted / elapsed / MIB)
    return rates


def measure_throughput(results: Results, *, rounds: int, volume: int) -> None:
    """MiB/s of ``volume`` bytes per round in 64 KiB and 1 MiB messages, and relay CPU per GiB."""
    sizes = {"64 KiB": 64 * KIB, "1 MiB": MIB}
    with relay_with_listener() as (relay, _, connection_string):
        cpu_before, relayed = relay.cpu_seconds(), 0
        for label, size in sizes.items():
            count = max(1, volume // size)
            rates = anyio.run(_websocket_rates, connection_string, size, count, rounds)
            results.add(f"throughput {label}: relayed (hyco anyio)", "MiB/s", rates)
            relayed += size * count * rounds
        cpu = relay.cpu_seconds() - cpu_before
    results.add(
        "relay CPU per GiB relayed", "s/GiB", [cpu / (relayed / GIB)], higher_is_better=False
    )
    with start_helper("direct-websocket") as direct:
        direct_cs = _direct_connection_string(str(direct.info["address"]))
        for label, size in sizes.items():
            count = max(1, volume // size)
            rates = anyio.run(_websocket_rates, direct_cs, size, count, rounds)
            results.add(f"throughput {label}: direct WebSocket (hyco anyio)", "MiB/s", rates)
    with start_helper("tcp-sink") as sink:
        rates = anyio.run(_tcp_rates, str(sink.info["address"]), volume, rounds)
        results.add("throughput: raw TCP copy", "MiB/s", rates)
    if not node_available():
        results.notes.append("node or hyco-ws missing: no hyco-ws throughput baseline")
        return
    with relay_with_listener("hyco-ws") as (relay, _, _):
        cpu_before, relayed = relay.cpu_seconds(), 0
        for label, size in sizes.items():
            count = max(1, volume // size)
            args = (str(count), str(size), str(rounds))
            with start_node("send", *args, env=node_environment(relay)) as node:
                if "rates" not in node.info:
                    raise RuntimeError(f"hyco-ws sender failed: {node.info}")
                results.add(f"throughput {label}: hyco-ws via relay", "MiB/s", node.info["rates"])
            relayed += size * count * rounds
        cpu = relay.cpu_seconds() - cpu_before
    results.add(
        "relay CPU per GiB relayed (hyco-ws ends)",
        "s/GiB",
        [cpu / (relayed / GIB)],
        higher_is_better=False,
    )


async def _connect_latencies(connection_string: str, count: int) -> tuple[list[float], float]:
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        opening = time.perf_counter()
        async with connect(connection_string) as websocket:
            latencies.append(time.perf_counter() - opening)
            await websocket.close()
    return latencies, count / (time.perf_counter() - started)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _add_latencies(results: Results, label: str, rounds: list[tuple[list[float], float]]) -> None:
    p50 = [_percentile(latencies, 0.5) * 1000 for latencies, _ in rounds]
    p99 = [_percentile(latencies, 0.99) * 1000 for latencies, _ in rounds]
    results.add(f"connect p50: {label}", "ms", p50, higher_is_better=False)
    results.add(f"connect p99: {label}", "ms", p99, higher_is_better=False)
    results.add(f"connects/s: {label}", "1/s", [rate for _, rate in rounds])


def measure_connects(results: Results, *, rounds: int, count: int) -> None:
    """Sequential connects (``count`` in all, split over ``rounds``): p50, p99 and rate."""
    per_round = max(1, count // rounds)
    with relay_with_listener() as (_, _, connection_string):
        measured = [
            anyio.run(_connect_latencies, connection_string, per_round) for _ in range(rounds)
        ]
    _add_latencies(results, "relayed (hyco anyio)", measured)
    with start_helper("direct-websocket") as direct:
        direct_cs = _direct_connection_string(str(direct.info["address"]))
        measured = [anyio.run(_connect_latencies, direct_cs, per_round) for _ in range(rounds)]
    _add_latencies(results, "direct WebSocket (hyco anyio)", measured)
    if not node_available():
        results.notes.append("node or hyco-ws missing: no hyco-ws connect baseline")
        return
    measured = []
    with relay_with_listener("hyco-ws") as (relay, _, _):
        for _ in range(rounds):
            with start_node("connect", str(per_round), env=node_environment(relay)) as node:
                latencies = [float(x) for x in node.info["latencies"]]
                measured.append((latencies, float(node.info["rate"])))
    _add_latencies(results, "hyco-ws via relay", measured)

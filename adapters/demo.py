"""``hyco demo``: everything hyco does, in one process, measured.

An embedded local relay, a listener that echoes WebSocket messages and answers HTTP, and a
sender; WebSocket round trips, bulk echo, and HTTP requests both small (inline on the control
channel) and over 64 KiB (over a rendezvous) go through the relay over real loopback sockets.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import AsyncIterator
from typing import TextIO

import anyio
import httpx

from hyco_relay.config import default_config
from hyco_relay.server import serve_relay
from hyco_transports.anyio import HttpRequest, HttpResponse, Listener, WebSocket, connect
from hyco_transports.httpx import RelayAuth

__all__ = ["run_demo"]

_MIB = 1024 * 1024


def run_demo(*, messages: int = 500, megabytes: int = 64, out: TextIO) -> int:
    report = anyio.run(_demo, messages, megabytes)
    print(report, file=out)
    return 0


async def _echo(websocket: WebSocket) -> None:
    async for message in websocket:
        await websocket.send(message)


async def _answer(request: HttpRequest) -> HttpResponse:
    body = await request.body()
    if request.method == "GET":
        return HttpResponse(200, {"Content-Type": "text/plain"}, body=b"hello from the listener\n")
    digest = hashlib.sha256(body).hexdigest()

    async def stream() -> AsyncIterator[bytes]:
        yield body

    return HttpResponse(200, {"X-SHA256": digest}, body=stream())


async def _demo(messages: int, megabytes: int) -> str:
    lines: list[str] = []
    started = time.perf_counter()
    async with serve_relay(default_config(port=0)) as relay:
        ready = time.perf_counter() - started
        lines.append(f"Local relay on {relay.address} (ready in {ready * 1000:.0f} ms)")
        cs = relay.connection_string()
        async with Listener.from_connection_string(
            cs, connection_handler=_echo, request_handler=_answer
        ):
            lines.append("Listener online on hybrid connection 'hyco'")
            async with connect(cs) as websocket:
                lines.extend(await _websocket_figures(websocket, messages, megabytes))
            lines.extend(await _http_figures(cs))
    lines.append(f"Done in {time.perf_counter() - started:.1f} s: relay, listener and sender ok.")
    return "\n".join(lines)


async def _websocket_figures(websocket: WebSocket, messages: int, megabytes: int) -> list[str]:
    await websocket.send("warm-up")
    await websocket.recv()
    latencies = []
    for index in range(messages):
        text = f"message {index}"
        begin = time.perf_counter()
        await websocket.send(text)
        if await websocket.recv() != text:
            raise RuntimeError("the echo did not match")
        latencies.append(time.perf_counter() - begin)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    payload = bytes(range(256)) * (_MIB // 256)
    begin = time.perf_counter()
    async with anyio.create_task_group() as tasks:

        async def send_all() -> None:
            for _ in range(megabytes):
                await websocket.send(payload)

        tasks.start_soon(send_all)
        for _ in range(megabytes):
            if await websocket.recv() != payload:
                raise RuntimeError("a 1 MiB echo did not match")
    elapsed = time.perf_counter() - begin
    return [
        f"WebSocket: {messages} round trips, latency p50 {p50:.2f} ms, p99 {p99:.2f} ms",
        f"WebSocket: echoed {megabytes} x 1 MiB in {elapsed:.2f} s "
        f"({megabytes / elapsed:.0f} MiB/s each way through the relay)",
    ]


async def _http_figures(cs: str) -> list[str]:
    auth = RelayAuth.from_connection_string(cs)
    url = auth.url()
    lines = []
    async with httpx.AsyncClient(auth=auth, timeout=30) as client:
        begin = time.perf_counter()
        small = await client.get(url)
        small.raise_for_status()
        took = (time.perf_counter() - begin) * 1000
        lines.append(f"HTTP: GET {small.status_code} in {took:.1f} ms (inline, control channel)")
        body = bytes(range(256)) * (4 * _MIB // 256)
        begin = time.perf_counter()
        large = await client.post(url, content=body)
        large.raise_for_status()
        took = time.perf_counter() - begin
        if large.content != body or large.headers["x-sha256"] != hashlib.sha256(body).hexdigest():
            raise RuntimeError("the 4 MiB HTTP echo did not match")
        lines.append(
            f"HTTP: POST 4 MiB echoed {large.status_code} in {took * 1000:.0f} ms "
            f"(over a rendezvous, {2 * 4 / took:.0f} MiB/s both ways)"
        )
    return lines

"""HTTP through the relay to an ASGI app, against the same app served directly by uvicorn.

Both servers run the same app (:func:`bench.helpers.app`) in a child process; a concurrent
``httpx`` client in this process sends a small GET, a 64 KiB POST and a GET answered with 1 MiB.
"""

from __future__ import annotations

import time

import anyio
import httpx

from hyco_transports.httpx import RelayAuth

from .processes import start_helper
from .stats import Results

__all__ = ["CASES", "measure_http", "request_rate"]

CASES = {
    "GET small": ("GET", "/small", b""),
    "POST 64 KiB": ("POST", "/echo", bytes(64 * 1024)),
    "GET 1 MiB": ("GET", "/large", b""),
}


async def request_rate(
    base: str, auth: httpx.Auth | None, case: str, count: int, concurrency: int
) -> float:
    """Requests per second of ``case`` from ``concurrency`` tasks sharing one client."""
    method, path, body = CASES[case]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    remaining = count

    async with httpx.AsyncClient(auth=auth, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                response = await client.request(method, base + path, content=body or None)
                if response.status_code != 200:
                    raise RuntimeError(f"{case}: status {response.status_code}")

        await client.request(method, base + path, content=body or None)  # warm the connections
        started = time.perf_counter()
        async with anyio.create_task_group() as tasks:
            for _ in range(concurrency):
                tasks.start_soon(worker)
        return count / (time.perf_counter() - started)


def _measure(
    results: Results, label: str, base: str, auth: httpx.Auth | None, *, rounds: int, count: int
) -> None:
    for case in CASES:
        rates = [anyio.run(request_rate, base, auth, case, count, 8) for _ in range(rounds)]
        results.add(f"HTTP {case}: {label}", "req/s", rates)


def measure_http(results: Results, *, rounds: int, count: int) -> None:
    with start_helper("relay") as relay:
        connection_string = str(relay.info["connection_string"])
        with start_helper("asgi-relayed", connection_string):
            auth = RelayAuth.from_connection_string(connection_string)
            base = auth.url().rstrip("/")
            _measure(results, "relayed (hyco ASGI)", base, auth, rounds=rounds, count=count)
    with start_helper("asgi-direct") as direct:
        base = f"http://{direct.info['address']}"
        _measure(results, "direct (uvicorn)", base, None, rounds=rounds, count=count)

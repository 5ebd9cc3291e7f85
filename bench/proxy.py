"""HTTP through the relay and ``expose_http`` to a uvicorn upstream, against the same upstream
asked directly.

The relay, the proxy and the upstream (the app :mod:`bench.http` uses, on uvicorn) each run in a
child process; the two ways are measured in alternate rounds against the one upstream, so that
a noisy neighbour weighs on both alike.
"""

from __future__ import annotations

import anyio

from hyco_transports.httpx import RelayAuth

from .http import CASES, request_rate
from .processes import start_helper
from .stats import Results

__all__ = ["measure_proxy"]

_CONCURRENCY = 8


def measure_proxy(results: Results, *, rounds: int, count: int) -> None:
    with start_helper("relay") as relay, start_helper("asgi-direct") as upstream:
        connection_string = str(relay.info["connection_string"])
        direct = f"http://{upstream.info['address']}"
        with start_helper("http-proxy", connection_string, direct):
            auth = RelayAuth.from_connection_string(connection_string)
            proxied = auth.url().rstrip("/")
            for case in CASES:
                through: list[float] = []
                straight: list[float] = []
                for _ in range(rounds):
                    straight.append(
                        anyio.run(request_rate, direct, None, case, count, _CONCURRENCY)
                    )
                    through.append(
                        anyio.run(request_rate, proxied, auth, case, count, _CONCURRENCY)
                    )
                results.add(f"proxy {case}: through the relay (expose_http)", "req/s", through)
                results.add(f"proxy {case}: direct (uvicorn)", "req/s", straight)

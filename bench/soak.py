"""A soak: relayed WebSockets and HTTP requests come and go for minutes; nothing may pile up.

``python -m bench.soak [--minutes 10] [--workers 16]`` runs a relay and a listener in child
processes and, from this one, ``workers`` loops that each, over and over, pick one of:

- a WebSocket that echoes a few text messages of random sizes (up to 512 KiB), checked by
  SHA-256, then closes normally;
- an HTTP POST of a random body (up to 256 KiB), echoed by the listener and checked;
- a WebSocket cut at the TCP level right after it opened, with no close handshake.

Every 10 seconds it samples the RSS and the open file descriptors of the relay and the listener.
After the churn stops it waits for the two to settle and reports whether they came back flat:
file descriptors back to where they were before, and RSS within 10% (plus 2 MiB) of its value
once warm (at a fifth of the run). The report goes to stdout and ``bench/results/soak.json``;
the exit status is 1 when a check failed, an operation failed or an echo came back wrong, 0
otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import websockets.asyncio.client

from hyco_core import create_relay_send_uri, create_relay_token, parse_connection_string
from hyco_transports.anyio import connect

from .idle import raise_file_limit
from .processes import REPO, Child
from .wire import relay_with_listener

__all__ = ["SoakReport", "main", "soak"]

_SAMPLE_EVERY = 10.0
_LARGEST = 256 * 1024
_SETTLE = 3.0


@dataclass(kw_only=True)
class SoakReport:
    """What a soak did and what the relay and the listener looked like along the way."""

    seconds: float
    workers: int
    operations: dict[str, int] = field(default_factory=dict)
    mismatches: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[dict[str, float]] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.mismatches == 0 and not self.errors and all(self.checks.values())

    def as_json(self) -> dict[str, object]:
        return {
            "seconds": self.seconds,
            "workers": self.workers,
            "operations": self.operations,
            "mismatches": self.mismatches,
            "errors": self.errors,
            "samples": self.samples,
            "checks": self.checks,
            "passed": self.passed,
        }


def _open_files(child: Child) -> int:
    return len(os.listdir(f"/proc/{child.pid}/fd"))


def _sample(started: float, relay: Child, listener: Child) -> dict[str, float]:
    return {
        "at": round(time.monotonic() - started, 1),
        "relay_rss_kib": relay.rss_kib(),
        "relay_files": _open_files(relay),
        "listener_rss_kib": listener.rss_kib(),
        "listener_files": _open_files(listener),
    }


class _Churn:
    def __init__(self, connection_string: str, report: SoakReport, seed: int) -> None:
        parsed = parse_connection_string(connection_string)
        assert parsed.shared_access_key_name
        assert parsed.shared_access_key
        assert parsed.entity_path
        self.connection_string = connection_string
        self.address = parsed.namespace
        self.entity = parsed.entity_path
        self.rule = parsed.shared_access_key_name
        self.key = parsed.shared_access_key
        self.report = report
        self.random = random.Random(seed)  # noqa: S311 - sizes and choices, not secrets

    def _token(self) -> str:
        return create_relay_token(
            f"sb://{self.address}/{self.entity}", self.rule, self.key, now=time.time()
        )

    def _payload(self) -> bytes:
        return self.random.randbytes(self.random.randint(1, _LARGEST))

    def _count(self, table: dict[str, int], name: str) -> None:
        table[name] = table.get(name, 0) + 1

    async def run(self, until: float, http: httpx.AsyncClient) -> None:
        kinds = (self._websocket, self._http, self._cut)
        while time.monotonic() < until:
            kind = self.random.choices(kinds, weights=(5, 4, 1))[0]
            try:
                with anyio.fail_after(60):
                    await kind(http)
            except Exception as error:  # every failure is counted and reported
                self._count(self.report.errors, f"{kind.__name__[1:]}: {type(error).__name__}")
            else:
                self._count(self.report.operations, kind.__name__[1:])

    async def _websocket(self, _http: httpx.AsyncClient) -> None:
        async with connect(self.connection_string, connect_timeout=30) as websocket:
            for _ in range(self.random.randint(1, 4)):
                text = self._payload().hex()  # the listener echoes text messages
                await websocket.send(text)
                echoed = await websocket.recv()
                if not isinstance(echoed, str) or _digest(echoed.encode()) != _digest(
                    text.encode()
                ):
                    self.report.mismatches += 1

    async def _http(self, http: httpx.AsyncClient) -> None:
        payload = self._payload()
        response = await http.post(
            f"http://{self.address}/{self.entity}/soak",
            content=payload,
            headers={"ServiceBusAuthorization": self._token()},
        )
        response.raise_for_status()
        if _digest(response.content) != _digest(payload):
            self.report.mismatches += 1

    async def _cut(self, _http: httpx.AsyncClient) -> None:
        uri = create_relay_send_uri(self.address, self.entity, secure=False)
        websocket = await websockets.asyncio.client.connect(
            uri, additional_headers={"ServiceBusAuthorization": self._token()}, open_timeout=30
        )
        websocket.transport.abort()  # gone without a close handshake


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def _churn(
    connection_string: str, report: SoakReport, relay: Child, listener: Child, seed: int
) -> None:
    started = time.monotonic()
    until = started + report.seconds
    limits = httpx.Limits(max_connections=report.workers)
    async with (
        httpx.AsyncClient(timeout=60, limits=limits) as http,
        anyio.create_task_group() as tasks,
    ):
        for worker in range(report.workers):
            churn = _Churn(connection_string, report, seed + worker)
            tasks.start_soon(churn.run, until, http)
        while time.monotonic() < until:
            report.samples.append(_sample(started, relay, listener))
            await anyio.sleep(min(_SAMPLE_EVERY, max(0.0, until - time.monotonic())))
    await anyio.sleep(_SETTLE)
    report.samples.append(_sample(started, relay, listener))


def _judge(report: SoakReport) -> None:
    """Flat means: back to the warm level of file descriptors, RSS within 10% + 2 MiB of warm."""
    warm_at = report.seconds / 5
    warm = next((s for s in report.samples if s["at"] >= warm_at), report.samples[0])
    final = report.samples[-1]
    for role in ("relay", "listener"):
        rss_bound = warm[f"{role}_rss_kib"] * 1.1 + 2048
        report.checks[f"{role} RSS flat"] = final[f"{role}_rss_kib"] <= rss_bound
        report.checks[f"{role} file descriptors flat"] = (
            final[f"{role}_files"] <= report.samples[0][f"{role}_files"]
        )


def soak(*, seconds: float, workers: int, seed: int = 1) -> SoakReport:
    """Run the soak; the relay and the listener are child processes."""
    raise_file_limit()
    report = SoakReport(seconds=seconds, workers=workers)
    with relay_with_listener() as (relay, listener, connection_string):
        anyio.run(_churn, connection_string, report, relay, listener, seed)
    _judge(report)
    return report


def _print(report: SoakReport) -> None:
    print(f"soak: {report.seconds:.0f} s, {report.workers} workers")
    for name, count in sorted(report.operations.items()):
        print(f"  {name:10s} {count:8d} done")
    for name, count in sorted(report.errors.items()):
        print(f"  error {name}: {count}")
    print(f"  echoes that came back wrong: {report.mismatches}")
    print("  at s    relay RSS KiB  files   listener RSS KiB  files")
    for sample in report.samples:
        print(
            f"  {sample['at']:6.1f} {sample['relay_rss_kib']:14.0f} {sample['relay_files']:6.0f}"
            f" {sample['listener_rss_kib']:18.0f} {sample['listener_files']:6.0f}"
        )
    for check, passed in report.checks.items():
        print(f"  {'ok    ' if passed else 'FAILED'} {check}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    arguments = parser.parse_args(argv)
    report = soak(seconds=arguments.minutes * 60, workers=arguments.workers, seed=arguments.seed)
    _print(report)
    arguments.out.mkdir(parents=True, exist_ok=True)
    (arguments.out / "soak.json").write_text(json.dumps(report.as_json(), indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

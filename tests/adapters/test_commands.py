"""hyco listen, connect and http as a user runs them: subprocesses against a running relay."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

HYCO = [sys.executable, "-m", "hyco_adapters.cli"]


@pytest.fixture
def relay_and_listener() -> Iterator[tuple[dict[str, str], subprocess.Popen[str]]]:
    relay = subprocess.Popen(  # noqa: S603 - our own command
        [*HYCO, "relay", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert relay.stdout is not None
    lines = [relay.stdout.readline() for _ in range(4)]
    env = {**os.environ, "HYCO_CONNECTION_STRING": lines[3].split("listener: ", 1)[1].strip()}
    listener = subprocess.Popen(  # noqa: S603 - our own command
        [*HYCO, "listen"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "listener connecting"
    assert listener.stdout.readline().strip() == "listener online"
    try:
        yield env, listener
    finally:
        for process in (listener, relay):
            process.send_signal(2)
            process.communicate(timeout=20)


def run(
    *arguments: str, env: dict[str, str], data: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command
        [*HYCO, *arguments],
        input=data,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_connect_sends_lines_and_prints_the_echoes(
    relay_and_listener: tuple[dict[str, str], subprocess.Popen[str]],
) -> None:
    env, _listener = relay_and_listener
    result = run("connect", "--subprotocol", "chat", data="first line\nsecond line\n", env=env)
    assert result.returncode == 0, result.stderr
    assert "connected (subprotocol chat)" in result.stderr
    assert result.stdout.splitlines() == ["first line", "second line"]
    assert "closed (1000" in result.stderr


def test_http_sends_a_request_and_reports_large_transfers(
    relay_and_listener: tuple[dict[str, str], subprocess.Popen[str]], tmp_path: object
) -> None:
    env, _listener = relay_and_listener
    small = run("http", "POST", "/api?x=1", "--data", "ping", "-i", env=env)
    assert small.returncode == 0, small.stderr
    assert small.stdout.startswith("HTTP/1.1 200 OK\n")
    assert small.stdout.endswith("\nping")
    from pathlib import Path

    payload = Path(str(tmp_path)) / "payload.bin"
    payload.write_bytes(b"y" * (3 * 1024 * 1024))
    big = run("http", "PUT", "/upload", "--data", f"@{payload}", env=env)
    assert big.returncode == 0, big.stderr
    assert len(big.stdout) == 3 * 1024 * 1024
    assert "sent 100%" in big.stderr
    assert "received 3145728 bytes" in big.stderr


def test_http_exit_code_follows_the_status_and_bad_headers_are_refused(
    relay_and_listener: tuple[dict[str, str], subprocess.Popen[str]],
) -> None:
    env, _listener = relay_and_listener
    missing = dict(env)
    missing["HYCO_CONNECTION_STRING"] = env["HYCO_CONNECTION_STRING"].replace(
        "EntityPath=hyco", "EntityPath=missing"
    )
    deadline = time.monotonic() + 5
    result = run("http", "GET", "/", env=missing)
    assert result.returncode == 1 or time.monotonic() > deadline
    bad = run("http", "GET", "/", "--header", "nocolon", env=env)
    assert bad.returncode == 2
    assert "NAME:VALUE" in bad.stderr

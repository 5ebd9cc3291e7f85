"""hyco listen, connect and http as a user runs them: subprocesses against a running relay."""

from __future__ import annotations

import os
import pty
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import hyco_relay, lines_of, run_hyco, start_hyco, stop


@pytest.fixture
def relay_and_listener(tmp_path: Path) -> Iterator[dict[str, str]]:
    with hyco_relay(cwd=tmp_path) as relay:
        env = {"HYCO_CONNECTION_STRING": relay.listener}
        listener = start_hyco("listen", cwd=tmp_path, env=env)
        try:
            assert lines_of(listener, 2) == ["listener connecting", "listener online"]
            yield env
        finally:
            stop(listener)


def test_connect_sends_lines_and_prints_the_echoes(
    relay_and_listener: dict[str, str], tmp_path: Path
) -> None:
    env = relay_and_listener
    result = run_hyco(
        "connect", "--subprotocol", "chat", data="first line\nsecond line\n", env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "connected (subprotocol chat)" in result.stderr
    assert result.stdout.splitlines() == ["first line", "second line"]
    assert result.stderr.splitlines()[-1] == "closed (1000)"


def test_http_sends_a_request_and_reports_large_transfers(
    relay_and_listener: dict[str, str], tmp_path: Path
) -> None:
    env = relay_and_listener
    small = run_hyco("http", "POST", "/api?x=1", "--data", "ping", "-i", env=env, cwd=tmp_path)
    assert small.returncode == 0, small.stderr
    assert small.stdout.startswith("HTTP/1.1 200 OK\n")
    assert small.stdout.endswith("\nping")
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"y" * (3 * 1024 * 1024))
    big = run_hyco("http", "PUT", "/upload", "--data", f"@{payload}", env=env, cwd=tmp_path)
    assert big.returncode == 0, big.stderr
    assert len(big.stdout) == 3 * 1024 * 1024
    assert "sent 100%" in big.stderr
    assert "received 3145728 bytes" in big.stderr


def test_http_exit_code_follows_the_status_and_bad_headers_are_refused(
    relay_and_listener: dict[str, str], tmp_path: Path
) -> None:
    env = relay_and_listener
    missing = dict(env)
    missing["HYCO_CONNECTION_STRING"] = env["HYCO_CONNECTION_STRING"].replace(
        "EntityPath=hyco", "EntityPath=missing"
    )
    deadline = time.monotonic() + 5
    result = run_hyco("http", "GET", "/", env=missing, cwd=tmp_path)
    assert result.returncode == 1 or time.monotonic() > deadline
    bad = run_hyco("http", "GET", "/", "--header", "nocolon", env=env, cwd=tmp_path)
    assert bad.returncode == 2
    assert "NAME:VALUE" in bad.stderr


TWO_ENTITIES = """
[relay]
port = 0

[[namespace]]
name = "localhost"

  [[namespace.rule]]
  name = "root"
  primary_key = "cm9vdC1rZXktZm9yLXRlc3Rz"
  rights = ["Manage"]
{entities}"""


def entities(*names: str) -> str:
    return TWO_ENTITIES.format(
        entities="".join(f'\n  [[namespace.entity]]\n  name = "{name}"\n' for name in names)
    )


@pytest.mark.parametrize(
    ("command", "online"),
    [
        (("listen",), "listener online"),
        (("expose", "--target", "ssh=127.0.0.1:22"), "online, exposing ssh; Ctrl-C to stop"),
    ],
    ids=["listen", "expose"],
)
def test_a_listener_whose_hybrid_connection_is_deleted_exits_with_the_reason(
    tmp_path: Path, command: tuple[str, ...], online: str
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(entities("hc1", "other"), "utf-8")
    with hyco_relay("--config", str(config), cwd=tmp_path) as relay:
        listening = start_hyco(*command, "-c", relay.listener, cwd=tmp_path)
        try:
            assert listening.stdout is not None
            for line in listening.stdout:
                if line.strip() == online:
                    break
            config.write_text(entities("other"), "utf-8")
            out, err = listening.communicate(timeout=30)
        finally:
            stop(listening)
    assert listening.returncode == 1, (out, err)
    assert err.splitlines()[-1].startswith(f"hyco {command[0]}: the relay answered 404"), err
    assert "Traceback" not in err


def test_ctrl_c_stops_an_interactive_connect_at_once(
    relay_and_listener: dict[str, str], tmp_path: Path
) -> None:
    terminal, typing_end = pty.openpty()  # a terminal's stdin, where nobody presses Enter
    try:
        connecting = start_hyco("connect", cwd=tmp_path, env=relay_and_listener, stdin=typing_end)
        assert connecting.stderr is not None
        assert connecting.stderr.readline().startswith("connected")
        connecting.send_signal(2)
        connecting.wait(timeout=5)
        _out, err = connecting.communicate()
    finally:
        os.close(terminal)
        os.close(typing_end)
    assert connecting.returncode == 130
    assert "Traceback" not in err

"""The ``hyco`` command, run as a user runs it: as a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyco_core import parse_connection_string, parse_sas_token, verify_sas_token

HYCO = [sys.executable, "-m", "hyco_adapters.cli"]


def run(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command
        [*HYCO, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_help_lists_the_subcommands() -> None:
    result = run()
    assert result.returncode == 0
    commands = ("demo", "relay", "token", "listen", "connect", "http", "serve", "expose", "forward")
    for command in commands:
        assert command in result.stdout
        help_text = run(command, "--help")
        assert help_text.returncode == 0, command
        assert help_text.stdout.startswith(f"usage: hyco {command}")


def test_demo_relays_websocket_and_http_and_reports_figures() -> None:
    result = run("demo", "--messages", "50", "--megabytes", "8")
    assert result.returncode == 0, result.stderr
    report = result.stdout
    assert re.search(r"50 round trips, latency p50 [\d.]+ ms, p99 [\d.]+ ms", report)
    assert re.search(r"echoed 8 x 1 MiB in [\d.]+ s \(\d+ MiB/s", report)
    assert "GET 200" in report
    assert "inline, control channel" in report
    assert "POST 4 MiB echoed 200" in report
    assert "over a rendezvous" in report


CS = (
    "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;"
    "SharedAccessKey=a2V5LWZvci10ZXN0cw==;EntityPath=hc1"
)


def test_token_from_flag_or_environment_verifies() -> None:
    result = run("token", "--connection-string", CS, "--ttl", "600")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    verdict = verify_sas_token(
        token,
        keys={"send": ["a2V5LWZvci10ZXN0cw=="]},
        target="sb://contoso.servicebus.windows.net/hc1",
        now=time.time(),
    )
    assert verdict.valid, verdict.detail
    assert 590 <= parse_sas_token(token).expiry - time.time() <= 610
    from_env = run("token", env={**os.environ, "HYCO_CONNECTION_STRING": CS})
    assert from_env.returncode == 0
    assert from_env.stdout.startswith("SharedAccessSignature sr=")


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (("token",), 2, "pass --connection-string"),
        (("token", "-c", "Endpoint=sb://ns/;EntityPath=x"), 2, "needs SharedAccessKeyName"),
        (("token", "-c", "Endpoint=sb://ns/;SharedAccessKey=abc"), 1, "SharedAccessKeyName"),
        (("nonsense",), 2, "invalid choice"),
    ],
)
def test_bad_input_exits_with_a_meaningful_code(
    arguments: tuple[str, ...], code: int, message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYCO_CONNECTION_STRING"}
    result = run(*arguments, env=env)
    assert result.returncode == code
    assert message in result.stderr
    assert "abc" not in result.stderr


def test_relay_starts_fast_and_prints_working_connection_strings() -> None:
    process = subprocess.Popen(  # noqa: S603 - our own command
        [*HYCO, "relay", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("hyco relay listening on 127.0.0.1:")
        listener = lines[3].split("listener: ", 1)[1].strip()
        parsed = parse_connection_string(listener)
        assert parsed.use_development_emulator
        assert parsed.entity_path == "hyco"
        assert parsed.namespace == lines[0].split()[4]
    finally:
        process.send_signal(2)
        out, _ = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "close 1001" in out


RELOADABLE = """
[relay]
port = 0

[[namespace]]
name = "localhost"

  [[namespace.rule]]
  name = "root"
  primary_key = "{key}"
  rights = ["Manage"]

  [[namespace.entity]]
  name = "hc1"
"""


def test_relay_reloads_its_configuration_without_a_restart(tmp_path: Path) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect as ws_connect

    from hyco_core import create_relay_listen_uri, create_relay_token

    config = tmp_path / "relay.toml"
    config.write_text(RELOADABLE.format(key="b2xkLWtleQ=="))
    process = subprocess.Popen(  # noqa: S603 - our own command
        [*HYCO, "relay", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        address = process.stdout.readline().split()[4]

        def listen(key: str) -> str:
            token = create_relay_token(f"sb://{address}/hc1", "root", key, now=time.time())
            return create_relay_listen_uri(address, "hc1", token, secure=False)

        with ws_connect(listen("b2xkLWtleQ==")) as existing:
            config.write_text(RELOADABLE.format(key="bmV3LWtleQ=="))
            deadline = time.monotonic() + 15
            while True:
                try:
                    with ws_connect(listen("bmV3LWtleQ==")):
                        break
                except InvalidStatus:
                    assert time.monotonic() < deadline, "the new key was never picked up"
                    time.sleep(0.2)
            with pytest.raises(InvalidStatus) as refused, ws_connect(listen("b2xkLWtleQ==")):
                pass
            assert refused.value.response.status_code == 401
            existing.ping().wait(5)  # the connection opened with the old key is untouched
    finally:
        process.send_signal(2)
        process.communicate(timeout=20)
    assert process.returncode == 0


def test_serve_runs_an_asgi_app_behind_the_relay() -> None:
    import httpx

    from hyco_transports.httpx import RelayAuth

    relay = subprocess.Popen(  # noqa: S603 - our own command
        [*HYCO, "relay", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    serving = None
    try:
        assert relay.stdout is not None
        lines = [relay.stdout.readline() for _ in range(4)]
        cs = lines[3].split("listener: ", 1)[1].strip()
        serving = subprocess.Popen(  # noqa: S603 - our own command
            [*HYCO, "serve", "tests.adapters.apps.fastapi_app:app", "--connection-string", cs],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        auth = RelayAuth.from_connection_string(cs)
        deadline = time.monotonic() + 30
        while True:
            response = httpx.get(auth.url("/items/7", "q=x"), auth=auth, timeout=10)
            if response.status_code != 502 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the app's listener is still coming online
        assert response.status_code == 200, response.text
        assert response.json()["item_id"] == 7
    finally:
        if serving is not None:
            serving.send_signal(2)
            serving.communicate(timeout=30)
        relay.send_signal(2)
        relay.communicate(timeout=20)
    assert serving.returncode == 0

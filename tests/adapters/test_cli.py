"""The ``hyco`` command, run as a user runs it: as a subprocess."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from hyco_core import parse_connection_string, parse_sas_token
from hyco_core.service import verify_sas_token
from hyco_transports.httpx import RelayAuth
from tests.cli import hyco_relay, run_hyco, start_hyco, stop


def test_help_lists_the_subcommands(tmp_path: Path) -> None:
    result = run_hyco(cwd=tmp_path)
    assert result.returncode == 0
    commands = ("demo", "relay", "token", "listen", "connect", "http", "serve", "expose", "forward")
    for command in commands:
        assert command in result.stdout
        help_text = run_hyco(command, "--help", cwd=tmp_path)
        assert help_text.returncode == 0, command
        assert help_text.stdout.startswith(f"usage: hyco {command}")


def test_demo_relays_websocket_and_http_and_reports_figures(tmp_path: Path) -> None:
    result = run_hyco("demo", "--messages", "50", "--megabytes", "8", cwd=tmp_path, timeout=120)
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


def test_token_from_flag_or_environment_verifies(tmp_path: Path) -> None:
    result = run_hyco("token", "--connection-string", CS, "--ttl", "600", cwd=tmp_path)
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
    from_env = run_hyco("token", cwd=tmp_path, env={"HYCO_CONNECTION_STRING": CS})
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
    arguments: tuple[str, ...], code: int, message: str, tmp_path: Path
) -> None:
    result = run_hyco(*arguments, cwd=tmp_path)
    assert result.returncode == code
    assert message in result.stderr
    assert "abc" not in result.stderr


def test_relay_starts_fast_and_prints_working_connection_strings(tmp_path: Path) -> None:
    with hyco_relay(cwd=tmp_path) as relay:
        parsed = parse_connection_string(relay.listener)
        assert parsed.use_development_emulator
        assert parsed.entity_path == "hyco"
        assert parsed.namespace == relay.address
    out, _ = stop(relay.process)
    assert relay.process.returncode == 130  # Ctrl-C
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
    process = start_hyco("relay", "--config", str(config), cwd=tmp_path)
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
        stop(process)
    assert process.returncode == 130  # Ctrl-C


ASGI_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})
"""


def get_when_online(cs: str, path: str) -> httpx.Response:
    auth = RelayAuth.from_connection_string(cs)
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(auth.url(path), auth=auth, timeout=10)
        if response.status_code != 502 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)  # the app's listener is still coming online


@pytest.mark.parametrize("from_elsewhere", [False, True], ids=["next-to-main", "app-dir"])
def test_serve_runs_the_asgi_app_of_the_current_directory_or_app_dir(
    tmp_path: Path, from_elsewhere: bool
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.py").write_text(ASGI_APP, "utf-8")
    where, extra = (tmp_path, ["--app-dir", "project"]) if from_elsewhere else (project, [])
    with hyco_relay(cwd=tmp_path) as relay:
        serving = start_hyco("serve", "main:app", *extra, "-c", relay.listener, cwd=where)
        try:
            response = get_when_online(relay.listener, "/items/7")
        finally:
            out, err = stop(serving, timeout=30)
    assert response.status_code == 200, err
    assert response.text == "/hyco/items/7"
    assert out == f"online: main:app serves http://{relay.address}/hyco; Ctrl-C to stop\n"
    assert serving.returncode == 130, err  # Ctrl-C


def test_python_m_hyco_and_verbosity_after_the_subcommand(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.cli import user_env

    module = subprocess.run(
        [sys.executable, "-m", "hyco", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=user_env(),
        timeout=60,
        check=False,
    )
    assert module.stdout.strip().startswith("hyco ")
    for arguments in (("token", "-vv"), ("-v", "token"), ("token", "-q")):
        result = run_hyco(*arguments, "-c", CS, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("SharedAccessSignature ")


def test_token_for_the_namespace_root_verifies_for_every_entity(tmp_path: Path) -> None:
    result = run_hyco("token", "-c", CS, "--namespace-root", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert parse_sas_token(token).resource == "http://contoso.servicebus.windows.net/"
    for entity in ("hc1", "another"):
        verdict = verify_sas_token(
            token,
            keys={"send": ["a2V5LWZvci10ZXN0cw=="]},
            target=f"sb://contoso.servicebus.windows.net/{entity}",
            now=time.time(),
        )
        assert verdict.valid, verdict.detail


def test_a_broken_configuration_edit_is_reported_once(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(RELOADABLE.format(key="b2xkLWtleQ=="))
    process = start_hyco("relay", "--config", str(config), cwd=tmp_path)
    try:
        assert process.stdout is not None
        process.stdout.readline()
        config.write_text("[relay\n")
        time.sleep(3.5)  # three polls of the file after the edit
    finally:
        _out, err = stop(process)
    assert err.count("configuration not reloaded") == 1, err


def test_the_development_relay_keeps_its_key_across_restarts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with hyco_relay(cwd=tmp_path, home=home) as first:
        pass
    with hyco_relay(cwd=tmp_path, home=home) as second:
        pass
    key = parse_connection_string(first.listener).shared_access_key
    assert parse_connection_string(second.listener).shared_access_key == key
    kept = home / ".hyco" / "relay-key"
    assert kept.read_text().strip() == key
    assert kept.stat().st_mode & 0o077 == 0  # the key's file is its owner's only
    with hyco_relay("--shared-access-key", "Z2l2ZW4ta2V5", cwd=tmp_path, home=home) as given:
        assert parse_connection_string(given.listener).shared_access_key == "Z2l2ZW4ta2V5"


def test_a_reader_that_leaves_the_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    with start_hyco("relay", "--port", "0", cwd=tmp_path, env={"HOME": str(tmp_path)}) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        assert process.stdout.readline().startswith("hyco relay listening on ")
        process.stdout.close()  # as `hyco relay | head -1` does
        process.send_signal(signal.SIGINT)
        err = process.stderr.read()
        assert process.wait(timeout=30) == 141
    assert "Traceback" not in err, err
    assert "Exception ignored" not in err, err

"""A user's mistake gets one or two lines saying what happened and what to do, never a traceback,
and the documented exit code: 2 for usage, 1 for a failure, 130 for Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import hyco_relay, run_hyco, start_hyco, user_env


@dataclass(frozen=True)
class Mistake:
    arguments: tuple[str, ...]
    code: int
    says: str
    missing_module: str | None = None
    """Run where this module cannot be imported (as if its extra were not installed)."""


CS_DOWN = (
    "Endpoint=sb://127.0.0.1:{down}/;EntityPath=hyco;SharedAccessKeyName=k;"
    "SharedAccessKey=a2V5;UseDevelopmentEmulator=true"
)

MISTAKES = {
    "relay-port-in-use": Mistake(
        ("relay", "--port", "{busy}"), 1, "127.0.0.1:{busy} is already in use"
    ),
    "forward-bind-in-use": Mistake(
        ("forward", "-c", CS_DOWN, "--target", "ssh", "--bind", "127.0.0.1:{busy}"),
        1,
        "127.0.0.1:{busy} is already in use",
    ),
    "forward-bind-out-of-range": Mistake(
        ("forward", "-c", CS_DOWN, "--target", "ssh", "--bind", "70000"), 2, "0 to 65535"
    ),
    "http-relay-down": Mistake(
        ("http", "-c", CS_DOWN, "GET", "/"), 1, "could not connect to 127.0.0.1:{down}"
    ),
    "http-data-file-missing": Mistake(
        ("http", "-c", CS_DOWN, "POST", "/", "--data", "@missing.bin"),
        2,
        "cannot read 'missing.bin'",
    ),
    "serve-no-such-module": Mistake(
        ("serve", "nosuchmod:app", "-c", CS_DOWN), 2, "no module named 'nosuchmod'"
    ),
    "serve-no-such-attribute": Mistake(
        ("serve", "main:nope", "-c", CS_DOWN), 2, "module 'main' has no attribute 'nope'"
    ),
    "serve-no-attribute-given": Mistake(
        ("serve", "main", "-c", CS_DOWN), 2, "not of the form 'module:attribute'"
    ),
    "token-negative-ttl": Mistake(
        ("token", "-c", CS_DOWN, "--ttl", "-5"), 2, "--ttl is a number of seconds above 0"
    ),
    "gevent-not-installed": Mistake(
        ("serve", "--wsgi", "--transport", "gevent", "main:wsgi", "-c", CS_DOWN),
        1,
        "pip install 'hyco[gevent]'",
        missing_module="gevent",
    ),
    "cli-extra-not-installed": Mistake(
        ("relay", "--port", "0"), 1, "pip install 'hyco[cli]'", missing_module="anyio"
    ),
}

APP = """
async def app(scope, receive, send):
    pass


def wsgi(environ, start_response):
    return []
"""


def port_nobody_listens_on() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def without_module(tmp_path: Path, name: str) -> dict[str, str]:
    """An environment where importing ``name`` fails as it does when it is not installed."""
    shadow = tmp_path / "not-installed" / name
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        f"raise ModuleNotFoundError({f'No module named {name!r}'!r}, name={name!r})\n", "utf-8"
    )
    return {"PYTHONPATH": str(shadow.parent)}


@pytest.mark.parametrize("mistake", MISTAKES.values(), ids=MISTAKES.keys())
def test_a_mistake_is_told_in_a_line_with_its_exit_code(
    mistake: Mistake, tmp_path: Path, busy_port: int
) -> None:
    (tmp_path / "main.py").write_text(APP, "utf-8")
    values = {"busy": busy_port, "down": port_nobody_listens_on()}
    arguments = [argument.format(**values) for argument in mistake.arguments]
    env = without_module(tmp_path, mistake.missing_module) if mistake.missing_module else None
    result = run_hyco(*arguments, cwd=tmp_path, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == mistake.code, result.stderr
    assert mistake.says.format(**values) in result.stderr
    assert 1 <= len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert result.stderr.startswith(f"hyco {arguments[0]}: ")


def test_an_untrusted_relay_certificate_says_how_to_trust_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with hyco_relay("--tls", cwd=tmp_path, home=home) as relay:
        result = run_hyco("http", "-c", relay.listener, "GET", "/", cwd=tmp_path)
        trusting = {"SSL_CERT_FILE": str(home / ".hyco" / "tls" / "ca.pem")}
        trusted = run_hyco("http", "-c", relay.listener, "GET", "/", cwd=tmp_path, env=trusting)
    # Through TLS to the relay, which answers with its JSON error: it has no listener to ask.
    assert trusted.stderr == ""
    assert '"error"' in trusted.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("hyco http: the relay's TLS certificate was refused")
    assert "SSL_CERT_FILE=" in line
    assert "ssl_context" not in line  # a library user's remedy, not a command-line user's


def test_conformance_without_its_reference_clients_names_the_extra(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hyco_conformance", "--list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=user_env(without_module(tmp_path, "websockets")),
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert "pip install 'hyco[cli]'" in result.stderr  # websockets comes with the command


@pytest.mark.parametrize(
    "arguments",
    [
        ("relay", "--port", "0"),
        ("listen",),
        ("expose", "--target", "ssh=127.0.0.1:22"),
        ("forward", "--target", "ssh", "--bind", "127.0.0.1:0"),
        ("serve", "main:app"),
        ("serve", "--wsgi", "main:wsgi"),
        ("serve", "--wsgi", "--transport", "gevent", "main:wsgi"),
    ],
    ids=["relay", "listen", "expose", "forward", "serve", "serve-wsgi", "serve-gevent"],
)
def test_ctrl_c_exits_130_quietly(tmp_path: Path, arguments: tuple[str, ...]) -> None:
    (tmp_path / "main.py").write_text(APP, "utf-8")
    with hyco_relay(cwd=tmp_path) as relay:
        running = start_hyco(
            *arguments, cwd=tmp_path, env={"HYCO_CONNECTION_STRING": relay.listener}
        )
        assert running.stdout is not None
        running.stdout.readline()  # it started
        time.sleep(1.5)  # and is serving: the interrupt must find it in its steady state
        running.send_signal(signal.SIGINT)
        _out, err = running.communicate(timeout=20)
    assert running.returncode == 130, err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err


@pytest.mark.parametrize(
    "arguments",
    [
        ("relay", "--port", "0"),
        ("listen",),
        ("expose", "--target", "ssh=127.0.0.1:22"),
        ("forward", "--target", "ssh", "--bind", "127.0.0.1:0"),
        ("serve", "main:app"),
        ("serve", "--wsgi", "main:wsgi"),
        ("serve", "--wsgi", "--transport", "gevent", "main:wsgi"),
    ],
    ids=["relay", "listen", "expose", "forward", "serve", "serve-wsgi", "serve-gevent"],
)
def test_sigterm_is_an_orderly_stop_that_exits_0(
    tmp_path: Path, arguments: tuple[str, ...]
) -> None:
    """What a service manager sends: a clean exit, not an interruption."""
    (tmp_path / "main.py").write_text(APP, "utf-8")
    with hyco_relay(cwd=tmp_path) as relay:
        running = start_hyco(
            *arguments, cwd=tmp_path, env={"HYCO_CONNECTION_STRING": relay.listener}
        )
        assert running.stdout is not None
        running.stdout.readline()
        running.send_signal(signal.SIGTERM)
        _out, err = running.communicate(timeout=20)
    assert running.returncode == 0, err
    assert "Traceback" not in err


REFUSING_APP = """
async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.close", "code": 1000})
"""


def test_an_apps_own_refusal_is_not_blamed_on_the_key(tmp_path: Path) -> None:
    """A WebSocket route that closes before accepting is the app's verdict, not the relay's."""
    (tmp_path / "main.py").write_text(REFUSING_APP, "utf-8")
    with hyco_relay(cwd=tmp_path) as relay:
        env = {"HYCO_CONNECTION_STRING": relay.listener}
        serving = start_hyco("serve", "main:app", cwd=tmp_path, env=env)
        try:
            assert serving.stdout is not None
            assert serving.stdout.readline().startswith("online: main:app serves ")
            result = run_hyco("connect", cwd=tmp_path, env=env, data="hello\n")
        finally:
            serving.send_signal(signal.SIGINT)
            serving.communicate(timeout=20)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "hyco connect: the listener answered 403: "
        "The application closed the WebSocket before accepting it."
    ), line
    assert "The listening application refused this connection" in line
    assert "TrackingId:" in line
    assert "key" not in line.lower()

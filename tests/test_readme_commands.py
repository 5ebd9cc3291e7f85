"""Every shell command the READMEs show runs as written, in a user's shell (``bash``, with no more
environment than a login shell has), or names the test that runs it at length.

Commands that serve (a relay, an app, a tunnel) are started, must say they are ready, and must
exit 130 on Ctrl-C. Commands that run for minutes (a conformance run, the soak, the fuzzers)
are covered by the named tests, which run them with shorter limits; the set-up commands are
what ``.ci/run`` and the demo test run. A command added to a README without a way to check it
fails here.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import hyco_relay, user_env

ROOT = Path(__file__).parents[1]
BASH = shutil.which("bash") or "/bin/bash"
READMES = [
    ROOT / "README.md",
    ROOT / "conformance" / "README.md",
    ROOT / "bench" / "README.md",
    ROOT / "fuzz" / "README.md",
]


def documented_commands() -> Iterator[tuple[str, str]]:
    """(README, command) for each line of each ``sh`` block, comments taken off."""
    for readme in READMES:
        text = readme.read_text("utf-8")
        for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
            for line in block.splitlines():
                command = line.split("  #", 1)[0].strip()
                if command and not command.startswith("#"):
                    yield readme.relative_to(ROOT).as_posix(), command


@dataclass(frozen=True)
class Serves:
    """Started in ``bash``; ready once it prints a line starting with ``ready``."""

    ready: str
    needs_relay: bool = False


@dataclass(frozen=True)
class Finishes:
    """Run in ``bash`` from the clone's root, as the READMEs run them, to the end; exits 0 and
    prints ``says``."""

    says: str


@dataclass(frozen=True)
class CoveredBy:
    """Runs for minutes, or sets up a machine: the file ``test`` names (``path::text``) runs
    it, and holds ``text`` (the test function's name, or the command)."""

    test: str


APP = """
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
"""

DEMO = "tests/adapters/test_cli.py::test_demo_relays_websocket_and_http_and_reports_figures"
BENCH = "tests/bench/test_bench_smoke.py::test_a_tiny_run_writes_every_figure_and_verdict"
SOAK = (
    "tests/bench/test_bench_smoke.py::test_a_short_soak_echoes_everything_and_leaves_no_file_open"
)
FUZZ = "tests/fuzz/test_fuzz_targets.py::test_python_m_fuzz_prints_inputs_and_failures_per_target"
CONFORMANCE_DRIVER = (
    "tests/conformance/test_readme_example.py::"
    "test_the_readme_driver_fails_exactly_the_scenario_the_readme_says"
)

CHECKS: dict[str, Serves | Finishes | CoveredBy] = {
    # README.md: the two set-up commands (.ci/run runs the second on every change)
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[cli]" && hyco demo': (
        CoveredBy(DEMO)
    ),
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && python '
    "tools/check.py": CoveredBy(".ci/run::python tools/check.py"),
    'pip install -e ".[dev]"': CoveredBy('.ci/run::pip install --quiet -e ".[dev]"'),
    # README.md: the relay
    "hyco relay": Serves("hyco relay listening on 127.0.0.1:9090"),
    "hyco relay --port 0": Serves("hyco relay listening on 127.0.0.1:"),
    "hyco relay --config relay.toml": Serves("clients reach it at wss://relay.example.com"),
    "hyco relay --host 0.0.0.0 --public-url wss://relay.example.com": Serves(
        "clients reach it at wss://relay.example.com"
    ),
    # README.md: hosting and forwarding
    'hyco serve main:app --connection-string "$CS"': Serves("online: main:app serves ", True),
    "hyco serve main:app --workers 4": Serves("a worker is online: main:app serves ", True),
    "hyco serve main:app --app-dir src": Serves("online: main:app serves ", True),
    'hyco expose --connection-string "$CS" --target ssh=127.0.0.1:22 --target db=127.0.0.1:5432': (
        Serves("online, exposing ssh, db", True)
    ),
    'hyco expose --connection-string "$CS" --http http://127.0.0.1:8080': Serves(
        "online: http://127.0.0.1:", True
    ),
    "hyco expose --http http://127.0.0.1:8080/app --no-strip-prefix --preserve-host": Serves(
        "online: http://127.0.0.1:", True
    ),
    'hyco forward --connection-string "$CS" --target db --bind 127.0.0.1:15432': Serves(
        "forwarding 127.0.0.1:15432 to 'db'", True
    ),
    "hyco agent --config hyco.toml": Serves("online: ", True),
    "hyco agent --config hyco.toml --check": CoveredBy(
        "tests/adapters/test_agent.py::test_every_kind_of_entry_runs_and_a_reload_restarts_only_what_changed"
    ),
    # README.md: metrics and health
    "hyco listen --metrics-addr 127.0.0.1:9464 --log-format json": Serves("listener online", True),
    'ssh -o ProxyCommand="hyco forward --target ssh --stdio" user@anything': CoveredBy(
        "tests/adapters/test_forward.py::test_an_ssh_style_session_through_the_command_line"
    ),
    # conformance (README.md and conformance/README.md)
    "python -m hyco_conformance --list": Finishes("close_codes"),
    "python -m hyco_conformance --transport anyio --transport anyio-trio --transport sync "
    "--transport gevent": CoveredBy("tests/conformance/test_suite_gevent.py::conformance_suite"),
    "python -m hyco_conformance --transport mypackage:MyDriver": CoveredBy(CONFORMANCE_DRIVER),
    "python -m hyco_conformance --transport mypackage.testing:MyDriver --scenario http_sizes": (
        CoveredBy(CONFORMANCE_DRIVER)
    ),
    # bench/README.md
    "(cd tests/interop/node && npm ci)": CoveredBy('tests/interop/conftest.py::"ci"'),
    "python -m bench": CoveredBy(BENCH),
    "python -m bench --quick": CoveredBy(BENCH),
    "python -m bench --full": CoveredBy(BENCH),
    "python -m bench --only kernel throughput": CoveredBy(BENCH),
    "python -m bench.soak --minutes 10": CoveredBy(SOAK),
    "python -m bench.soak --minutes 10 --workers 16": CoveredBy(SOAK),
    # fuzz/README.md
    "python -m fuzz": CoveredBy(FUZZ),
    "python -m fuzz --list": Finishes("http_server"),
    "python -m fuzz sas uris --examples 50000": CoveredBy(FUZZ),
    "python -m fuzz --minutes 3": CoveredBy(FUZZ),
    "python -m fuzz --minutes 2 --crashes crashes/": CoveredBy(FUZZ),
    "python -m fuzz --atheris --minutes 5": CoveredBy(FUZZ),
    "python -m fuzz http_server --atheris --minutes 30 --crashes crashes/": CoveredBy(FUZZ),
}


def test_every_documented_command_has_a_check() -> None:
    documented = {command for _readme, command in documented_commands()}
    unchecked = sorted(documented - CHECKS.keys())
    assert not unchecked, f"commands in a README that nothing checks: {unchecked}"
    stale = sorted(CHECKS.keys() - documented)
    assert not stale, f"checks for commands no README shows any more: {stale}"


@pytest.mark.parametrize(
    "test",
    sorted({check.test for check in CHECKS.values() if isinstance(check, CoveredBy)}),
)
def test_the_covering_tests_exist(test: str) -> None:
    path, _, text = test.partition("::")
    assert text in (ROOT / path).read_text("utf-8"), test


def _bash(command: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    # ``exec``: the signal reaches the command, not a shell waiting for it.
    return subprocess.Popen(  # noqa: S603 - the README's own command
        [BASH, "-c", f"exec {command}"],
        cwd=cwd,
        env=user_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _prepare(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(APP, "utf-8")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text(APP, "utf-8")
    readme = (ROOT / "README.md").read_text("utf-8")
    files = re.findall(r"```toml\n(.*?)```", readme, re.S)
    (tmp_path / "relay.toml").write_text(files[0])
    (agent_file,) = [text for text in files if text.startswith("# hyco.toml")]
    (tmp_path / "hyco.toml").write_text(agent_file)


SERVING = [command for command, check in CHECKS.items() if isinstance(check, Serves)]


@pytest.mark.parametrize("command", SERVING)
def test_a_serving_command_starts_and_stops_on_ctrl_c(command: str, tmp_path: Path) -> None:
    check = CHECKS[command]
    assert isinstance(check, Serves)
    _prepare(tmp_path)
    env = {"HOME": str(tmp_path / "home")}
    if check.needs_relay:
        with hyco_relay(cwd=tmp_path) as relay:
            env |= {"CS": relay.listener, "HYCO_CONNECTION_STRING": relay.listener}
            # The agent file's entries, all on the one hybrid connection of the relay.
            env |= dict.fromkeys(("SSH_CS", "WEB_CS", "DB_CS", "API_CS"), relay.listener)
            out, err, code = _until_ready(command, check, tmp_path, env)
    else:
        out, err, code = _until_ready(command, check, tmp_path, env)
    assert "Traceback" not in err, err
    assert code == 130, (out, err)


@contextmanager
def _fixed_ports() -> Iterator[None]:
    """The commands bind the ports the README names (9090, 15432): one at a time across the
    test runs of every Python version, which run side by side."""
    with (Path(tempfile.gettempdir()) / "hyco-readme-ports.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _until_ready(
    command: str, check: Serves, cwd: Path, env: dict[str, str]
) -> tuple[str, str, int]:
    with _fixed_ports():
        return _run_until_ready(command, check, cwd, env)


def _run_until_ready(
    command: str, check: Serves, cwd: Path, env: dict[str, str]
) -> tuple[str, str, int]:
    process = _bash(command, cwd, env)
    assert process.stdout is not None
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if line.startswith(check.ready):
                break
        else:
            raise AssertionError(f"{command!r} ended before it was ready: {seen}")
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    return "".join(seen) + out, err, process.returncode


FINISHING = [command for command, check in CHECKS.items() if isinstance(check, Finishes)]


@pytest.mark.parametrize("command", FINISHING)
def test_a_finite_command_runs_to_the_end(command: str, tmp_path: Path) -> None:
    check = CHECKS[command]
    assert isinstance(check, Finishes)
    process = _bash(command, ROOT, {"HOME": str(tmp_path)})
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert check.says in out

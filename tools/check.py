"""Run every check CI runs: lint, format, strict typing, the test suite with coverage, and the
suite again on every other supported Python found.

Usage: ``python tools/check.py [--prepare] [extra pytest arguments]``. The other interpreters are
found on ``PATH`` (``python3.12``) or through ``pyenv``; each gets a virtual environment of its
own under ``.venvs/`` with ``.[dev]`` installed, and the runs on them go in parallel. A version
that is not installed is skipped with a line saying so. ``--prepare`` only makes those
environments (CI does that before it drops its environment). Exits non-zero when a check fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Keep in step with requires-python and the classifiers in pyproject.toml.
SUPPORTED_VERSIONS = ("3.10", "3.11", "3.12", "3.13")

# On the other interpreters: not what drives Node and Chromium, nor the soak, which exercise
# other programs and the machine more than this interpreter, and would double CI's time.
NOT_REPEATED = (
    "--ignore=tests/interop",
    "--deselect=tests/bench/test_bench_smoke.py::"
    "test_a_short_soak_echoes_everything_and_leaves_no_file_open",
)

# The distribution maps source folders to import names (transports/ -> hyco_transports, ...).
# mypy resolves imports from folder names, so it reads the packages through a folder of
# symlinks that carry the import names.
PACKAGE_DIRS = {
    "hyco": "hyco",
    "hyco_core": "hyco_core",
    "hyco_transports": "transports",
    "hyco_adapters": "adapters",
    "hyco_relay": "relay",
    "hyco_conformance": "conformance",
}


def typecheck_root() -> Path:
    root = ROOT / ".typecheck"
    root.mkdir(exist_ok=True)
    for name, folder in PACKAGE_DIRS.items():
        link = root / name
        if not link.is_symlink():
            link.symlink_to(Path("..") / folder)
    return root


def run(*command: str, env: dict[str, str] | None = None) -> None:
    print("$", " ".join(command), flush=True)
    completed = subprocess.run(command, cwd=ROOT, env=env, check=False)  # noqa: S603
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def version_of(python: str) -> str | None:
    """``"3.12"`` for a working interpreter; ``None`` for a pyenv shim of one not selected."""
    probe = subprocess.run(  # noqa: S603 - an interpreter we were asked to look for
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def find_interpreter(version: str) -> str | None:
    on_path = shutil.which(f"python{version}")
    if on_path is not None and version_of(on_path) == version:
        return on_path
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    prefix = subprocess.run(  # noqa: S603 - pyenv, found on PATH
        [pyenv, "prefix", version], capture_output=True, text=True, check=False
    )
    candidate = Path(prefix.stdout.strip()) / "bin" / "python"
    if prefix.returncode != 0 or version_of(str(candidate)) != version:
        return None
    return str(candidate)


@dataclass(frozen=True)
class Environment:
    version: str
    python: Path


def prepare(version: str, interpreter: str) -> Environment:
    """A virtual environment for ``version`` with ``.[dev]``, reinstalled when pyproject changes."""
    home = ROOT / ".venvs" / version
    python = home / "bin" / "python"
    stamp = home / "installed-from-pyproject"
    wanted = (ROOT / "pyproject.toml").read_text("utf-8")
    if python.exists() and stamp.exists() and stamp.read_text("utf-8") == wanted:
        return Environment(version, python)
    print(f"preparing Python {version} in {home.relative_to(ROOT)}", flush=True)
    run(interpreter, "-m", "venv", "--clear", str(home))
    run(str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(str(python), "-m", "pip", "install", "--quiet", "-e", ".[dev]")
    stamp.write_text(wanted, "utf-8")
    return Environment(version, python)


def other_environments() -> list[Environment]:
    current = f"{sys.version_info.major}.{sys.version_info.minor}"
    environments = []
    for version in SUPPORTED_VERSIONS:
        if version == current:
            continue
        interpreter = find_interpreter(version)
        if interpreter is None:
            print(f"Python {version} not found (on PATH or through pyenv): skipped", flush=True)
            continue
        environments.append(prepare(version, interpreter))
    return environments


def run_suite_on(environment: Environment, pytest_arguments: Sequence[str]) -> tuple[int, str]:
    """The suite on another interpreter; its output is kept and shown only when it fails."""
    began = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        completed = subprocess.run(  # noqa: S603 - the interpreter of our own environment
            [
                str(environment.python),
                *("-m", "pytest", "-q", "-p", "no:cacheprovider"),
                *NOT_REPEATED,
                *pytest_arguments,
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
        log.seek(0)
        output = log.read()
    took = time.monotonic() - began
    verdict = "passed" if completed.returncode == 0 else "FAILED"
    summary = f"Python {environment.version}: the suite {verdict} in {took:.0f} s"
    return completed.returncode, output if completed.returncode else summary


def main() -> None:
    arguments = sys.argv[1:]
    if arguments[:1] == ["--prepare"]:
        other_environments()
        return
    others = other_environments()
    python = sys.executable
    run(python, "-m", "ruff", "check", ".")
    run(python, "-m", "ruff", "format", "--check", ".")
    env = dict(os.environ, MYPYPATH=str(typecheck_root()))
    packages = [arg for name in PACKAGE_DIRS for arg in ("-p", name)]
    run(python, "-m", "mypy", "--strict", *packages, env=env)
    run(python, "-m", "mypy", "--strict", "tests", "tools", "bench", "fuzz", env=env)
    run(
        python,
        "-m",
        "pytest",
        "--cov=hyco_core",
        "--cov-branch",
        "--cov-report=term-missing:skip-covered",
        "--cov-fail-under=100",
        *arguments,
    )
    with ThreadPoolExecutor(max_workers=max(1, len(others))) as pool:
        outcomes = list(pool.map(lambda env: run_suite_on(env, arguments), others))
    for _code, report in outcomes:
        print(report, flush=True)
    failed = [code for code, _report in outcomes if code != 0]
    if failed:
        sys.exit(failed[0])


if __name__ == "__main__":
    main()

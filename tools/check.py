"""Run every check CI runs: lint, format, strict typing, and the test suite with coverage.

Usage: ``python tools/check.py [extra pytest arguments]``. Exits non-zero on the first failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The distribution maps source folders to import names (transports/ -> hyco_transports, ...).
# mypy resolves imports from folder names, so it reads the packages through a folder of
# symlinks that carry the import names.
PACKAGE_DIRS = {
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


def main() -> None:
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
        *sys.argv[1:],
    )


if __name__ == "__main__":
    main()

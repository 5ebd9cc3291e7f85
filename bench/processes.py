"""Child processes of a benchmark, and what the kernel says about them (CPU time, RSS).

Each helper runs in its own process so that its CPU time and memory are its own; closing its
standard input stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["NODE_MODULES", "Child", "node_available", "start_helper", "start_node"]

REPO = Path(__file__).resolve().parent.parent
NODE_MODULES = REPO / "tests" / "interop" / "node" / "node_modules"
NODE_SCRIPT = Path(__file__).resolve().parent / "node" / "bench.js"
_TICKS = os.sysconf("SC_CLK_TCK")


class Child:
    """A running helper: its ready line (``info``), CPU seconds and RSS, and a clean stop."""

    def __init__(self, role: str, command: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            # The command line may hold a connection string: only the role is named.
            raise RuntimeError(f"the {role!r} helper exited before it was ready")
        self.info: dict[str, Any] = json.loads(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far (``/proc/<pid>/stat`` fields 14 and 15)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc status")

    def lines(self) -> list[dict[str, Any]]:
        """Read JSON lines until the helper reports a result (node scripts report once)."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        return [json.loads(line)] if line else []

    def stop(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_helper(role: str, *args: str) -> Child:
    return Child(role, [sys.executable, "-m", "bench.helpers", role, *args])


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_MODULES / "hyco-ws").is_dir()


def start_node(mode: str, *args: str, env: dict[str, str]) -> Child:
    node = shutil.which("node")
    assert node is not None
    full = dict(os.environ, NODE_PATH=str(NODE_MODULES), **env)
    return Child(f"node {mode}", [node, str(NODE_SCRIPT), mode, *args], env=full)

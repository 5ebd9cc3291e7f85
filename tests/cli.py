"""The ``hyco`` command as a user runs it: the installed script, from a directory of the user's,
with no more environment than a fresh login shell has, against a real ``hyco relay``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HYCO = str(Path(sys.executable).with_name("hyco"))


def user_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a plain login shell passes on: no ``PYTHONUNBUFFERED`` or anything else to lean on.

    The interpreter's directory leads ``PATH``, as it does in an activated virtual environment.
    """
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8"}
    env.update(extra or {})
    return env


def run_hyco(
    *arguments: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    data: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command
        [HYCO, *arguments],
        input=data,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=user_env(env),
        timeout=timeout,
        check=False,
    )


def start_hyco(
    *arguments: str, cwd: Path, env: Mapping[str, str] | None = None, stdin: int | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own command
        [HYCO, *arguments],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=user_env(env),
    )


@dataclass(frozen=True)
class RunningRelay:
    process: subprocess.Popen[str]
    address: str
    listener: str
    """The connection string ``hyco relay`` prints for entity ``hyco``'s listeners."""


@contextmanager
def hyco_relay(*arguments: str, cwd: Path, home: Path | None = None) -> Iterator[RunningRelay]:
    """``hyco relay --port 0`` in a process of its own, stopped with Ctrl-C's signal at the end.

    Its home directory (its key, its development CA) is ``home``, by default one in ``cwd``.
    """
    env = {"HOME": str(home if home is not None else cwd / "relay-home")}
    process = start_hyco("relay", "--port", "0", *arguments, cwd=cwd, env=env)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("hyco relay listening on "), lines
        yield RunningRelay(
            process=process,
            address=lines[0].split()[4],
            listener=lines[3].split("listener: ", 1)[1].strip(),
        )
    finally:
        stop(process)


def stop(process: subprocess.Popen[str], timeout: float = 20) -> tuple[str, str]:
    """Interrupt as Ctrl-C does and collect what the process wrote."""
    if process.poll() is None:
        process.send_signal(2)
    out, err = process.communicate(timeout=timeout)
    return out, err


def lines_of(process: subprocess.Popen[str], count: int) -> Sequence[str]:
    assert process.stdout is not None
    return [process.stdout.readline().strip() for _ in range(count)]

"""``python -m bench`` runs end to end on tiny sizes and writes a valid report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_tiny_run_writes_every_figure_and_verdict(tmp_path: Path) -> None:
    tiny = ["--rounds", "1", "--kernel-count", "50", "--volume-mib", "1", "--connects", "3"]
    out = tmp_path / "run.json"  # a file, not a directory named run.json
    tiny += ["--requests", "3", "--idle", "5", "--out", str(out), "--no-chart"]
    completed = subprocess.run(  # noqa: S603 - our own interpreter and package
        [sys.executable, "-m", "bench", *tiny],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(out.read_text())
    names = {figure["name"] for figure in report["figures"]}
    for expected in (
        "kernel: SAS create/s",
        "throughput 1 MiB: relayed (hyco anyio)",
        "relay CPU per GiB relayed",
        "connect p50: relayed (hyco anyio)",
        "HTTP GET small: relayed (hyco ASGI)",
        "proxy GET 1 MiB: through the relay (expose_http)",
        "proxy GET 1 MiB: direct (uvicorn)",
        "idle: relay RSS per connection",
    ):
        assert expected in names
    for figure in report["figures"]:
        assert figure["min"] <= figure["median"] <= figure["max"]
    echoing = next(f for f in report["figures"] if f["name"] == "idle: connections still echoing")
    assert echoing["median"] == 100
    assert all(t["verdict"] in ("met", "missed", "not measured") for t in report["targets"])
    assert "relayed throughput 1 MiB >= 0.5x direct WebSocket" in completed.stdout


def test_a_short_soak_echoes_everything_and_leaves_no_file_open(tmp_path: Path) -> None:
    short = ["--minutes", "0.1", "--workers", "4", "--out", str(tmp_path)]
    completed = subprocess.run(  # noqa: S603 - our own interpreter and package
        [sys.executable, "-m", "bench.soak", *short],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads((tmp_path / "soak.json").read_text())
    assert report["mismatches"] == 0
    assert report["errors"] == {}
    assert set(report["operations"]) == {"websocket", "http", "cut"}
    assert report["checks"]["relay file descriptors flat"]
    assert report["checks"]["listener file descriptors flat"]
    # RSS after six seconds says little; the verdict on it is the long run's.
    assert completed.returncode in (0, 1), completed.stderr

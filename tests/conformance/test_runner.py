"""``python -m hyco_conformance``: listing, selecting, reporting, exit codes, custom drivers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hyco_conformance.drivers import driver_for
from hyco_conformance.runner import select
from hyco_conformance.scenarios import SCENARIOS


def run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "hyco_conformance", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_list_names_every_scenario() -> None:
    result = run("--list")
    assert result.returncode == 0
    for scenario in SCENARIOS:
        assert scenario.name in result.stdout


def test_a_passing_run_reports_and_exits_0() -> None:
    result = run("--transport", "anyio", "--scenario", "echo_sizes", "--scenario", "http_sizes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  anyio-asyncio echo_sizes" in result.stdout
    assert "== 2 passed, 0 failed" in result.stdout


def test_a_broken_driver_fails_with_reasons_and_exit_1() -> None:
    result = run(
        "--transport",
        "tests.conformance.broken_driver:BrokenDriver",
        "--scenario",
        "echo_sizes",
        "--scenario",
        "reject_with_status",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  broken" in result.stdout
    assert "400" in result.stdout  # the reason says what the sender got
    assert "== 0 passed, 2 failed" in result.stdout


@pytest.mark.parametrize(
    "arguments",
    [("--scenario", "nope"), ("--transport", "nope"), ("--transport", "json:loads")],
)
def test_bad_usage_exits_2(arguments: tuple[str, ...]) -> None:
    result = run(*arguments)
    assert result.returncode == 2
    assert result.stderr


def test_selection_and_driver_lookup() -> None:
    assert select([]) == SCENARIOS
    assert [s.name for s in select(["balancing"])] == ["balancing"]
    with pytest.raises(ValueError, match="unknown scenario"):
        select(["missing"])
    with pytest.raises(ValueError, match="unknown transport"):
        driver_for("carrier-pigeon")

"""Run the scenarios against a driver and report each one: passed, or failed and why."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .driver import Driver
from .harness import Harness
from .scenarios import SCENARIOS, Scenario

__all__ = ["Result", "run_suite", "select"]


@dataclass(frozen=True, slots=True)
class Result:
    driver: str
    scenario: str
    passed: bool
    seconds: float
    reason: str = ""


def select(names: Iterable[str] | None) -> list[Scenario]:
    """The scenarios named (all when ``names`` is empty); unknown names are an error."""
    wanted = list(names or [])
    if not wanted:
        return list(SCENARIOS)
    known = {scenario.name: scenario for scenario in SCENARIOS}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)}; see --list")
    return [known[name] for name in wanted]


def run_suite(
    driver: Driver,
    scenarios: Iterable[Scenario] | None = None,
    *,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Start the local relay, run each scenario against ``driver``, stop everything."""
    harness = Harness(driver)
    results = []
    try:
        for scenario in scenarios if scenarios is not None else SCENARIOS:
            began = time.perf_counter()
            try:
                scenario.run(harness)
            except Exception as error:
                reason = str(error) or type(error).__name__
                where = traceback.extract_tb(error.__traceback__)[-1]
                result = Result(
                    driver.name,
                    scenario.name,
                    False,
                    time.perf_counter() - began,
                    f"{type(error).__name__}: {reason} ({where.name}:{where.lineno})",
                )
            else:
                result = Result(driver.name, scenario.name, True, time.perf_counter() - began)
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        harness.close()
    return results

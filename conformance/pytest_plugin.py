"""Run the conformance suite from pytest: one test per scenario, one relay per test module.

In a test module of your own::

    from hyco_conformance.pytest_plugin import conformance_suite
    from mypackage.testing import MyDriver

    conformance_harness, test_conformance = conformance_suite(MyDriver)

pytest then reports ``test_conformance[echo_sizes]``, ``test_conformance[http_sizes]``, ... and a
failure shows the scenario's reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .driver import Driver
from .harness import Harness
from .scenarios import SCENARIOS, Scenario

__all__ = ["conformance_suite"]


def conformance_suite(
    driver_factory: Callable[[], Driver], *, scenarios: list[Scenario] | None = None
) -> tuple[Any, Callable[[Harness, Scenario], None]]:
    """A module-scoped ``conformance_harness`` fixture and the parametrized ``test_conformance``.

    Assign both to module-level names (those exact names) so that pytest collects them.
    """
    chosen = scenarios if scenarios is not None else SCENARIOS

    @pytest.fixture(scope="module")
    def conformance_harness() -> Iterator[Harness]:
        harness = Harness(driver_factory())
        try:
            yield harness
        finally:
            harness.close()

    @pytest.mark.parametrize("scenario", chosen, ids=[scenario.name for scenario in chosen])
    def test_conformance(conformance_harness: Harness, scenario: Scenario) -> None:
        scenario.run(conformance_harness)

    return conformance_harness, test_conformance

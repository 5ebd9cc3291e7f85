"""hyco_transports.sync against the local relay: every shared scenario, on threads."""

from __future__ import annotations

import pytest

from .conftest import SCENARIOS, Flavour, RunningRelay, Scenario, run_scenario


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_scenario(relay: RunningRelay, scenario: Scenario) -> None:
    run_scenario(Flavour(), relay, scenario)

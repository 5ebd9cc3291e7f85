"""hyco_transports.gevent against the local relay: every shared scenario, on greenlets.

Nothing is monkey-patched: the scenarios run on gevent's hub in the test's thread, the relay in
a real thread.
"""

from __future__ import annotations

import socket
import threading

import pytest

from .conftest import SCENARIOS, GeventFlavour, RunningRelay, Scenario, run_scenario


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_scenario(relay: RunningRelay, scenario: Scenario) -> None:
    run_scenario(GeventFlavour(), relay, scenario)


def test_nothing_is_monkey_patched() -> None:
    import gevent.monkey  # type: ignore[import-untyped]

    assert not gevent.monkey.is_anything_patched()
    assert socket.socket.__module__ == "socket"
    assert threading.Lock.__module__ == "_thread"

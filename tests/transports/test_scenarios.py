"""Every shared scenario on every transport: anyio on asyncio and on trio (behind the blocking
interface of ``anyio_flavour``), OS threads, and gevent's greenlets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from anyio.from_thread import start_blocking_portal

from .anyio_flavour import AnyioTransport
from .conftest import SCENARIOS, Flavour, GeventFlavour, RunningRelay, Scenario, run_scenario

TRANSPORTS = ["anyio-asyncio", "anyio-trio", "sync", "gevent"]


class AnyioFlavour(Flavour):
    def __init__(self, transport: AnyioTransport) -> None:
        self.transport = transport


@pytest.fixture(params=TRANSPORTS)
def flavour(request: pytest.FixtureRequest) -> Iterator[Flavour]:
    name: str = request.param
    if name.startswith("anyio"):
        with start_blocking_portal(name.removeprefix("anyio-")) as portal:
            yield AnyioFlavour(AnyioTransport(portal))
    elif name == "gevent":
        yield GeventFlavour()
    else:
        yield Flavour()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_scenario(flavour: Flavour, relay: RunningRelay, scenario: Scenario) -> None:
    run_scenario(flavour, relay, scenario)

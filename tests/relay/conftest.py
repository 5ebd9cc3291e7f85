"""A local relay, really started on 127.0.0.1, with entities and rules for every test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from hyco_conformance.harness import ROOT_KEY, relay_config
from hyco_core import create_relay_token
from hyco_relay.config import parse_config
from hyco_relay.server import Relay, serve_relay

CONFIG = relay_config(request_timeout=2.0, rendezvous_timeout=2.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with serve_relay(parse_config(CONFIG)) as running:
        yield running


def token(relay: Relay, entity: str = "hc1", rule: str = "root", key: str = ROOT_KEY) -> str:
    return create_relay_token(f"sb://{relay.address}/{entity}", rule, key, now=time.time())


def connection_string(relay: Relay, entity: str = "hc1") -> str:
    return relay.connection_string(entity, "root")


async def refused(uri: str, **options: Any) -> tuple[int, str]:
    """The status and reason refusing a ``websockets`` client's handshake to ``uri``."""
    with pytest.raises(InvalidStatus) as caught:
        async with ws_connect(uri, **options):
            pass
    response = caught.value.response
    return response.status_code, response.reason_phrase

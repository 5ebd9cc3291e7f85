"""A local relay, really started on 127.0.0.1, with entities and rules for every test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from hyco_core import create_relay_token
from hyco_relay.config import parse_config
from hyco_relay.server import Relay, serve_relay

ROOT_KEY = "cm9vdC1rZXktZm9yLXRlc3Rz"
SEND_KEY = "c2VuZC1rZXktZm9yLXRlc3Rz"
LISTEN_KEY = "bGlzdGVuLWtleS1mb3ItdGVzdHM="

CONFIG = f"""
[relay]
port = 0
request_timeout = 2.0
rendezvous_timeout = 2.0

[[namespace]]
name = "localhost"
default = true

  [[namespace.rule]]
  name = "root"
  primary_key = "{ROOT_KEY}"
  rights = ["Manage"]

  [[namespace.entity]]
  name = "hc1"

    [[namespace.entity.rule]]
    name = "send-only"
    primary_key = "{SEND_KEY}"
    rights = ["Send"]

    [[namespace.entity.rule]]
    name = "listen-only"
    primary_key = "{LISTEN_KEY}"
    rights = ["Listen"]

  [[namespace.entity]]
  name = "open"
  requires_client_authorization = false

  [[namespace.entity]]
  name = "deep/path"
"""


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

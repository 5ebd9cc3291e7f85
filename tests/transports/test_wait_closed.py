"""``Listener.wait_closed``: a program that only listens learns when its listener is over."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from hyco_core import EndpointNotFoundError
from hyco_relay.config import default_config
from hyco_relay.server import Relay, serve_relay
from hyco_transports import anyio as anyio_transport
from hyco_transports import sync as sync_transport


@pytest.fixture
def relay() -> Iterator[tuple[BlockingPortal, Relay]]:
    with start_blocking_portal() as portal:
        manager = portal.wrap_async_context_manager(serve_relay(default_config(port=0)))
        with manager as running:
            yield portal, running


def delete_the_hybrid_connection(portal: BlockingPortal, relay: Relay) -> None:
    (namespace,) = relay.config.namespaces
    emptied = replace(relay.config, namespaces=(replace(namespace, entities=()),))
    portal.call(relay.reconfigure, emptied)


def test_sync_wait_closed_returns_after_close_and_raises_when_the_entity_is_gone(
    relay: tuple[BlockingPortal, Relay],
) -> None:
    portal, running = relay
    cs = running.connection_string()
    with sync_transport.Listener.from_connection_string(cs) as listener:
        assert listener.wait_closed(timeout=0.1) is False
        threading.Timer(0.1, listener.close).start()
        assert listener.wait_closed(timeout=10) is True
    with sync_transport.Listener.from_connection_string(cs) as listener:
        delete_the_hybrid_connection(portal, running)
        with pytest.raises(EndpointNotFoundError):
            listener.wait_closed(timeout=10)


def test_anyio_wait_closed_raises_when_the_entity_is_gone(
    relay: tuple[BlockingPortal, Relay],
) -> None:
    portal, running = relay
    cs = running.connection_string()

    async def scenario() -> None:
        async with anyio_transport.Listener.from_connection_string(cs) as listener:
            await anyio.to_thread.run_sync(delete_the_hybrid_connection, portal, running)
            with anyio.fail_after(10), pytest.raises(EndpointNotFoundError):
                await listener.wait_closed()

    anyio.run(scenario)

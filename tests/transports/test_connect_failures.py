"""Every transport says the same thing when it cannot reach the relay: a typed hyco error that
names the address and the likely cause, never a bare I/O or anyio exception."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import anyio
import pytest
from anyio.from_thread import start_blocking_portal

from hyco_core import ConnectionLostError, HycoError
from hyco_relay.config import default_config
from hyco_relay.server import serve_relay
from hyco_transports import anyio as anyio_transport
from hyco_transports import gevent as gevent_transport
from hyco_transports import sync as sync_transport
from hyco_transports.errors import RelayUnreachableError

Attempt = Callable[[str], None]


def anyio_connect(cs: str) -> None:
    async def attempt() -> None:
        async with anyio_transport.connect(cs):
            pass

    anyio.run(attempt)


def anyio_listen(cs: str) -> None:
    async def attempt() -> None:
        async with anyio_transport.Listener.from_connection_string(cs):
            pass

    anyio.run(attempt)


def blocking_connect(module: object) -> Attempt:
    def attempt(cs: str) -> None:
        with module.connect(cs):  # type: ignore[attr-defined]
            pass

    return attempt


def blocking_listen(module: object) -> Attempt:
    def attempt(cs: str) -> None:
        with module.Listener.from_connection_string(cs):  # type: ignore[attr-defined]
            pass

    return attempt


ATTEMPTS = {
    "anyio-connect": anyio_connect,
    "anyio-listen": anyio_listen,
    "sync-connect": blocking_connect(sync_transport),
    "sync-listen": blocking_listen(sync_transport),
    "gevent-connect": blocking_connect(gevent_transport),
    "gevent-listen": blocking_listen(gevent_transport),
}


@pytest.fixture(scope="module")
def plain_relay_cs() -> Iterator[str]:
    """A plain (no TLS) local relay's listener connection string."""
    with start_blocking_portal() as portal:
        manager = portal.wrap_async_context_manager(serve_relay(default_config(port=0)))
        with manager as relay:
            yield relay.connection_string()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("attempt", ATTEMPTS.values(), ids=ATTEMPTS.keys())
def test_tls_against_a_plain_relay_suggests_the_emulator_flag(
    plain_relay_cs: str, attempt: Attempt
) -> None:
    without_flag = plain_relay_cs.replace(";UseDevelopmentEmulator=true", "")
    with pytest.raises(RelayUnreachableError) as raised:
        attempt(without_flag)
    message = str(raised.value)
    assert message.startswith("could not connect to 127.0.0.1:")
    assert "may not speak TLS" in message
    assert "UseDevelopmentEmulator=true" in message
    assert isinstance(raised.value, ConnectionLostError)


@pytest.mark.parametrize("attempt", ATTEMPTS.values(), ids=ATTEMPTS.keys())
def test_a_relay_that_is_down_is_named_with_its_address(attempt: Attempt) -> None:
    port = free_port()
    cs = (
        f"Endpoint=sb://127.0.0.1:{port}/;EntityPath=hyco;SharedAccessKeyName=k;"
        "SharedAccessKey=a2V5;UseDevelopmentEmulator=true"
    )
    with pytest.raises(HycoError) as raised:
        attempt(cs)
    assert str(raised.value) == (
        f"could not connect to 127.0.0.1:{port} (connection refused): is the relay running, "
        "and is this its address and port?"
    )


def test_an_anyio_listener_cancelled_while_it_opens_leaves_cleanly() -> None:
    """A signal while the relay has not answered yet (here it never will): the open is given
    up at once, with nothing of the listener left running."""
    with socket.create_server(("127.0.0.1", 0)) as stalled:
        port = stalled.getsockname()[1]
        cs = (
            f"Endpoint=sb://127.0.0.1:{port}/;SharedAccessKeyName=root;"
            "SharedAccessKey=a2V5;EntityPath=hc1"
        )

        async def attempt() -> bool:
            with anyio.move_on_after(0.5) as scope:
                async with anyio_transport.Listener.from_connection_string(cs):
                    pass
            return scope.cancelled_caught

        assert anyio.run(attempt)

"""What every scenario runs against: the local relay in its own thread, and reference clients.

The relay runs on an asyncio event loop in a background thread, so the driver under test may use
threads, gevent, asyncio or trio in the calling thread as it likes. Reference clients
(``websockets``' sync client, ``httpx``) were written by nobody here.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import replace

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from hyco_core import create_relay_token, parse_connection_string
from hyco_relay.config import RelayConfig, parse_config
from hyco_relay.server import Relay, serve_relay

from .driver import Driver

__all__ = [
    "LISTEN_KEY",
    "ROOT_KEY",
    "SEND_KEY",
    "Blackhole",
    "Harness",
    "blackhole",
    "relay_config",
]

ROOT_KEY = "cm9vdC1rZXktZm9yLXRlc3Rz"
SEND_KEY = "c2VuZC1rZXktZm9yLXRlc3Rz"
LISTEN_KEY = "bGlzdGVuLWtleS1mb3ItdGVzdHM="


def relay_config(*, request_timeout: float = 10.0, rendezvous_timeout: float = 5.0) -> str:
    """TOML for a relay on any free port: namespace ``localhost`` (the default) with a Manage
    rule ``root``; entity ``hc1`` with ``send-only`` and ``listen-only`` rules, ``open`` for
    anonymous senders, and ``deep/path``."""
    return f"""
[relay]
port = 0
request_timeout = {request_timeout}
rendezvous_timeout = {rendezvous_timeout}

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


class Harness:
    """The relay, the driver under test, and reference clients."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self._portal_context = start_blocking_portal("asyncio")
        self.portal: BlockingPortal = self._portal_context.__enter__()
        self._relay_context: AbstractContextManager[Relay] | None = None
        self.relay = self._start_relay(
            parse_config(relay_config(request_timeout=10.0, rendezvous_timeout=10.0))
        )

    def _start_relay(self, config: RelayConfig) -> Relay:
        self._relay_context = self.portal.wrap_async_context_manager(serve_relay(config))
        return self._relay_context.__enter__()

    def close(self) -> None:
        try:
            self.driver.close()
        finally:
            if self._relay_context is not None:
                self._relay_context.__exit__(None, None, None)
            self._portal_context.__exit__(None, None, None)

    @property
    def address(self) -> str:
        return self.relay.address

    def connection_string(
        self, entity: str = "hc1", *, address: str | None = None, key: str | None = None
    ) -> str:
        """The root rule's connection string; ``address`` and ``key`` replace the real ones."""
        parsed = parse_connection_string(self.relay.connection_string(entity, "root"))
        if address is not None:
            parsed = replace(parsed, namespace=address)
        if key is not None:
            parsed = replace(parsed, shared_access_key=key)
        return parsed.format()

    def token(self, entity: str = "hc1", *, key: str = ROOT_KEY, rule: str = "root") -> str:
        return create_relay_token(f"sb://{self.address}/{entity}", rule, key, now=time.time())

    def restart_relay(self, *, down_for: float = 0.5) -> None:
        """Stop the relay (listeners hear close 1001), wait, start it again on the same port."""
        port = self.relay.port
        config = self.relay.config
        assert self._relay_context is not None
        self._relay_context.__exit__(None, None, None)
        time.sleep(down_for)
        self.relay = self._start_relay(replace(config, port=port))

    def listener_count(self, entity: str = "hc1") -> int:
        return self.relay.listener_count("localhost", entity)

    def wait_for_listeners(self, count: int, entity: str = "hc1", timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.listener_count(entity) != count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} listener(s) on {entity}, the relay has "
                    f"{self.listener_count(entity)}"
                )
            time.sleep(0.02)

    # -- reference clients -------------------------------------------------------------------

    def sender(
        self,
        *,
        entity: str = "hc1",
        suffix: str = "",
        query: str = "",
        subprotocols: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
        max_size: int | None = 32 * 1024 * 1024,
    ) -> ClientConnection:
        """A plain ``websockets`` sender with the token in the header."""
        # Built by hand: the query may hold sb-hc-* parameters, which the relay must strip.
        path = f"/$hc/{entity}" + (f"/{suffix}" if suffix else "")
        uri = f"ws://{self.address}{path}?{query + '&' if query else ''}sb-hc-action=connect"
        all_headers = {"ServiceBusAuthorization": self.token(entity), **(headers or {})}
        return ws_connect(
            uri,
            additional_headers=all_headers,
            subprotocols=list(subprotocols) or None,  # type: ignore[arg-type]
            max_size=max_size,
            open_timeout=20,
        )

    def http(self) -> httpx.Client:
        """An ``httpx`` client sending to the hybrid connection ``hc1`` with a fresh token."""
        return httpx.Client(
            base_url=f"http://{self.address}/hc1",
            headers={"ServiceBusAuthorization": self.token()},
            timeout=30,
        )


class Blackhole:
    """A TCP forwarder to the relay that can go silent: it keeps the connections open but stops
    moving bytes, the way a dead NAT mapping or a half-open connection behaves."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.silent = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        self._server.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            if not self.silent.is_set():
                with contextlib.suppress(OSError):
                    sink.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=2)


@contextlib.contextmanager
def blackhole(port: int) -> Iterator[Blackhole]:
    hole = Blackhole(port)
    try:
        yield hole
    finally:
        hole.close()

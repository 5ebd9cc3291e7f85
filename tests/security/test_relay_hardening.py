"""The relay under attack by exhaustion and misdirection: descriptors running out, one address
taking every connection, a listener that stops reading, a sender's ``Host`` steering listeners.

Each test starts the real relay on 127.0.0.1 (in this process, or as the ``hyco relay`` command
when the attack needs a descriptor limit of its own) and checks that a well-behaved listener and
sender keep working while the attack goes on.
"""

from __future__ import annotations

import json
import logging
import resource
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from hyco_conformance.harness import ROOT_KEY, relay_config
from hyco_core import create_relay_send_uri, create_relay_token, create_sas_token
from hyco_relay.config import parse_config
from hyco_relay.server import Relay, serve_relay
from hyco_transports.anyio import Listener, connect
from hyco_transports.auth import RelayEndpoint, SasKeyTokenProvider
from tests.cli import HYCO, user_env

from .hostile_relay import OP_TEXT
from .relay_clients import (
    ATTACKER,
    RawWebSocket,
    answer,
    assert_relay_logs_clean,
    auth,
    good_listener,
    listen_target,
    raw_exchange,
    round_trip,
    status_of,
    token,
    upgrade_request,
    ws_status,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def relay_logs_stay_clean(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a client sends, the relay logs no error, no key and no signature."""
    caplog.set_level(logging.DEBUG, logger="hyco")  # the peer-gone lines are DEBUG
    yield
    assert_relay_logs_clean(caplog)


@asynccontextmanager
async def running_relay(settings: str = "", **timeouts: float) -> AsyncIterator[Relay]:
    """A relay on a free port with the test entities and extra ``[relay]`` settings."""
    config = relay_config(**timeouts).replace("[relay]\n", f"[relay]\n{settings}\n", 1)
    async with serve_relay(parse_config(config)) as relay:
        yield relay


@contextmanager
def idle_connections(
    port: int, count: int, source: str = ATTACKER
) -> Iterator[list[socket.socket]]:
    """``count`` connections from ``source`` that send nothing (some may fail to connect or be
    closed by the relay: that is what the tests are about)."""
    with ExitStack() as stack:
        held = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind((source, 0))
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", port))
            except OSError:
                continue
            held.append(sock)
        yield held


# -- descriptors running out -------------------------------------------------------------------

DESCRIPTOR_LIMIT = 128


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTOR_LIMIT, DESCRIPTOR_LIMIT))


@contextmanager
def relay_command(
    tmp_path: Path, settings: str = ""
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``hyco relay`` as a user runs it, with a descriptor limit of 128; yields it and its port."""
    config = tmp_path / "relay.toml"
    config.write_text(relay_config().replace("[relay]\n", f"[relay]\n{settings}\n", 1))
    process = subprocess.Popen(  # noqa: S603 - our own command
        [HYCO, "relay", "--config", str(config)],
        cwd=tmp_path,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_limit_descriptors,  # a child with a descriptor limit of its own
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("hyco relay listening on 127.0.0.1:"), first
        port = int(first.split()[4].rpartition(":")[2])
        yield process, port
    finally:
        process.terminate()
        process.wait(timeout=20)


def _connection_string(port: int, entity: str = "hc1") -> str:
    return (
        f"Endpoint=sb://127.0.0.1:{port}/;SharedAccessKeyName=root;SharedAccessKey={ROOT_KEY};"
        f"EntityPath={entity};UseDevelopmentEmulator=true"
    )


async def _echo_round_trip(port: int) -> None:
    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    cs = _connection_string(port)
    async with (
        Listener.from_connection_string(cs, connection_handler=echo),
        connect(cs, connect_timeout=20) as ws,
    ):
        await ws.send("through")
        assert await ws.recv() == "through"


async def test_the_relay_serves_on_when_descriptors_run_out(tmp_path: Path) -> None:
    # Without the per-address cap (which alone would keep this attacker to half of them).
    with relay_command(tmp_path, "max_connections_per_address = 0") as (process, port):
        # More idle connections than the relay has descriptors: it must shed the oldest of
        # them (they have sent nothing) to let a listener and a sender in, well before the
        # 10 s head timeout would have freed anything.
        with idle_connections(port, 2 * DESCRIPTOR_LIMIT) as held:
            assert len(held) > DESCRIPTOR_LIMIT  # the backlog took what the relay could not
            with anyio.fail_after(8):
                await _echo_round_trip(port)
            assert process.poll() is None
        # Recovered by itself once the attack is over.
        await _echo_round_trip(port)
        assert process.poll() is None
        process.terminate()
        _out, errors = process.communicate(timeout=20)
    assert "Traceback" not in errors, errors
    assert errors.count("cannot accept connections (Too many open files)") == 1, errors


# -- one address taking every connection -------------------------------------------------------


async def test_one_address_cannot_take_every_connection() -> None:
    async with running_relay("max_connections_per_address = 8") as relay, good_listener(relay):
        with idle_connections(relay.port, 8) as held:
            assert len(held) == 8
            answer = await raw_exchange(relay, b"GET /health HTTP/1.1\r\n", local_host=ATTACKER)
            assert status_of(answer) == 429
            await round_trip(relay)  # other addresses are served
        # The address's connections are counted down as they close.
        with anyio.fail_after(10):
            while status_of(await _health_from_attacker(relay)) != 200:
                await anyio.sleep(0.05)


async def _health_from_attacker(relay: Relay) -> bytes:
    request = f"GET /health HTTP/1.1\r\nHost: {relay.address}\r\nConnection: close\r\n\r\n"
    return await raw_exchange(relay, request.encode(), local_host=ATTACKER)


# -- a listener that stops reading -------------------------------------------------------------


@asynccontextmanager
async def stalled_listener(relay: Relay) -> AsyncIterator[socket.socket]:
    """A listener whose control channel is open but which never reads from it again; its
    receive buffer is small, so the relay's writes to it back up quickly. (A blocking socket,
    used from a thread: the relay runs in this event loop.)"""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    headers = list(auth(relay).items())

    def open_control_channel() -> bytes:
        sock.connect(("127.0.0.1", relay.port))
        sock.sendall(upgrade_request(listen_target(), host=relay.address, headers=headers))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        return head

    with sock:
        head = await anyio.to_thread.run_sync(open_control_channel)
        assert head.startswith(b"HTTP/1.1 101 "), head
        yield sock


async def _cut_off(sock: socket.socket) -> bool:
    """Whether the relay closed ``sock`` (read what it had sent, to its end)."""

    def read_to_the_end() -> bool:
        sock.settimeout(5)
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    return await anyio.to_thread.run_sync(read_to_the_end)


BIG_HEADER = {"X-Filler": "f" * 60_000}  # each accept the relay writes carries it
# Enough of them to fill what the kernel buffers on loopback (the relay's send buffer grows to
# about 1.3 MiB on a connection whose peer reads nothing).
SENDERS = 80


async def _sender_status(relay: Relay) -> tuple[int, float]:
    started = time.monotonic()
    status = await ws_status(
        create_relay_send_uri(relay.address, "hc1", secure=False),
        {**auth(relay), **BIG_HEADER},
    )
    return status, time.monotonic() - started


async def test_a_listener_that_stops_reading_cannot_hang_senders() -> None:
    async with running_relay("write_timeout = 0.5", rendezvous_timeout=2.0) as relay:
        async with stalled_listener(relay) as stalled:
            results: list[tuple[int, float]] = []

            async def send() -> None:
                results.append(await _sender_status(relay))

            async with anyio.create_task_group() as senders:
                for _ in range(SENDERS):
                    senders.start_soon(send)
            # Every sender had its answer within the rendezvous timeout: a gateway timeout
            # while the listener was there, 404 once it was closed.
            print(
                f"{SENDERS} senders to a stalled listener: answered "
                f"{sorted({status for status, _ in results})} within "
                f"{max(elapsed for _, elapsed in results):.2f} s (rendezvous timeout 2 s)"
            )
            assert {status for status, _ in results} <= {504, 404}, results
            assert max(elapsed for _, elapsed in results) < 2.0 + 1.5, results
            assert relay.listener_count("localhost", "hc1") == 0
            assert relay.stats()["pending_rendezvous"] == 0
            assert await _cut_off(stalled)
        async with good_listener(relay):
            await round_trip(relay)


async def test_senders_offered_to_a_stalled_listener_go_to_another() -> None:
    relay_running = running_relay("write_timeout = 0.5", rendezvous_timeout=5.0)
    async with relay_running as relay, good_listener(relay):
        async with stalled_listener(relay):
            results: list[tuple[int, float]] = []

            async def send() -> None:
                results.append(await _sender_status(relay))

            async with anyio.create_task_group() as senders:
                for _ in range(2 * SENDERS):  # about half go to the stalled one
                    senders.start_soon(send)
            assert [status for status, _ in results] == [101] * 2 * SENDERS
            assert relay.listener_count("localhost", "hc1") == 1
        await round_trip(relay)


async def test_a_listener_that_never_reads_is_closed_within_the_write_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_relay("write_timeout = 0.5", request_timeout=30.0) as relay:
        async with stalled_listener(relay), httpx.AsyncClient(timeout=30) as client:
            statuses: list[int] = []

            async def post() -> None:
                response = await client.post(
                    f"http://{relay.address}/hc1", headers=auth(relay), content=b"x" * 60_000
                )
                statuses.append(response.status_code)

            started = time.monotonic()
            async with anyio.create_task_group() as senders:
                for _ in range(SENDERS):
                    senders.start_soon(post)
            elapsed = time.monotonic() - started
        assert set(statuses) == {502}, statuses
        assert elapsed < 15, "HTTP senders waited for the request timeout"
    stalled_lines = [r for r in caplog.records if "left the relay's writes unread" in r.message]
    assert len(stalled_lines) == 1


# -- the sender's Host never shapes an address -------------------------------------------------


async def _announced_address(relay: Relay, host: str, kind: str) -> str:
    """The address the relay hands a listener on ``open`` for a sender that sent
    ``Host: host``: a WebSocket sender's (``accept``) or an HTTP sender's (``request``)."""
    listener_headers = [("ServiceBusAuthorization", token(relay, "open"))]
    control = await RawWebSocket.open(relay, listen_target("open"), listener_headers)
    if kind == "accept":
        sender = upgrade_request("/$hc/open?sb-hc-action=connect", host=host)
    else:
        sender = f"GET /open/x HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    async with control.stream, await anyio.connect_tcp("127.0.0.1", relay.port) as stream:
        await stream.send(sender)
        with anyio.fail_after(10):
            opcode, payload = await control.receive()
    assert opcode == OP_TEXT
    address: str = json.loads(payload)[kind]["address"]
    return address


async def test_rendezvous_addresses_point_at_the_relay_whatever_host_a_sender_sends() -> None:
    async with running_relay() as relay:
        for host in ("attacker.example:25", "127.0.0.1:1", "LOCALHOST"):
            accept = await _announced_address(relay, host, "accept")
            assert accept.startswith(f"ws://{relay.address}/$hc/open?sb-hc-action=accept&"), host
            request = await _announced_address(relay, host, "request")
            assert request.startswith(f"ws://{relay.address}/$hc/open?sb-hc-action=request&")


async def test_rendezvous_addresses_and_connection_strings_follow_public_url() -> None:
    settings = 'public_url = "wss://relay.example.com:8443"'
    async with running_relay(settings) as relay:
        accept = await _announced_address(relay, "attacker.example", "accept")
        assert accept.startswith("wss://relay.example.com:8443/$hc/open?sb-hc-action=accept&")
        assert "Endpoint=sb://relay.example.com:8443/" in relay.connection_string("hc1", "root")


async def test_a_host_that_is_no_host_name_is_refused_with_a_reason() -> None:
    async with running_relay() as relay:
        for host in ("127.0.0.1/..", "a b", "x:99999", "[::1"):
            headers = list(auth(relay).items())
            head = upgrade_request("/$hc/hc1?sb-hc-action=listen", host=host, headers=headers)
            answer = await raw_exchange(relay, head)
            assert status_of(answer) == 400, (host, answer)
            assert b"The Host header is not a host name" in answer


# -- tokens ------------------------------------------------------------------------------------


async def test_a_renewal_with_a_shorter_lived_token_brings_the_expiry_forward() -> None:
    async with running_relay() as relay:
        control = await RawWebSocket.open(relay, listen_target(), list(auth(relay).items()))
        async with control.stream:
            short = create_relay_token(
                f"sb://{relay.address}/hc1", "root", ROOT_KEY, 2, now=time.time()
            )
            await control.send(OP_TEXT, json.dumps({"renewToken": {"token": short}}).encode())
            with anyio.fail_after(10):  # not the hour the first token had
                assert await control.close_code() == 1008


async def test_tokens_beyond_the_maximum_lifetime_are_refused() -> None:
    async with running_relay("max_token_lifetime = 600") as relay:
        lasting = create_relay_token(
            f"sb://{relay.address}/hc1", "root", ROOT_KEY, 3600, now=time.time()
        )
        async with httpx.AsyncClient() as client:
            refused = await client.get(
                f"http://{relay.address}/hc1", headers={"ServiceBusAuthorization": lasting}
            )
        assert refused.status_code == 401
        assert "accepts tokens that expire within 600 s" in refused.json()["error"]["message"]
        short = create_relay_token(
            f"sb://{relay.address}/hc1", "root", ROOT_KEY, 300, now=time.time()
        )
        endpoint = replace(
            RelayEndpoint.from_connection_string(relay.connection_string("hc1", "root")),
            token_provider=SasKeyTokenProvider("root", ROOT_KEY, lifetime=300),
        )
        async with Listener(endpoint, request_handler=answer), httpx.AsyncClient() as client:
            served = await client.post(
                f"http://{relay.address}/hc1",
                headers={"ServiceBusAuthorization": short},
                content=b"short-lived",
            )
        assert (served.status_code, served.content) == (200, b"answered: short-lived")


async def test_stats_can_require_a_namespace_manage_token() -> None:
    async with running_relay("stats_requires_manage = true") as relay:
        async with httpx.AsyncClient() as client:
            anonymous = await client.get(f"http://{relay.address}/stats")
            entity_token = await client.get(f"http://{relay.address}/stats", headers=auth(relay))
            root = create_sas_token(
                f"http://{relay.address}/", "root", ROOT_KEY, int(time.time()) + 60
            )
            manager = await client.get(
                f"http://{relay.address}/stats", headers={"ServiceBusAuthorization": root}
            )
            health = await client.get(f"http://{relay.address}/health")
        assert anonymous.status_code == 401
        assert entity_token.status_code == 401
        assert manager.status_code == 200
        assert "entities" in manager.json()
        assert health.status_code == 200


# -- what the relay logs -----------------------------------------------------------------------


async def test_control_characters_from_clients_cannot_forge_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_relay() as relay:
        target = listen_target(listener_id="a%0D%0AERROR%20forged%1B[31m")
        control = await RawWebSocket.open(relay, target, list(auth(relay).items()))
        async with control.stream:
            await control.send(OP_TEXT, b'{"renewToken": {"token": "nonsense"}}')
            assert await control.close_code() == 1008
        await raw_exchange(relay, b"GET /nope\x01%0A HTTP/1.1\r\nHost: x\r\n\r\n")
    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if "\r" in m or "\n" in m or "\x1b" in m], messages
    assert any("a\\x0d\\x0aERROR forged\\x1b[31m" in m for m in messages), messages


async def test_a_keep_alive_sender_that_vanishes_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_relay() as relay, good_listener(relay):
        body = b"x" * 100_000  # over a rendezvous, kept for the sender's next request
        head = (
            f"POST /hc1 HTTP/1.1\r\nHost: {relay.address}\r\nContent-Length: {len(body)}\r\n"
            f"ServiceBusAuthorization: {token(relay)}\r\n\r\n"
        ).encode()
        async with await anyio.connect_tcp("127.0.0.1", relay.port) as stream:
            await stream.send(head + body)
            answer = b""
            while b"answered: " not in answer or len(answer) < len(body):
                answer += await stream.receive()
            # Gone without a word, with a reset.
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await anyio.sleep(0.5)
        await round_trip(relay)
    ended = [r for r in caplog.records if "ended by" in r.getMessage()]
    assert all(record.levelno <= logging.INFO for record in ended), ended


async def test_a_key_given_as_the_key_name_is_echoed_nowhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key_as_name = "u8Zk3+Qm/Lp0rT9wXy2Vb7NcEa4Hd6Gf1Js5Ko8Pq3I"  # how other SDKs swap them
    async with running_relay() as relay, httpx.AsyncClient() as client:
        forged = create_sas_token(
            f"http://{relay.address}/hc1", key_as_name, ROOT_KEY, int(time.time()) + 60
        )
        refused = await client.get(
            f"http://{relay.address}/hc1", headers={"ServiceBusAuthorization": forged}
        )
    assert refused.status_code == 401
    assert key_as_name not in refused.text
    assert "an unknown key name" in refused.json()["error"]["message"]
    assert key_as_name not in caplog.text

"""TCP forwarding through the relay: expose on one side, forward on the other."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from hyco_adapters.forward import Target, expose, forward, parse_target
from hyco_core import EndpointNotFoundError, RelayServerError
from hyco_relay.config import default_config
from hyco_relay.server import Relay, serve_relay
from hyco_transports.anyio import connect
from tests.cli import HYCO as HYCO_SCRIPT
from tests.cli import hyco_relay, run_hyco, start_hyco, user_env

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def hashing_service(stream: anyio.abc.SocketStream) -> None:
    """Reads until the client half-closes, then answers with the SHA-256 of what it read."""
    async with stream:
        digest = hashlib.sha256()
        async for data in stream:
            digest.update(data)
        await stream.send(digest.hexdigest().encode())


async def line_service(stream: anyio.abc.SocketStream) -> None:
    """A chatty line protocol, like an SSH session: a banner, then one answer per line."""
    async with stream:
        await stream.send(b"SSH-2.0-hyco-test\r\n")
        buffer = b""
        async for data in stream:
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                await stream.send(b"echo: " + line.upper() + b"\n")


@asynccontextmanager
async def tcp_service(handler: object) -> AsyncIterator[int]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handler)  # type: ignore[arg-type]
        yield int(listener.extra(anyio.abc.SocketAttribute.local_port))
        tasks.cancel_scope.cancel()


@asynccontextmanager
async def forwarding(relay: Relay, targets: list[Target], name: str) -> AsyncIterator[int]:
    cs = relay.connection_string()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(expose, cs, targets)
        while relay.listener_count("localhost", "hyco") == 0:
            await anyio.sleep(0.01)
        port = await tasks.start(lambda task_status: forward(cs, name, task_status=task_status))
        yield port
        tasks.cancel_scope.cancel()


async def test_many_parallel_connections_with_megabytes_each_arrive_intact() -> None:
    async with (
        serve_relay(default_config(port=0)) as relay,
        tcp_service(hashing_service) as service,
        forwarding(relay, [Target("hash", "127.0.0.1", service)], "hash") as port,
    ):
        failures: list[str] = []

        async def one(index: int) -> None:
            payload = os.urandom(1024 * 1024 + index)
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                for start in range(0, len(payload), 100_000):
                    await client.send(payload[start : start + 100_000])
                await client.send_eof()  # half-close: the service answers after EOF
                answer = b""
                async for data in client:
                    answer += data
            if answer.decode() != hashlib.sha256(payload).hexdigest():
                failures.append(f"connection {index}: digest differs")

        async with anyio.create_task_group() as tasks:
            for index in range(24):
                tasks.start_soon(one, index)
        assert not failures

        big = os.urandom(16 * 1024 * 1024)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            await client.send(big)
            await client.send_eof()
            answer = b"".join([data async for data in client])
        assert answer.decode() == hashlib.sha256(big).hexdigest()


async def test_unknown_and_refusing_targets_fail_clearly() -> None:
    closed_port = 1  # nothing listens on port 1 on a test machine
    targets = [Target("down", "127.0.0.1", closed_port)]
    async with serve_relay(default_config(port=0)) as relay, anyio.create_task_group() as tasks:
        cs = relay.connection_string()
        tasks.start_soon(expose, cs, targets)
        while relay.listener_count("localhost", "hyco") == 0:
            await anyio.sleep(0.01)
        with pytest.raises(EndpointNotFoundError) as unknown:
            async with connect(cs, suffix="nope"):
                pass
        assert "Unknown target 'nope'; this side exposes: down" in str(unknown.value)
        with pytest.raises(RelayServerError) as refused:
            async with connect(cs, suffix="down"):
                pass
        assert refused.value.status_code == 502
        assert "Unreachable target 'down'" in str(refused.value)
        tasks.cancel_scope.cancel()


def test_target_syntax() -> None:
    assert parse_target("ssh=127.0.0.1:22") == Target("ssh", "127.0.0.1", 22)
    assert parse_target("db.local:5432") == Target("db.local-5432", "db.local", 5432)
    assert parse_target("v6=[::1]:8080") == Target("v6", "::1", 8080)
    for bad in ("ssh=host", "ssh=host:0", "bad name=h:1", "h:99999"):
        with pytest.raises(ValueError, match="target"):
            parse_target(bad)


HYCO = [HYCO_SCRIPT]


def test_an_ssh_style_session_through_the_command_line(tmp_path: Path) -> None:
    """hyco relay, hyco expose and hyco forward as separate processes, as a user runs them."""

    async def scenario() -> None:
        async with tcp_service(line_service) as service:
            home = {"HOME": str(tmp_path / "home")}
            relay = await anyio.open_process(
                [*HYCO, "relay", "--port", "0"], cwd=tmp_path, env=user_env(home)
            )
            try:
                assert relay.stdout is not None
                head = b""
                while head.count(b"\n") < 4:
                    head += await relay.stdout.receive()
                cs = head.decode().splitlines()[3].split("listener: ", 1)[1].strip()
                env = user_env({"HYCO_CONNECTION_STRING": cs})
                exposing = await anyio.open_process(
                    [*HYCO, "expose", "--target", f"ssh=127.0.0.1:{service}"], env=env, cwd=tmp_path
                )
                try:
                    stdio = await _stdio_session(env, tmp_path)
                    assert stdio.startswith(b"SSH-2.0-hyco-test\r\n")
                    assert b"echo: HELLO\n" in stdio
                    forwarding = await anyio.open_process(
                        [*HYCO, "forward", "--target", "ssh", "--bind", "127.0.0.1:0"],
                        env=env,
                        cwd=tmp_path,
                    )
                    try:
                        assert forwarding.stdout is not None
                        line = (await forwarding.stdout.receive()).decode()
                        port = int(line.split()[1].rsplit(":", 1)[1])
                        async with await anyio.connect_tcp("127.0.0.1", port) as client:
                            assert (await client.receive()).startswith(b"SSH-2.0")
                            await client.send(b"whoami\n")
                            assert await client.receive() == b"echo: WHOAMI\n"
                    finally:
                        forwarding.terminate()
                        await forwarding.wait()
                finally:
                    exposing.terminate()
                    await exposing.wait()
            finally:
                relay.send_signal(signal.SIGINT)
                await relay.wait()
                await relay.aclose()

    anyio.run(scenario)


async def _stdio_session(env: dict[str, str], cwd: Path) -> bytes:
    """``hyco forward --stdio`` as ssh's ProxyCommand would run it: a line in, answers out."""
    deadline = anyio.current_time() + 20
    while True:
        result = await anyio.run_process(
            [*HYCO, "forward", "--target", "ssh", "--stdio"],
            input=b"hello\n",
            env=env,
            cwd=cwd,
            check=False,
        )
        if (result.returncode == 0 and result.stdout) or anyio.current_time() > deadline:
            return result.stdout
        await anyio.sleep(0.2)  # the exposing side may still be connecting


def test_cli_refuses_bad_forwarding_arguments(tmp_path: Path) -> None:
    env = user_env({"HYCO_CONNECTION_STRING": "Endpoint=sb://127.0.0.1:1/;EntityPath=x"})
    bad_target = subprocess.run(  # noqa: S603 - our own command
        [*HYCO, "expose", "--target", "nonsense"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert bad_target.returncode == 2
    assert "name=host:port" in bad_target.stderr
    bad_bind = subprocess.run(  # noqa: S603 - our own command
        [*HYCO, "forward", "--target", "x", "--bind", "here"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert bad_bind.returncode == 2


@pytest.mark.parametrize(
    ("target", "says"),
    [
        (
            "nope",
            "hyco forward: the exposing side has no target 'nope' (Unknown target 'nope'; this "
            "side exposes: down",
        ),
        ("down", "hyco forward: the exposing side could not connect to target 'down'"),
    ],
    ids=["unknown", "unreachable"],
)
def test_a_target_the_exposing_side_cannot_serve_is_named_as_such(
    tmp_path: Path, target: str, says: str
) -> None:
    with hyco_relay(cwd=tmp_path) as relay:
        env = {"HYCO_CONNECTION_STRING": relay.listener}
        exposing = start_hyco("expose", "--target", "down=127.0.0.1:1", cwd=tmp_path, env=env)
        try:
            assert exposing.stdout is not None
            assert exposing.stdout.readline().startswith("online, exposing down")
            result = run_hyco("forward", "--target", target, "--stdio", cwd=tmp_path, env=env)
        finally:
            exposing.send_signal(signal.SIGINT)
            exposing.communicate(timeout=20)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(says), line
    assert "TrackingId:" in line
    assert "EntityPath" not in line  # the hybrid connection is right: the target is not
    assert "transient" not in line

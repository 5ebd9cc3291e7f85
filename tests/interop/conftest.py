"""Microsoft's Node packages against our relay: installing them, running their scripts, a relay.

The packages are installed once per checkout (``npm ci`` from the committed lockfile) into
``tests/interop/node/node_modules``; a stamp of the manifest and the lockfile tells when that is
up to date. Each script runs as a subprocess that prints ``READY`` once it listens, then one JSON
object per line; every subprocess is killed when its test ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from hyco_conformance.harness import LISTEN_KEY, SEND_KEY, relay_config
from hyco_core import create_relay_token
from hyco_relay.config import parse_config
from hyco_relay.server import Relay, serve_relay

NODE_DIR = Path(__file__).parent / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")

ENTITY = "hc1"
REQUEST_TIMEOUT = 5.0
RENDEZVOUS_TIMEOUT = 2.0

CONFIG = relay_config(request_timeout=REQUEST_TIMEOUT, rendezvous_timeout=RENDEZVOUS_TIMEOUT)

READY_TIMEOUT = 15.0
EVENT_TIMEOUT = 15.0
_INSTALL_TIMEOUT = 600.0
_STAMP = NODE_DIR / "node_modules" / ".hyco-interop-stamp"
_MAX_LINE = 1 << 20


def _install_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((NODE_DIR / name).read_bytes())
    if NODE is not None:
        digest.update(subprocess.check_output([NODE, "--version"]))  # noqa: S603
    return digest.hexdigest()


@pytest.fixture(scope="session")
def node_packages() -> Path:
    """``hyco-ws`` and ``hyco-https`` installed in ``tests/interop/node``; skips without Node."""
    if NODE is None or NPM is None:
        pytest.skip("node and npm are needed for the Node SDK interop tests (Node 20 or later)")
    fingerprint = _install_fingerprint()
    if not (_STAMP.is_file() and _STAMP.read_text() == fingerprint):
        completed = subprocess.run(  # noqa: S603 - npm found on PATH, fixed arguments
            [NPM, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=_INSTALL_TIMEOUT,
            check=False,
        )
        if completed.returncode != 0:
            pytest.fail(f"npm ci failed in {NODE_DIR}:\n{completed.stdout}\n{completed.stderr}")
        _STAMP.write_text(fingerprint)
    return NODE_DIR / "node_modules"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with serve_relay(parse_config(CONFIG)) as running:
        yield running


def sender_token(relay: Relay) -> str:
    """A token made by our own code, for senders that are not ours (curl)."""
    return create_relay_token(
        f"sb://{relay.address}/{ENTITY}", "send-only", SEND_KEY, now=time.time()
    )


def script_environment(
    address: str,
    *,
    role: str,
    scheme: str = "ws",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What the Node scripts read: where the relay is and which rule's key to sign with."""
    key_name, key = ("listen-only", LISTEN_KEY) if role == "listener" else ("send-only", SEND_KEY)
    return {
        **os.environ,
        "HYCO_RELAY_ADDRESS": address,
        "HYCO_SCHEME": scheme,
        "HYCO_ENTITY": ENTITY,
        "HYCO_KEY_NAME": key_name,
        "HYCO_KEY": key,
        **(extra or {}),
    }


class NodeScript:
    """A running Node script: its JSON lines, its exit, and what it wrote to stderr."""

    def __init__(self, process: anyio.abc.Process, stderr: BinaryIO) -> None:
        assert process.stdout is not None
        self.process = process
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self._stderr = stderr

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    async def line(self, timeout: float = EVENT_TIMEOUT) -> str:
        try:
            with anyio.fail_after(timeout):
                raw = await self._stdout.receive_until(b"\n", _MAX_LINE)
        except TimeoutError:
            raise AssertionError(f"no output in {timeout:g} s; stderr:\n{self.stderr()}") from None
        except (anyio.IncompleteRead, anyio.EndOfStream):
            raise AssertionError(f"the script ended; stderr:\n{self.stderr()}") from None
        return raw.decode()

    async def event(self, timeout: float = EVENT_TIMEOUT) -> dict[str, Any]:
        document = json.loads(await self.line(timeout))
        assert isinstance(document, dict)
        return document

    async def events_until(self, last: str, timeout: float = EVENT_TIMEOUT) -> list[dict[str, Any]]:
        """Every event up to and including the first of kind ``last``."""
        events: list[dict[str, Any]] = []
        with anyio.fail_after(timeout):
            while not events or events[-1]["event"] != last:
                events.append(await self.event())
        return events

    async def events_during(self, seconds: float) -> list[dict[str, Any]]:
        """Every event the script prints in the next ``seconds``."""
        events: list[dict[str, Any]] = []
        with anyio.move_on_after(seconds):
            while True:
                events.append(await self.event())
        return events

    async def exit_code(self, timeout: float = EVENT_TIMEOUT) -> int:
        with anyio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def node_script(
    script: str, *arguments: str, env: Mapping[str, str], ready: bool = True
) -> AsyncIterator[NodeScript]:
    """Run ``node/<script>``; with ``ready``, wait for its ``READY`` line first. Always killed."""
    assert NODE is not None
    with tempfile.TemporaryFile() as stderr:
        process = await anyio.open_process(
            [NODE, str(NODE_DIR / script), *arguments],
            cwd=NODE_DIR,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stderr=stderr,
        )
        running = NodeScript(process, stderr)
        try:
            if ready:
                first = await running.line(READY_TIMEOUT)
                assert first == "READY", f"{first!r}; stderr:\n{running.stderr()}"
            yield running
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    with suppress(ProcessLookupError):
                        process.kill()
                await process.aclose()

"""Clients of the relay for the security tests: a well-behaved listener and sender pair that
must keep working during every attack, and attackers written by hand (raw HTTP heads, a raw
WebSocket that sends frames libraries refuse to)."""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from hyco_conformance.harness import ROOT_KEY
from hyco_core import create_relay_token
from hyco_relay.server import Relay
from hyco_transports.anyio import HttpRequest, HttpResponse, Listener, WebSocket, connect

from .hostile_relay import OP_CLOSE, frame

# The relay's time limit for a request head (relay/server.py _HEAD_TIMEOUT).
HEAD_TIMEOUT = 10.0
KEY = base64.b64encode(b"sixteen byte key").decode()
ATTACKER = "127.0.0.2"  # another client address on the loopback network
_SIGNATURE_SHOWN = re.compile(r"sig(=|%3D)(?!\*\*\*)", re.IGNORECASE)


def assert_relay_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    """Whatever a client sent, the relay logged no error, no key and no token signature."""
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    key_logged = ROOT_KEY in caplog.text
    assert not key_logged, "a key was logged"
    assert not _SIGNATURE_SHOWN.search(caplog.text), "a token signature was logged"


# -- the well-behaved pair ---------------------------------------------------------------------


async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def answer(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, body=b"answered: " + await request.body())


@asynccontextmanager
async def good_listener(relay: Relay, entity: str = "hc1") -> AsyncIterator[Listener]:
    async with Listener.from_connection_string(
        relay.connection_string(entity, "root"), connection_handler=echo, request_handler=answer
    ) as running:
        yield running


async def round_trip(relay: Relay, entity: str = "hc1", text: str = "still there?") -> None:
    """A sender's message comes back through the relay, and an HTTP request is answered."""
    async with connect(relay.connection_string(entity, "root"), connect_timeout=20) as ws:
        await ws.send(text)
        assert await ws.recv() == text
    async with httpx.AsyncClient(timeout=20) as client:
        response = await client.post(
            f"http://{relay.address}/{entity}",
            headers={"ServiceBusAuthorization": token(relay, entity)},
            content=text.encode(),
        )
    assert (response.status_code, response.content) == (200, b"answered: " + text.encode())


async def still_serves(relay: Relay) -> None:
    """The listener that was there all along, and a fresh pair, both work."""
    await round_trip(relay)
    async with good_listener(relay, "open"):
        await round_trip(relay, "open", "fresh pair")


def token(
    relay: Relay,
    entity: str = "hc1",
    *,
    rule: str = "root",
    key: str = ROOT_KEY,
    host: str | None = None,
) -> str:
    return create_relay_token(f"sb://{host or relay.address}/{entity}", rule, key, now=time.time())


def auth(relay: Relay, entity: str = "hc1") -> dict[str, str]:
    return {"ServiceBusAuthorization": token(relay, entity)}


# -- attackers ---------------------------------------------------------------------------------


def upgrade_request(
    target: str,
    *,
    host: str | None,
    headers: Sequence[tuple[str, str]] = (),
    version: str = "HTTP/1.1",
    method: str = "GET",
    key: str = KEY,
    ws_version: str = "13",
    upgrade: str = "websocket",
) -> bytes:
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [
        f"Upgrade: {upgrade}",
        "Connection: Upgrade",
        f"Sec-WebSocket-Version: {ws_version}",
    ]
    if key:
        lines.append(f"Sec-WebSocket-Key: {key}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def raw_exchange(
    relay: Relay,
    data: bytes | Sequence[bytes],
    *,
    local_host: str | None = None,
    timeout: float = HEAD_TIMEOUT - 2,
) -> bytes:
    """Send ``data`` (pieces one after the other) on a fresh connection; return what the relay
    answered before it closed the connection, which it must do within ``timeout``."""
    pieces = [data] if isinstance(data, bytes) else list(data)
    answer = b""
    async with await anyio.connect_tcp("127.0.0.1", relay.port, local_host=local_host) as stream:
        try:
            for piece in pieces:
                await stream.send(piece)
            await stream.send_eof()
        except (anyio.BrokenResourceError, OSError):
            pass  # the relay closed while we were still sending
        with anyio.fail_after(timeout):
            while True:
                try:
                    answer += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    return answer


def status_of(answer: bytes) -> int | None:
    """The status of an HTTP answer, ``None`` when the relay closed without one."""
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    return int(match.group(1)) if match else None


async def ws_status(uri: str, headers: dict[str, str] | None = None) -> int:
    """The status refusing a ``websockets`` client (101 when it opened)."""
    try:
        async with ws_connect(uri, additional_headers=headers):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


@dataclass
class RawWebSocket:
    """A WebSocket client written by hand: it sends frames as given (masked unless told)."""

    stream: anyio.abc.ByteStream
    buffer: bytearray = field(default_factory=bytearray)

    @classmethod
    async def open(cls, relay: Relay, target: str, headers: Sequence[tuple[str, str]]) -> Any:
        stream = await anyio.connect_tcp("127.0.0.1", relay.port)
        await stream.send(upgrade_request(target, host=relay.address, headers=headers))
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive()
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        return cls(stream, bytearray(rest))

    async def send(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        options.setdefault("masked", True)
        # The relay may close while this is still being sent: its close code tells why.
        with contextlib.suppress(anyio.BrokenResourceError, OSError):
            await self.stream.send(frame(opcode, payload, **options))

    async def receive(self) -> tuple[int, bytes]:
        """The relay's next frame: opcode and payload; ``(-1, b"")`` at the end of the stream."""
        try:
            head = await self._take(2)
            size = head[1] & 0x7F
            if size >= 126:
                size = int.from_bytes(await self._take(2 if size == 126 else 8), "big")
            return head[0] & 0x0F, await self._take(size)
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return -1, b""

    async def close_code(self) -> int | None:
        """Read until the relay closes, and answer its close: its close code (``None``: it
        sent no close frame)."""
        while True:
            opcode, payload = await self.receive()
            if opcode == OP_CLOSE:
                await self.send(OP_CLOSE, payload[:2])
                return int.from_bytes(payload[:2], "big")
            if opcode == -1:
                return None

    async def _take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self.buffer += await self.stream.receive()
        taken = bytes(self.buffer[:count])
        del self.buffer[:count]
        return taken


def listen_target(entity: str = "hc1", listener_id: str = "") -> str:
    target = f"/$hc/{entity}?sb-hc-action=listen"
    return target + (f"&sb-hc-id={listener_id}" if listener_id else "")

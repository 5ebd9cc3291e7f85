"""A real browser's W3C WebSocket through the local relay to our anyio listener.

Browsers cannot set headers, so the sender's token travels in the query as ``sb-hc-token``: this
is the one client here whose handshake we did not write. Headless Chromium opens a page served
from 127.0.0.1 (``browser/relay_echo.html``) that talks to the relay and writes its outcome as
JSON back to the test's own small HTTP server.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import anyio.abc
import pytest

from hyco_core import ConnectionClosed, create_relay_send_uri, create_relay_token
from hyco_relay.config import default_config
from hyco_relay.server import Relay, serve_relay
from hyco_transports.anyio import AcceptContext, Listener, WebSocket

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"Chromium is not installed ({CHROMIUM}; .ci/run installs it)",
    ),
]

PAGE = (Path(__file__).parent / "browser" / "relay_echo.html").read_bytes()
KEY = "YnJvd3Nlci10ZXN0LWtleS1ub3QtYS1zZWNyZXQ="
ENTITY = "hyco"
RULE = "RootManageSharedAccessKey"

# What the page sends: keep in step with TEXT and binaryPayload() in relay_echo.html.
TEXT = "h\u00e9llo through the relay \u2713 \U0001f680"
BINARY = bytes((i * 7 + 3) % 256 for i in range(70000))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with serve_relay(default_config(port=0, key=KEY)) as running:
        yield running


def sender_token(relay: Relay, key: str = KEY) -> str:
    return create_relay_token(f"sb://{relay.address}/{ENTITY}", RULE, key, now=time.time())


async def read_request(stream: anyio.abc.SocketStream) -> tuple[bytes, bytes]:
    """One HTTP/1.1 request's first line and body (enough HTTP for the one page and its report)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *header_lines = head.split(b"\r\n")
    length = 0
    for line in header_lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive()
    return request_line, body


async def run_page(target: str, workdir: Path) -> dict[str, Any]:
    """Open the page in headless Chromium against ``target``; return what the page reported.

    The page is served from 127.0.0.1, so it has a real ``http://`` origin, and POSTs its outcome
    back there: Chromium's ``--dump-dom`` with a virtual time budget does not wait for WebSocket
    traffic, so it would read the page before the messages have gone round.
    """
    reports: list[dict[str, Any]] = []
    finished = anyio.Event()  # the page reported, or Chromium exited without reporting

    async def answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                request_line, body = await read_request(stream)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return  # a speculative connection Chromium opened and never used
            if request_line.startswith(b"GET /relay_echo.html"):
                status, page = "200 OK", PAGE
            elif request_line.startswith(b"POST /result "):
                reports.append(json.loads(body))
                finished.set()
                status, page = "204 No Content", b""
            else:
                status, page = "404 Not Found", b""
            await stream.send(
                f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n".encode()
                + page
            )

    server = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = server.extra(anyio.abc.SocketAttribute.local_port)
    url = f"http://127.0.0.1:{port}/relay_echo.html?target={quote(target, safe='')}"
    log = workdir / "chromium.log"
    async with server, anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, answer)
        with log.open("wb") as stderr:
            browser = await anyio.open_process(
                [
                    CHROMIUM,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    f"--user-data-dir={workdir / 'profile'}",
                    url,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

            async def watch_browser() -> None:
                await browser.wait()
                finished.set()

            async with browser:
                tasks.start_soon(watch_browser)
                with anyio.move_on_after(20):
                    await finished.wait()
                if browser.returncode is None:
                    browser.terminate()
                with anyio.move_on_after(10):
                    await browser.wait()
                if browser.returncode is None:
                    browser.kill()
        tasks.cancel_scope.cancel()
    # Chromium complains about the missing D-Bus at length; the rest is what explains a failure.
    lines = [line for line in log.read_text(errors="replace").splitlines() if "dbus" not in line]
    assert reports, "the page reported nothing; Chromium's log ends:\n" + "\n".join(lines[-30:])
    return reports[0]


@dataclass
class Seen:
    """What our listener saw of the browser's connection."""

    offered: tuple[str, ...] = ()
    suffix: str = ""
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    messages: list[str | bytes] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None


async def test_browser_websocket_reaches_the_listener_through_the_relay(
    relay: Relay, tmp_path: Path
) -> None:
    seen = Seen()

    async def choose_chat(context: AcceptContext) -> None:
        seen.offered = context.subprotocols
        seen.suffix = context.suffix
        seen.query = context.query
        seen.headers = {name.lower(): value for name, value in context.headers.items()}
        context.accept(subprotocol="chat")

    async def echo(ws: WebSocket) -> None:
        try:
            while True:
                message = await ws.recv()
                seen.messages.append(message)
                await ws.send(message)
        except ConnectionClosed as closed:
            seen.close_code, seen.close_reason = closed.code, closed.reason

    token = sender_token(relay)
    target = create_relay_send_uri(
        relay.address, ENTITY, token, secure=False, suffix="room/7", query="user=ada"
    )
    cs = relay.connection_string(ENTITY, RULE)
    async with Listener.from_connection_string(
        cs, accept_handler=choose_chat, connection_handler=echo
    ):
        outcome = await run_page(target, tmp_path)

    assert outcome["opened"], outcome
    assert not outcome["errored"]
    assert outcome["protocol"] == "chat"
    assert seen.offered == ("chat", "superchat")
    # The relay passes the suffix and the user's query on, and keeps the token to itself.
    assert seen.suffix == "/room/7"
    assert seen.query == "user=ada"
    assert token not in json.dumps(seen.headers)
    assert seen.headers["origin"].startswith("http://127.0.0.1:")
    assert seen.messages == [TEXT, BINARY]
    echoed = outcome["received"]
    assert len(echoed) == 2
    assert echoed[0] == {"type": "text", "data": TEXT}
    assert echoed[1]["type"] == "binary"
    assert base64.b64decode(echoed[1]["base64"]) == BINARY
    assert (seen.close_code, seen.close_reason) == (4000, "browser done")
    assert outcome["close"] == {"code": 4000, "reason": "browser done", "wasClean": True}


async def test_browser_with_a_wrong_token_is_refused_with_401(
    relay: Relay, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hyco.relay")
    accepted: list[AcceptContext] = []

    async def remember(context: AcceptContext) -> None:
        accepted.append(context)

    wrong = sender_token(relay, key="bm90LXRoZS1yZWxheS1rZXk=")
    target = create_relay_send_uri(relay.address, ENTITY, wrong, secure=False)
    cs = relay.connection_string(ENTITY, RULE)
    async with Listener.from_connection_string(cs, accept_handler=remember):
        outcome = await run_page(target, tmp_path)

    assert not outcome["opened"]
    assert outcome["errored"]
    assert outcome["close"]["code"] == 1006
    assert not outcome["close"]["wasClean"]
    assert accepted == []
    refusals = [
        record.getMessage()
        for record in caplog.records
        if record.name == "hyco.relay" and record.getMessage().startswith("refused GET ")
    ]
    assert len(refusals) == 1
    assert ": 401 Invalid token" in refusals[0]
    assert wrong.split("sig=")[1].split("&")[0] not in refusals[0]

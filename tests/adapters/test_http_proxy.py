"""``expose_http``, a reverse proxy through the hybrid connection, in front of real servers
(FastAPI on uvicorn, nginx serving files, a ``websockets`` server, raw sockets that misbehave),
with httpx and websockets as senders through the local relay, over real sockets on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h11
import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from hyco_adapters.http_proxy import InvalidUpstreamError, expose_http, parse_upstream
from hyco_conformance.harness import ROOT_KEY, relay_config
from hyco_core import (
    ListenerStatus,
    ListenerStatusChanged,
    create_relay_send_uri,
    create_relay_token,
)
from hyco_relay.config import parse_config
from hyco_relay.server import Relay, serve_relay
from hyco_transports.httpx import RelayAuth
from tests.cli import hyco_relay, run_hyco, start_hyco, stop

from .apps import fastapi_app

pytestmark = pytest.mark.anyio

ENTITY = "hc1"
MIB = 1024 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with serve_relay(parse_config(relay_config(request_timeout=10.0))) as running:
        yield running


def connection_string(relay: Relay) -> str:
    return relay.connection_string(ENTITY, "root")


def token(relay: Relay) -> dict[str, str]:
    value = create_relay_token(f"sb://{relay.address}/{ENTITY}", "root", ROOT_KEY, now=time.time())
    return {"ServiceBusAuthorization": value}


def sender(relay: Relay) -> httpx.AsyncClient:
    auth = RelayAuth.from_connection_string(connection_string(relay))
    return httpx.AsyncClient(base_url=auth.url().rstrip("/"), auth=auth, timeout=30)


def ws_uri(relay: Relay, suffix: str, query: str = "") -> str:
    return create_relay_send_uri(relay.address, ENTITY, suffix=suffix, query=query, secure=False)


@asynccontextmanager
async def proxying(relay: Relay, upstream: str, **options: Any) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tasks:
        await tasks.start(partial(expose_http, connection_string(relay), upstream, **options))
        yield
        tasks.cancel_scope.cancel()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def uvicorn_serving(app: Any) -> Iterator[str]:
    """``app`` on real uvicorn in a thread of its own; yields its ``http://`` address."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        listening.close()


# An upstream that says what it was asked: method, raw path and query, headers, body digest.


uploads: list[int | str] = []  # what inspect_app read of each body: its size, or "cut"


async def inspect_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]
            await send({"type": f"{kind}.complete"})
            if kind == "lifespan.shutdown":
                return
    digest, size, more = hashlib.sha256(), 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            uploads.append("cut")
            return
        digest.update(message.get("body", b""))
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    uploads.append(size)
    if scope["path"].endswith("/slow"):
        await anyio.sleep(5)
    seen = {
        "method": scope["method"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "sha256": digest.hexdigest(),
        "size": size,
    }
    body = json.dumps(seen).encode()
    headers = [(b"content-type", b"application/json"), (b"connection", b"x-hop")]
    headers += [(b"x-hop", b"for this hop only"), (b"keep-alive", b"timeout=5")]
    if scope["path"].endswith("/login"):
        headers.append((b"set-cookie", b"session=first-senders; Path=/"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def inspector() -> Iterator[str]:
    with uvicorn_serving(inspect_app) as address:
        yield address


def header(seen: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in seen["headers"] if key == name]


# -- in front of FastAPI on uvicorn ------------------------------------------------------------


@pytest.fixture(scope="module")
def fastapi_upstream() -> Iterator[str]:
    with uvicorn_serving(fastapi_app.app) as address:
        yield address


async def test_fastapi_routes_streams_and_uploads_pass_through(
    relay: Relay, fastapi_upstream: str
) -> None:
    upload = os.urandom(5 * MIB + 7)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(upload), 256 * 1024):
            yield upload[start : start + 256 * 1024]

    async with proxying(relay, fastapi_upstream), sender(relay) as client:
        item = await client.get("/items/7", params={"q": "x y"})
        assert item.status_code == 200
        assert item.json()["item_id"] == 7
        assert item.json()["q"] == "x y"
        assert item.json()["root_path"] == ""  # the upstream is served at its own root
        stream = await client.get("/stream", params={"mib": 6})
        assert stream.status_code == 200
        assert stream.content == fastapi_app.CHUNK * 6 * 16
        digest = await client.post("/sha256", content=pieces())
        assert digest.json() == {"sha256": hashlib.sha256(upload).hexdigest(), "size": len(upload)}
        kind = {"Content-Type": "application/x-y"}
        small = await client.post("/echo", content=b"tiny", headers=kind)
        assert (small.content, small.headers["content-type"]) == (b"tiny", kind["Content-Type"])
        missing = await client.get("/no/such/route")
        assert missing.status_code == 404
        assert missing.json() == {"detail": "Not Found"}


async def test_fastapi_websocket_echo_subprotocol_and_close_codes(
    relay: Relay, fastapi_upstream: str
) -> None:
    async with proxying(relay, fastapi_upstream):
        async with ws_connect(
            ws_uri(relay, "ws"),
            additional_headers=token(relay),
            subprotocols=[Subprotocol("v1"), Subprotocol("v2")],
        ) as ws:
            assert ws.subprotocol == "v2"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01" * 100_000)
            assert await ws.recv() == b"\x00\x01" * 100_000
            await ws.send("close:4001")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye")
        fastapi_app.ws_disconnects.clear()
        async with ws_connect(ws_uri(relay, "ws"), additional_headers=token(relay)) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            await ws.close(4002, "done")
        with anyio.fail_after(10):
            while fastapi_app.ws_disconnects != [(4002, "done")]:
                await anyio.sleep(0.01)


# -- in front of nginx serving files ---------------------------------------------------------


def nginx_binary() -> str | None:
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(path)),
        None,
    )
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "nginx"],  # noqa: S607 - the system's apt-get
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=False,
            timeout=300,
        )
        found = shutil.which("nginx") or (
            "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
        )
    return found


NGINX_CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    types {{ text/plain txt; application/octet-stream bin; }}
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
    }}
}}
"""


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """nginx from the system, on a free port, serving ``www`` under ``tmp_path``."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed and cannot be installed here")
    (tmp_path / "www").mkdir()
    port = free_port()
    config = tmp_path / "nginx.conf"
    config.write_text(NGINX_CONFIG.format(root=tmp_path, port=port))
    process = subprocess.Popen(  # noqa: S603 - the system's nginx
        [binary, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", tmp_path / "www"
    finally:
        process.terminate()
        process.communicate(timeout=10)


async def test_nginx_files_large_missing_head_and_range(
    relay: Relay, nginx: tuple[str, Path]
) -> None:
    address, www = nginx
    large = os.urandom(7 * MIB + 3)
    (www / "files").mkdir()
    (www / "files" / "large.bin").write_bytes(large)
    (www / "files" / "note.txt").write_text("a small note\n")
    async with proxying(relay, address), sender(relay) as client:
        whole = await client.get("/files/large.bin")
        assert whole.status_code == 200
        assert hashlib.sha256(whole.content).hexdigest() == hashlib.sha256(large).hexdigest()
        missing = await client.get("/files/absent.txt")
        assert missing.status_code == 404
        assert "nginx" in missing.headers["server"]
        head = await client.head("/files/note.txt")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-type"] == "text/plain"
        assert "etag" in head.headers
        large_head = await client.head("/files/large.bin")  # too large to travel inline
        assert (large_head.status_code, large_head.content) == (200, b"")
        part = await client.get("/files/large.bin", headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 1000-1999/{len(large)}"
        assert part.content == large[1000:2000]
        # A header nginx will not take (its buffers hold 8 KiB): its refusal, passed back.
        choked = await client.get("/files/note.txt", headers={"X-Big": "b" * 20_000})
        assert choked.status_code == 400
        assert "Request Header Or Cookie Too Large" in choked.text
        assert (await client.get("/files/note.txt")).text == "a small note\n"


# -- in front of a websockets server ---------------------------------------------------------


async def ws_upstream_handler(connection: ServerConnection) -> None:
    async for message in connection:
        if message == "close please":
            await connection.close(4321, "upstream says bye")
            return
        await connection.send(message)


def ws_refuse(connection: ServerConnection, request: Request) -> Response | None:
    if request.path.startswith("/refuse"):
        return connection.respond(403, "not for you\n")
    return None


@asynccontextmanager
async def ws_upstream(
    handler: Callable[[ServerConnection], Awaitable[None]] = ws_upstream_handler,
) -> AsyncIterator[tuple[str, list[ServerConnection]]]:
    connections: list[ServerConnection] = []

    async def tracked(connection: ServerConnection) -> None:
        connections.append(connection)
        await handler(connection)

    def prefer_v2(connection: ServerConnection, offered: Sequence[str]) -> Subprotocol | None:
        return next((Subprotocol(name) for name in ("chat.v2", "chat.v1") if name in offered), None)

    async with serve(
        tracked,
        "127.0.0.1",
        0,
        select_subprotocol=prefer_v2,
        process_request=ws_refuse,
        max_size=None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}", connections


async def test_websocket_messages_subprotocol_and_close_codes_both_ways(relay: Relay) -> None:
    async with ws_upstream() as (address, connections), proxying(relay, address + "/base"):
        async with ws_connect(
            ws_uri(relay, "chat/room", "x=1"),
            additional_headers={**token(relay), "X-Custom": "yes"},
            subprotocols=[Subprotocol("chat.v1"), Subprotocol("chat.v2")],
            max_size=None,
        ) as ws:
            assert ws.subprotocol == "chat.v2"  # the upstream's choice
            upstream = connections[-1]
            assert upstream.request is not None
            assert upstream.request.path == "/base/chat/room?x=1"
            assert upstream.request.headers["X-Custom"] == "yes"
            assert upstream.request.headers["Host"] == address.removeprefix("http://")
            assert upstream.request.headers["X-Forwarded-Proto"] == "http"
            await ws.send("text message")
            assert await ws.recv() == "text message"
            big = os.urandom(3 * MIB)
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send("close please")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4321, "upstream says bye")

        async with ws_connect(ws_uri(relay, "again"), additional_headers=token(relay)) as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
            upstream = connections[-1]
            await ws.close(4100, "sender says bye")
        with anyio.fail_after(10):
            await upstream.wait_closed()
        assert (upstream.close_code, upstream.close_reason) == (4100, "sender says bye")


async def test_an_upstream_refusing_the_upgrade_refuses_the_sender(relay: Relay) -> None:
    async with ws_upstream() as (address, _), proxying(relay, address):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(ws_uri(relay, "refuse"), additional_headers=token(relay)):
                pass
        assert refused.value.response.status_code == 403
        assert refused.value.response.reason_phrase.startswith("Forbidden (the upstream refused)")
    async with proxying(relay, f"http://127.0.0.1:{free_port()}"):
        with pytest.raises(InvalidStatus) as unreachable:
            async with ws_connect(ws_uri(relay, "x"), additional_headers=token(relay)):
                pass
    assert unreachable.value.response.status_code == 502
    assert "could not open a WebSocket to the upstream (connection refused)" in (
        unreachable.value.response.reason_phrase
    )


async def test_a_stalled_websocket_sender_holds_up_nobody_and_is_let_go(relay: Relay) -> None:
    async def flood(connection: ServerConnection) -> None:
        if connection.request is not None and connection.request.path == "/flood":
            with suppress(ConnectionClosed):
                while True:
                    await connection.send(b"x" * 65536)
        else:
            await ws_upstream_handler(connection)

    async with ws_upstream(flood) as (address, connections), proxying(relay, address):
        stalled = await anyio.connect_tcp("127.0.0.1", int(relay.address.split(":")[1]))
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        await stalled.send(
            f"GET /$hc/{ENTITY}/flood?sb-hc-action=connect HTTP/1.1\r\nHost: {relay.address}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n"
            f"ServiceBusAuthorization: {token(relay)['ServiceBusAuthorization']}\r\n\r\n".encode()
        )
        answer = await stalled.receive()
        assert answer.startswith(b"HTTP/1.1 101"), answer
        await anyio.sleep(1)  # the flood fills every buffer on the way, then waits
        with anyio.fail_after(10):
            async with ws_connect(ws_uri(relay, "other"), additional_headers=token(relay)) as ws:
                await ws.send("still here")
                assert await ws.recv() == "still here"
            async with sender(relay) as client:
                assert (await client.get("/anything")).status_code in (400, 404, 426)
        flooded = connections[0]
        await stalled.aclose()
        with anyio.fail_after(20):
            await flooded.wait_closed()


# -- requests and headers ----------------------------------------------------------------------


async def test_a_large_upload_is_streamed_to_the_upstream_intact(
    relay: Relay, inspector: str
) -> None:
    upload = os.urandom(6 * MIB + 1)
    async with proxying(relay, inspector), sender(relay) as client:
        seen = (await client.put("/upload", content=upload)).json()
        small = (await client.post("/small", content=b"0123456789")).json()
        empty = (await client.get("/empty")).json()
    assert (seen["method"], seen["size"]) == ("PUT", len(upload))
    assert seen["sha256"] == hashlib.sha256(upload).hexdigest()
    assert header(small, "content-length") == ["10"]  # a whole body goes with its length
    assert small["sha256"] == hashlib.sha256(b"0123456789").hexdigest()
    assert header(empty, "content-length") == header(empty, "transfer-encoding") == []


async def test_headers_are_rewritten_for_the_upstream(relay: Relay, inspector: str) -> None:
    upstream_host = inspector.removeprefix("http://")
    async with proxying(relay, inspector + "/app/"), sender(relay) as client:
        response = await client.get(
            "/x/y",
            params={"q": "1 2", "r": "é"},
            headers={
                "X-Forwarded-For": "203.0.113.9",
                "X-Forwarded-Host": "spoofed.example",
                "X-Forwarded-Proto": "gopher",
                "Forwarded": "for=203.0.113.9",
                "X-Custom": "kept",
            },
        )
        root = (await client.get("")).json()
    seen = response.json()
    assert seen["raw_path"] == "/app/x/y"
    assert seen["query"] == "q=1+2&r=%C3%A9"
    assert header(seen, "host") == [upstream_host]
    assert header(seen, "x-forwarded-for") == ["203.0.113.9, 127.0.0.1"]
    assert header(seen, "x-forwarded-host") == [relay.address]
    assert header(seen, "x-forwarded-proto") == ["http"]
    assert header(seen, "forwarded") == [
        f'for=203.0.113.9, for=127.0.0.1;host="{relay.address}";proto=http'
    ]
    assert header(seen, "x-custom") == ["kept"]
    assert header(seen, "servicebusauthorization") == []  # the relay's token stays behind
    assert root["raw_path"] == "/app/"
    # The upstream's hop-by-hop headers, and those its Connection header names, stay behind.
    assert "x-hop" not in response.headers
    assert "keep-alive" not in response.headers
    assert response.headers["via"] == "1.1 localhost"


async def test_a_cookie_the_upstream_sets_is_never_sent_for_another_sender(
    relay: Relay, inspector: str
) -> None:
    async with proxying(relay, inspector), sender(relay) as first, sender(relay) as second:
        login = await first.get("/login")
        assert login.headers["set-cookie"] == "session=first-senders; Path=/"
        seen = (await second.get("/other")).json()
    assert header(seen, "cookie") == []


async def test_without_strip_prefix_and_with_preserve_host(relay: Relay, inspector: str) -> None:
    options = {"strip_prefix": False, "preserve_host": True}
    async with proxying(relay, inspector, **options), sender(relay) as client:
        seen = (await client.get("/x", params={"a": "b"})).json()
        root = (await client.get("")).json()
    assert (seen["raw_path"], seen["query"]) == (f"/{ENTITY}/x", "a=b")
    assert root["raw_path"] == f"/{ENTITY}/"
    assert header(seen, "host") == [relay.address]


async def test_an_unreachable_upstream_gives_502_with_a_json_reason(relay: Relay) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    async with proxying(relay, down), sender(relay) as client:
        response = await client.get("/x")
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "could not connect to the upstream (connection refused)",
        "upstream": down,
    }


async def test_a_slow_upstream_gives_504_before_the_relay_gives_up(
    relay: Relay, inspector: str
) -> None:
    async with proxying(relay, inspector, response_timeout=0.5), sender(relay) as client:
        started = time.monotonic()
        response = await client.get("/slow")
        waited = time.monotonic() - started
        fast = await client.get("/fast")
    assert response.status_code == 504
    assert "did not answer within 0.5 s" in response.json()["error"]
    assert response.json()["upstream"] == inspector
    assert waited < 4  # the upstream takes 5 s
    assert fast.status_code == 200


@asynccontextmanager
async def raw_upstream(answer: bytes) -> AsyncIterator[str]:
    """A server that reads a request head, writes ``answer`` and hangs up."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
            await stream.send(answer)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"
        tasks.cancel_scope.cancel()


async def test_a_response_cut_mid_body_is_cut_for_the_sender(relay: Relay) -> None:
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"
    async with raw_upstream(short) as address, proxying(relay, address), sender(relay) as client:
        response = await client.get("/short")
    # Small enough to travel whole, the body is read before answering: its loss is a 502.
    assert response.status_code == 502
    assert "broke off" in response.json()["error"]

    streamed = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 100_000
    async with raw_upstream(streamed) as address, proxying(relay, address), sender(relay) as client:
        with pytest.raises(httpx.TransportError):
            await client.get("/streamed")


# -- hostile senders -----------------------------------------------------------------------------


async def raw_request(relay: Relay, head: str) -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, without the blank line) to the relay as is,
    with the token added; the status and body of the answer."""
    async with await anyio.connect_tcp("127.0.0.1", int(relay.address.split(":")[1])) as stream:
        auth = token(relay)["ServiceBusAuthorization"]
        request = f"{head}\r\nHost: {relay.address}\r\nServiceBusAuthorization: {auth}\r\n"
        await stream.send((request + "Connection: close\r\n\r\n").encode("utf-8"))
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        status, body = 0, b""
        with anyio.fail_after(20):
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    try:
                        client.receive_data(await stream.receive())
                    except anyio.EndOfStream:
                        client.receive_data(b"")
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return status, body


async def test_dot_segments_and_absolute_targets_never_leave_the_upstream_base(
    relay: Relay, inspector: str
) -> None:
    async with proxying(relay, inspector + "/app"):
        climbing = await raw_request(relay, f"GET /{ENTITY}/a/../../../secret?x=1 HTTP/1.1")
        encoded = await raw_request(relay, f"GET /{ENTITY}/%2e%2e/%2E%2E/secret HTTP/1.1")
        slashed = await raw_request(relay, f"GET /{ENTITY}/..%2F..%2Fsecret HTTP/1.1")
        backslashed = await raw_request(relay, f"GET /{ENTITY}/..%5Csecret HTTP/1.1")
        absolute = await raw_request(relay, f"GET http://evil.example/{ENTITY}/b HTTP/1.1")
    assert climbing[0] == 200
    assert json.loads(climbing[1])["raw_path"] == "/app/secret"
    assert json.loads(encoded[1])["raw_path"] == "/app/secret"
    for status, body in (slashed, backslashed):
        assert status == 400
        assert "climbs out" in json.loads(body)["error"]
    if absolute[0] == 200:  # the relay may refuse an absolute target itself
        seen = json.loads(absolute[1])
        assert seen["raw_path"] == "/app/b"
        assert header(seen, "host") == [inspector.removeprefix("http://")]


async def test_headers_an_upstream_may_choke_on(relay: Relay, inspector: str) -> None:
    async with proxying(relay, inspector):
        status, body = await raw_request(
            relay, "GET /hc1/h HTTP/1.1\r\nX-Name: café ☕\r\nX-Empty:"
        )
        assert status == 200
        seen = json.loads(body)
        assert header(seen, "x-name") == ["café ☕".encode().decode("latin-1")]
        assert header(seen, "host") == [inspector.removeprefix("http://")]
        many = "\r\n".join(f"X-Header-{number}: {'v' * 100}" for number in range(400))
        status, body = await raw_request(relay, f"GET /hc1/many HTTP/1.1\r\n{many}")
        assert status == 200
        assert len([name for name, _ in json.loads(body)["headers"] if "x-header" in name]) == 400
        async with sender(relay) as client:
            assert (await client.get("/after")).status_code == 200


async def test_an_upload_cut_by_its_sender_is_cut_for_the_upstream(
    relay: Relay, inspector: str
) -> None:
    async with proxying(relay, inspector):
        port = int(relay.address.split(":")[1])
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            auth = token(relay)["ServiceBusAuthorization"]
            uploads.clear()
            await stream.send(
                f"POST /{ENTITY}/cut HTTP/1.1\r\nHost: {relay.address}\r\n"
                f"ServiceBusAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            )
            for _ in range(4):
                await stream.send(f"{100_000:x}\r\n".encode() + b"u" * 100_000 + b"\r\n")
                await anyio.sleep(0.3)  # the upstream has the request and some of its body
        with anyio.fail_after(20):
            while not uploads:
                await anyio.sleep(0.05)
    assert uploads == ["cut"]


# -- the entry point and the command -------------------------------------------------------------


def test_upstream_urls_are_checked_in_one_place() -> None:
    assert parse_upstream("http://127.0.0.1:8080/app/").url == "http://127.0.0.1:8080/app"
    assert parse_upstream("HTTPS://[::1]/").authority == "[::1]"
    for bad, says in (
        ("ftp://host", "http:// or https://"),
        ("127.0.0.1:8080", "http:// or https://"),
        ("http://", "with a host"),
        ("http://host:99999", "valid port"),
        ("http://user:secret@host", "user name or password"),
        ("http://host/?q=1", "?query"),
        ("http://host/a/../b", "'..'"),
    ):
        with pytest.raises(InvalidUpstreamError, match=None) as raised:
            parse_upstream(bad)
        assert says in str(raised.value), bad
        assert "secret" not in str(raised.value)


async def test_on_status_hears_the_listener_online(relay: Relay, inspector: str) -> None:
    heard: list[ListenerStatus] = []

    def on_status(event: ListenerStatusChanged) -> None:
        heard.append(event.status)

    async with proxying(relay, inspector, on_status=on_status):
        assert ListenerStatus.ONLINE in heard


def test_the_command_proxies_and_stops_on_ctrl_c(tmp_path: Path, inspector: str) -> None:
    with hyco_relay(cwd=tmp_path) as running:
        env = {"HYCO_CONNECTION_STRING": running.listener}
        process = start_hyco("expose", "--http", inspector + "/app", cwd=tmp_path, env=env)
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert line == (
                f"online: http://{running.address}/hyco -> {inspector}/app; Ctrl-C to stop"
            )
            auth = RelayAuth.from_connection_string(running.listener)
            response = httpx.get(auth.url("/x"), auth=auth, timeout=30)
            assert response.status_code == 200
            assert response.json()["raw_path"] == "/app/x"
        finally:
            _, err = stop(process)
        assert process.returncode == 130, err
        assert "Traceback" not in err


def test_the_command_refuses_a_bad_url_and_bad_combinations(tmp_path: Path) -> None:
    env = {"HYCO_CONNECTION_STRING": "Endpoint=sb://127.0.0.1:1/;EntityPath=x"}
    bad = run_hyco("expose", "--http", "ftp://example.com", cwd=tmp_path, env=env)
    assert bad.returncode == 2
    (line,) = bad.stderr.strip().splitlines()
    assert line.startswith("hyco expose: --http: 'ftp://example.com' is not an http:// or")
    both = run_hyco("expose", "--http", "http://x", "--target", "a=b:1", cwd=tmp_path, env=env)
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    neither = run_hyco("expose", cwd=tmp_path, env=env)
    assert neither.returncode == 2
    assert "one of the arguments --target --http is required" in neither.stderr

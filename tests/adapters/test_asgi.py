"""ASGI apps behind the local relay: FastAPI routes and a plain ASGI app for the edge cases, with
httpx and websockets as senders, over real sockets on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import hyco_adapters.asgi.server
from hyco_adapters.asgi import (
    AppImportError,
    ASGIApp,
    ClientDisconnected,
    Message,
    Receive,
    Scope,
    Send,
    load_app,
    run,
    serve,
    serve_workers,
)
from hyco_conformance.harness import ROOT_KEY, relay_config
from hyco_core import (
    AuthorizationError,
    ConnectionLostError,
    EndpointNotFoundError,
    HycoError,
    ListenerStatusChanged,
    LocalProtocolError,
    create_relay_send_uri,
    create_relay_token,
)
from hyco_relay.config import parse_config
from hyco_relay.server import Relay, serve_relay

from .apps import fastapi_app, raw_app

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
FASTAPI_APP = "tests.adapters.apps.fastapi_app:app"

Test = TypeVar("Test", bound=Callable[..., Any])

CONFIG = relay_config(request_timeout=10.0, rendezvous_timeout=5.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def isolated(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run ``scenario`` (a function of this module) in a fresh interpreter with its own relay.

    For the known bugs: they stop the listener or the relay halfway, which can leave either
    hanging; in a subprocess they cannot take the rest of the tests with them.
    """
    code = f"import anyio; from tests.adapters.test_asgi import {scenario.__name__}; "
    code += f"anyio.run({scenario.__name__})"
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]


@asynccontextmanager
async def own_relay() -> AsyncIterator[Relay]:
    async with serve_relay(parse_config(CONFIG)) as running:
        yield running


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with own_relay() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_apps() -> None:
    raw_app.observed.clear()
    fastapi_app.events.clear()
    fastapi_app.ws_disconnects.clear()
    fastapi_app.stream_ends.clear()


def connection_string(relay: Relay, entity: str = "hc1") -> str:
    return relay.connection_string(entity, "root")


def token(relay: Relay, entity: str = "hc1") -> dict[str, str]:
    value = create_relay_token(f"sb://{relay.address}/{entity}", "root", ROOT_KEY, now=time.time())
    return {"ServiceBusAuthorization": value}


def sender(relay: Relay, entity: str = "hc1", *, keep_alive: bool = False) -> httpx.AsyncClient:
    """An HTTP sender. Without ``keep_alive`` each request has a connection of its own, so it
    reaches the listener as a first request does (inline when small), not over a rendezvous
    that an earlier large request or response left open."""
    return httpx.AsyncClient(
        base_url=f"http://{relay.address}/{entity}",
        headers=token(relay, entity),
        timeout=30,
        limits=httpx.Limits(max_keepalive_connections=None if keep_alive else 0),
    )


def ws_uri(relay: Relay, suffix: str, query: str = "") -> str:
    return create_relay_send_uri(relay.address, "hc1", suffix=suffix, query=query, secure=False)


@asynccontextmanager
async def serving(
    relay: Relay, app: ASGIApp, entity: str = "hc1", **options: Any
) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tasks:
        await tasks.start(partial(serve, app, connection_string(relay, entity), **options))
        yield
        tasks.cancel_scope.cancel()


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


async def refused(uri: str, headers: dict[str, str]) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as caught:
        async with ws_connect(uri, additional_headers=headers):
            pass
    return caught.value.response.status_code, caught.value.response.reason_phrase


# -- HTTP through FastAPI ----------------------------------------------------------------------


async def test_fastapi_routes_work_unchanged_as_if_mounted_at_the_hybrid_connection(
    relay: Relay,
) -> None:
    async with serving(relay, fastapi_app.app), sender(relay) as client:
        item = await client.get("/items/7", params={"q": "x y"})
        missing = await client.get("/nowhere")
    assert item.status_code == 200
    assert item.json() == {
        "item_id": 7,
        "q": "x y",
        "root_path": "/hc1",
        "url": f"http://{relay.address}/hc1/items/7?q=x+y",
        "url_for": f"http://{relay.address}/hc1/items/7",
        "greeting": "hello from the lifespan",
    }
    assert "via" in item.headers
    assert missing.status_code == 404


async def test_post_bodies_small_and_large_are_echoed(relay: Relay) -> None:
    big = os.urandom(1 << 20)
    async with serving(relay, fastapi_app.app), sender(relay) as client:
        small = await client.post(
            "/echo", content=b"hello", headers={"content-type": "application/x-a"}
        )
        large = await client.post("/echo", content=big)
    assert (small.status_code, small.content) == (200, b"hello")
    assert small.headers["content-type"] == "application/x-a"
    assert large.content == big


async def test_a_streaming_response_of_several_mib_arrives_whole(relay: Relay) -> None:
    digest = hashlib.sha256()
    size = 0
    async with (
        serving(relay, fastapi_app.app),
        sender(relay) as client,
        client.stream("GET", "/stream", params={"mib": 8}) as response,
    ):
        async for piece in response.aiter_bytes():
            digest.update(piece)
            size += len(piece)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert size == 8 << 20
    assert digest.hexdigest() == hashlib.sha256(fastapi_app.CHUNK * 128).hexdigest()


async def test_a_streamed_upload_reaches_the_app_piece_by_piece(relay: Relay) -> None:
    async def upload() -> AsyncIterator[bytes]:
        for _ in range(128):
            yield fastapi_app.CHUNK

    async with serving(relay, fastapi_app.app), sender(relay) as client:
        response = await client.post("/sha256", content=upload())
    assert response.json() == {
        "sha256": hashlib.sha256(fastapi_app.CHUNK * 128).hexdigest(),
        "size": 8 << 20,
    }


async def test_a_small_request_body_can_be_streamed_back(relay: Relay) -> None:
    async with serving(relay, fastapi_app.app), sender(relay) as client:
        response = await client.post("/relay-body", content=b"z" * 1000)
    assert response.content == b"z" * 1000


async def stream_a_large_body_back() -> None:
    async with own_relay() as relay, serving(relay, fastapi_app.app), sender(relay) as client:
        response = await client.post("/relay-body", content=b"z" * (1 << 20))
    assert response.content == b"z" * (1 << 20)


def test_a_large_request_body_can_be_streamed_back() -> None:
    isolated(stream_a_large_body_back)


async def test_set_cookie_keeps_only_the_last_cookie(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(relay, fastapi_app.app), sender(relay) as client:
        response = await client.get("/cookies")
    assert response.text == "two cookies"
    assert dict(response.cookies) == {"second": "2"}
    assert "2 were set, the last one is sent" in caplog.text


async def test_a_keep_alive_sender_can_ask_again_after_a_large_response(relay: Relay) -> None:
    async with serving(relay, raw_app.app), sender(relay, keep_alive=True) as client:
        large = await client.get("/pieces?200000,200000")
        small = await client.get("/pieces?10,10")
    assert len(large.content) == 200_000
    assert small.content == b"aaaaabbbbb"


# -- the scope ---------------------------------------------------------------------------------


async def test_the_http_scope_describes_the_request_as_the_sender_made_it(relay: Relay) -> None:
    headers = [("X-Rep", "a"), ("X-Rep", "b"), ("X-Case", "Up")]
    async with serving(relay, raw_app.app), sender(relay) as client:
        await client.get("/scope/caf%C3%A9", params={"a": "1", "b": " "}, headers=headers)
    (scope,) = raw_app.observed
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["root_path"] == "/hc1"
    assert scope["path"] == "/hc1/scope/café"
    assert scope["raw_path"] == b"/hc1/scope/caf%C3%A9"
    assert scope["query_string"] == b"a=1&b=+"
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ("127.0.0.1", relay.port)
    received = dict(scope["headers"])
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert received[b"x-rep"] == b"a, b"
    assert received[b"x-case"] == b"Up"
    assert received[b"host"] == relay.address.encode()
    assert b"serviceBusAuthorization".lower() not in received
    assert "state" not in scope


async def test_root_path_is_the_whole_entity_path_or_what_is_given(relay: Relay) -> None:
    async with serving(relay, raw_app.app, "deep/path"), sender(relay, "deep/path") as client:
        assert (await client.get("/scope/x")).status_code == 200
    async with serving(relay, raw_app.app, root_path="/api/"), sender(relay) as client:
        assert (await client.get("/scope/x")).status_code == 200
    deep, custom = raw_app.observed
    assert (deep["root_path"], deep["path"]) == ("/deep/path", "/deep/path/scope/x")
    assert (custom["root_path"], custom["path"]) == ("/api", "/api/scope/x")


# -- responses ---------------------------------------------------------------------------------


async def test_hop_by_hop_headers_are_dropped_and_repeated_ones_joined(relay: Relay) -> None:
    async with serving(relay, raw_app.app), sender(relay) as client:
        response = await client.get("/headers")
        head = await client.head("/headers")
        no_content = await client.get("/no-content")
    assert (response.status_code, response.content) == (201, b"ok")
    assert response.headers["x-multi"] == "a, b"
    assert response.headers.get_list("set-cookie") == ["second=2; Path=/"]
    assert response.headers["content-length"] == "2"
    assert "keep-alive" not in response.headers
    assert (head.status_code, head.content) == (201, b"")
    assert (no_content.status_code, no_content.content) == (204, b"")


async def test_bodies_are_inline_when_declared_small_and_streamed_otherwise(relay: Relay) -> None:
    async with serving(relay, raw_app.app), sender(relay) as client:
        small = await client.get("/pieces?10,10")
        declared_large = await client.get("/pieces?200000,200000")
        larger_than_declared = await client.get("/pieces?10,100000")
    assert small.content == b"aaaaabbbbb"
    assert small.headers["content-length"] == "10"
    assert declared_large.content == b"a" * 100_000 + b"b" * 100_000
    assert declared_large.headers["transfer-encoding"] == "chunked"
    assert larger_than_declared.content == b"a" * 50_000 + b"b" * 50_000


async def test_the_app_hears_http_disconnect_once_its_response_is_sent(relay: Relay) -> None:
    async with serving(relay, raw_app.app), sender(relay) as client:
        inline = await client.post("/disconnect", content=b"hi")
        streamed = await client.post("/disconnect", content=b"x" * 100_000)
        await eventually(lambda: len(raw_app.observed) == 2)
    assert inline.text == "2 bytes"
    assert streamed.text == "100000 bytes"
    assert raw_app.observed == ["http.disconnect"] * 2


async def answer_without_reading_a_large_body() -> None:
    async with own_relay() as relay, serving(relay, raw_app.app), sender(relay) as client:
        unread = await client.post("/unread-body", content=b"y" * (1 << 20))
        after = await client.get("/scope")
        await eventually(lambda: len(raw_app.observed) == 2)
    assert unread.status_code == 413
    assert after.status_code == 200
    assert raw_app.observed[0] == "http.disconnect"


def test_an_app_may_answer_without_reading_a_large_body() -> None:
    isolated(answer_without_reading_a_large_body)


async def test_an_app_failing_before_its_response_gives_500_without_the_error_text(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    routes = ["/raise-before", "/no-response", "/unfinished", "/bad-header", "/bad-status"]
    async with serving(relay, raw_app.app), sender(relay) as client:
        failures = [await client.get(route) for route in routes]
        after = await client.get("/scope")
    for response in failures:
        assert response.status_code == 500
        assert response.text == "Internal Server Error"
    assert after.status_code == 200
    assert raw_app.SECRET in caplog.text
    assert "returned without a response" in caplog.text
    assert "returned before finishing" in caplog.text


async def fail_after_the_response_started() -> None:
    async with own_relay() as relay, serving(relay, raw_app.app), sender(relay) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/raise-after")
        assert (await client.get("/scope")).status_code == 200


def test_an_app_failing_after_its_response_started_cuts_the_stream() -> None:
    isolated(fail_after_the_response_started)


# -- lifespan ----------------------------------------------------------------------------------


async def test_lifespan_starts_before_the_listener_opens_and_stops_after_it_closed(
    relay: Relay,
) -> None:
    seen: list[tuple[str, int]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                seen.append((message["type"], relay.listener_count("localhost", "hc1")))
                if message["type"] == "lifespan.startup":
                    scope["state"]["db"] = "connected"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": scope["state"]["db"].encode()})

    async with serving(relay, app), sender(relay) as client:
        response = await client.get("/")
        seen.append(("serving", relay.listener_count("localhost", "hc1")))
    assert response.text == "connected"
    assert seen == [("lifespan.startup", 0), ("serving", 1), ("lifespan.shutdown", 0)]


async def test_fastapi_lifespan_events_run_once_each(relay: Relay) -> None:
    async with serving(relay, fastapi_app.app):
        assert fastapi_app.events == ["startup"]
    assert fastapi_app.events == ["startup", "shutdown"]


async def test_a_failed_startup_raises_and_the_listener_never_opens(relay: Relay) -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    cache_up = False

    @asynccontextmanager
    async def broken(app: FastAPI) -> AsyncIterator[None]:
        if not cache_up:
            raise RuntimeError("no cache")
        yield

    with pytest.raises(HycoError, match="startup failed: no database"):
        await serve(failing, connection_string(relay))
    with pytest.raises(HycoError, match="no cache"):
        await serve(FastAPI(lifespan=broken), connection_string(relay))
    assert relay.listener_count("localhost", "hc1") == 0


async def test_lifespan_auto_tolerates_apps_without_it_and_on_requires_it(relay: Relay) -> None:
    async with serving(relay, raw_app.app, lifespan="auto"), sender(relay) as client:
        assert (await client.get("/scope")).status_code == 200
    with pytest.raises(HycoError, match="it raised RuntimeError"):
        await serve(raw_app.app, connection_string(relay), lifespan="on")

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return

    with pytest.raises(HycoError, match="returned without completing the startup"):
        await serve(silent, connection_string(relay), lifespan="on")
    with pytest.raises(ValueError, match="lifespan must be"):
        await serve(silent, connection_string(relay), lifespan="sometimes")  # type: ignore[arg-type]


async def test_lifespan_off_never_calls_the_app_with_a_lifespan_scope(relay: Relay) -> None:
    kinds: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kinds.append(scope["type"])
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body"})

    async with serving(relay, app, lifespan="off"), sender(relay) as client:
        assert (await client.get("/")).status_code == 200
    assert kinds == ["http"]


# -- WebSockets --------------------------------------------------------------------------------


async def test_fastapi_websocket_echo_with_subprotocol_and_app_close_code(relay: Relay) -> None:
    async with (
        serving(relay, fastapi_app.app),
        ws_connect(
            ws_uri(relay, "ws"),
            additional_headers=token(relay),
            subprotocols=["v1", "v2"],  # type: ignore[list-item]
        ) as ws,
    ):
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


async def test_the_senders_close_code_reaches_the_app(relay: Relay) -> None:
    async with serving(relay, fastapi_app.app):
        async with ws_connect(ws_uri(relay, "ws"), additional_headers=token(relay)) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            await ws.close(4002, "done")
        await eventually(lambda: fastapi_app.ws_disconnects == [(4002, "done")])


async def test_the_websocket_scope_has_path_query_and_headers(relay: Relay) -> None:
    headers = {**token(relay), "X-Custom": "yes"}
    async with (
        serving(relay, fastapi_app.app),
        ws_connect(ws_uri(relay, "ws/scope", "room=7"), additional_headers=headers) as ws,
    ):
        seen = await ws.recv()
    assert isinstance(seen, str)
    assert httpx.Response(200, text=seen).json() == {
        "path": "/hc1/ws/scope",
        "root_path": "/hc1",
        "query": "room=7",
        "scheme": "ws",
        "url": f"ws://{relay.address}/hc1/ws/scope?room=7",
        "x_custom": "yes",
    }


async def test_refusals_reach_the_sender_with_their_status(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(relay, raw_app.app):
        results = {
            route: await refused(ws_uri(relay, route), token(relay))
            for route in (
                "ws/close-before-accept",
                "ws/deny",
                "ws/raise-before-accept",
                "ws/wrong-subprotocol",
                "ws/return-without-accepting",
            )
        }
    assert results["ws/close-before-accept"][0] == 403
    assert results["ws/close-before-accept"][1].startswith("Not you")
    assert results["ws/deny"][0] == 401
    assert results["ws/deny"][1].startswith("Unauthorized")
    for route in ("ws/raise-before-accept", "ws/wrong-subprotocol", "ws/return-without-accepting"):
        status, reason = results[route]
        assert status == 500
        assert raw_app.SECRET not in reason
    assert raw_app.SECRET in caplog.text
    assert "never-offered" in caplog.text


async def test_a_websocket_to_no_fastapi_route_is_refused_with_403(relay: Relay) -> None:
    async with serving(relay, fastapi_app.app):
        status, _ = await refused(ws_uri(relay, "nowhere"), token(relay))
    assert status == 403


async def test_an_app_failing_after_accepting_closes_with_1011(relay: Relay) -> None:
    async with (
        serving(relay, raw_app.app),
        ws_connect(ws_uri(relay, "ws/raise-after-accept"), additional_headers=token(relay)) as ws,
    ):
        await ws.send(b"trigger")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011
    assert raw_app.SECRET not in closed.value.rcvd.reason
    assert raw_app.observed == [{"type": "websocket.receive", "bytes": b"trigger"}]


async def test_close_codes_pass_both_ways_and_send_after_disconnect_raises_oserror(
    relay: Relay,
) -> None:
    async with serving(relay, raw_app.app):
        async with ws_connect(ws_uri(relay, "ws/echo"), additional_headers=token(relay)) as ws:
            await ws.send("close")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        async with ws_connect(ws_uri(relay, "ws/echo"), additional_headers=token(relay)) as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
            await ws.close(4003, "bye now")
        await eventually(lambda: len(raw_app.observed) == 3)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "custom")
    own_close, peer_close, error = raw_app.observed
    assert own_close == {"type": "websocket.disconnect", "code": 4001, "reason": "custom"}
    assert peer_close == {"type": "websocket.disconnect", "code": 4003, "reason": "bye now"}
    assert isinstance(error, ClientDisconnected)
    assert isinstance(error, OSError)
    assert error.code == 4003


# -- stopping ----------------------------------------------------------------------------------


async def test_cancelling_serve_finishes_requests_then_closes_websockets_with_1001(
    relay: Relay,
) -> None:
    raw_app.release = anyio.Event()
    server = anyio.CancelScope()
    answers: list[httpx.Response] = []

    async def run_server(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with server:
            await serve(raw_app.app, connection_string(relay), task_status=task_status)

    async with sender(relay) as client, anyio.create_task_group() as tasks:
        await tasks.start(run_server)

        async def slow_request() -> None:
            answers.append(await client.get("/slow"))

        tasks.start_soon(slow_request)
        await eventually(lambda: "slow started" in raw_app.observed)
        async with ws_connect(ws_uri(relay, "ws/echo"), additional_headers=token(relay)) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            server.cancel()
            late = await refused(ws_uri(relay, "ws/echo"), token(relay))
            raw_app.release.set()
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        await eventually(lambda: relay.listener_count("localhost", "hc1") == 0)
        offline = await client.get("/scope")
    (answer,) = answers
    assert (answer.status_code, answer.text) == (200, "finished")
    assert late[0] == 503
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    assert offline.status_code == 502


async def test_work_that_outlives_the_shutdown_timeout_is_cancelled(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    raw_app.release = anyio.Event()
    answers: list[int] = []
    async with sender(relay) as client, anyio.create_task_group() as tasks:

        async def slow_request() -> None:
            try:
                answers.append((await client.get("/slow")).status_code)
            except httpx.HTTPError:
                answers.append(0)

        async with serving(relay, raw_app.app, shutdown_timeout=0.2):
            tasks.start_soon(slow_request)
            await eventually(lambda: "slow started" in raw_app.observed)
        await eventually(lambda: bool(answers))
    assert answers != [200]
    assert "cancelled after 0.2 s" in caplog.text


async def test_serve_raises_the_relays_refusal_at_once(relay: Relay) -> None:
    wrong_key = connection_string(relay).replace(ROOT_KEY, "d3Jvbmcta2V5")
    with pytest.raises(AuthorizationError):
        await serve(raw_app.app, wrong_key)


async def test_serve_raises_when_the_hybrid_connection_is_deleted(relay: Relay) -> None:
    errors: list[Exception] = []

    async def run_server(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            await serve(fastapi_app.app, connection_string(relay), task_status=task_status)
        except EndpointNotFoundError as error:
            errors.append(error)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            await tasks.start(run_server)
            await relay.reconfigure(parse_config(CONFIG.replace('name = "hc1"', 'name = "x"')))
    assert len(errors) == 1
    assert fastapi_app.events == ["startup", "shutdown"]


# -- entry points ------------------------------------------------------------------------------


def test_load_app_imports_module_attributes() -> None:
    assert load_app(FASTAPI_APP) is fastapi_app.app
    assert load_app("tests.adapters.apps.fastapi_app:app.router") is fastapi_app.app.router
    with pytest.raises(AppImportError, match="module:attribute"):
        load_app("tests.adapters.apps.fastapi_app")
    with pytest.raises(AppImportError, match="has no attribute 'nope'"):
        load_app("tests.adapters.apps.fastapi_app:nope")
    with pytest.raises(AppImportError, match="not callable"):
        load_app("tests.adapters.apps.fastapi_app:LIFESPAN_LOG")
    with pytest.raises(AppImportError, match=r"no module named 'tests\.adapters\.apps\.missing'"):
        load_app("tests.adapters.apps.missing:app")
    with pytest.raises(ModuleNotFoundError, match="not_installed") as inner:
        load_app("tests.adapters.apps.broken_imports:app")
    assert not isinstance(inner.value, AppImportError)  # the app's own failure, as it is


def test_run_raises_a_listener_that_cannot_connect() -> None:
    unreachable = (
        "Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=k;SharedAccessKey=a2V5;"
        "EntityPath=hc1;UseDevelopmentEmulator=true"
    )
    with pytest.raises(ConnectionLostError):
        run(raw_app.app, unreachable, lifespan="off")


def _python(code: str, relay: Relay, log: Path) -> subprocess.Popen[str]:
    environment = dict(
        os.environ,
        HYCO_CONNECTION_STRING=connection_string(relay),
        **{fastapi_app.LIFESPAN_LOG: str(log)},
    )
    return subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def _stopped(process: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    with anyio.fail_after(30):
        while process.poll() is None:
            await anyio.sleep(0.05)
    output, _ = process.communicate()
    return process.returncode, output


async def test_run_stops_in_order_on_ctrl_c(relay: Relay, tmp_path: Path) -> None:
    log = tmp_path / "lifespan.log"
    code = (
        "import os; from hyco_adapters.asgi import run; "
        f"run({FASTAPI_APP!r}, os.environ['HYCO_CONNECTION_STRING'])"
    )
    process = _python(code, relay, log)
    try:
        await eventually(lambda: relay.listener_count("localhost", "hc1") == 1, timeout=30)
        async with sender(relay) as client:
            assert (await client.get("/pid")).json() == {"pid": process.pid}
    finally:
        returncode, output = await _stopped(process, signal.SIGINT)
    assert returncode == 0, output
    assert log.read_text().split() == ["startup", str(process.pid), "shutdown", str(process.pid)]


async def test_workers_share_the_hybrid_connection_and_stop_on_sigterm(
    relay: Relay, tmp_path: Path
) -> None:
    log = tmp_path / "lifespan.log"
    code = (
        "import os; from hyco_adapters.asgi import serve_workers; "
        f"serve_workers({FASTAPI_APP!r}, os.environ['HYCO_CONNECTION_STRING'], 2)"
    )
    process = _python(code, relay, log)
    pids: set[int] = set()
    try:
        await eventually(lambda: relay.listener_count("localhost", "hc1") == 2, timeout=60)
        async with sender(relay) as client:
            for _ in range(60):
                pids.add((await client.get("/pid")).json()["pid"])
                if len(pids) == 2:
                    break
    finally:
        returncode, output = await _stopped(process, signal.SIGTERM)
    assert len(pids) == 2
    assert process.pid not in pids
    assert returncode == 0, output
    events = log.read_text().splitlines()
    assert sorted(events) == sorted(
        [f"{event} {pid}" for pid in pids for event in ("startup", "shutdown")]
    )


async def test_a_failing_worker_stops_the_others_and_raises(relay: Relay) -> None:
    wrong_key = connection_string(relay).replace(ROOT_KEY, "d3Jvbmcta2V5")
    with pytest.raises(HycoError, match="a worker failed"):
        await anyio.to_thread.run_sync(partial(serve_workers, FASTAPI_APP, wrong_key, 2))
    with pytest.raises(ValueError, match="at least 1"):
        serve_workers(FASTAPI_APP, wrong_key, 0)


# -- applications that break the ASGI protocol --------------------------------------------------

# With a small declared length the response waits for its body, so it can still become a 500.
START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-length", b"2")],
}
BODY: Message = {"type": "http.response.body", "body": b"ok"}
HTTP_MISUSE: dict[str, tuple[list[Message], str]] = {
    "start-twice": ([START, START], "http.response.start twice"),
    "body-first": ([BODY], "came before http.response.start"),
    "body-after-end": ([START, BODY, BODY], "came after the last piece"),
    "text-body": ([START, {**BODY, "body": "ok"}], "must be bytes"),
    "str-headers": ([{**START, "headers": [("x", "1")]}], "must be byte strings"),
    "split-header": ([{**START, "headers": [(b"x", b"a\r\nb")]}], "has CR, LF or NUL"),
    "websocket-message": ([{"type": "websocket.send", "text": "x"}], "not a message for an HTTP"),
}
ACCEPT: Message = {"type": "websocket.accept"}
DENY: Message = {"type": "websocket.http.response.start", "status": 401}
WEBSOCKET_MISUSE: dict[str, tuple[list[Message], str]] = {
    "accept-twice": ([ACCEPT, ACCEPT], "after the connection was decided"),
    "send-first": ([{"type": "websocket.send", "text": "x"}], "needs an accepted connection"),
    "send-nothing": ([ACCEPT, {"type": "websocket.send"}], "needs 'bytes' or 'text'"),
    "deny-then-accept": ([DENY, ACCEPT], "after the connection was decided"),
    "accept-then-deny": ([ACCEPT, DENY], "must come before any decision"),
    "body-first": ([{"type": "websocket.http.response.body"}], "without a response start"),
    "deny-then-close": ([DENY, {"type": "websocket.close"}], "in the middle of a denial"),
    "http-message": ([START], "not a message for a WebSocket"),
}


def misbehaving_app(errors: dict[str, str]) -> ASGIApp:
    """Sends the messages of the case its path names; records what ``send`` raised."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        case = scope["path"].rsplit("/", 1)[-1]
        misuse = HTTP_MISUSE if scope["type"] == "http" else WEBSOCKET_MISUSE
        messages, _ = misuse[case]
        if scope["type"] == "websocket":
            await receive()
        try:
            for message in messages:
                await send(message)
        except LocalProtocolError as error:
            errors[case] = str(error)
            raise

    return app


async def websocket_outcome(uri: str, headers: dict[str, str]) -> tuple[str, int]:
    """``("refused", status)`` or, once accepted, ``("closed", close code)``."""
    try:
        async with ws_connect(uri, additional_headers=headers) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    except InvalidStatus as refusal:
        return "refused", refusal.response.status_code
    assert closed.value.rcvd is not None
    return "closed", closed.value.rcvd.code


async def test_an_app_breaking_the_asgi_protocol_is_told_at_once(relay: Relay) -> None:
    errors: dict[str, str] = {}
    async with serving(relay, misbehaving_app(errors), lifespan="off"), sender(relay) as client:
        statuses = {case: (await client.get(f"/{case}")).status_code for case in HTTP_MISUSE}
        outcomes = {
            case: await websocket_outcome(ws_uri(relay, case), token(relay))
            for case in WEBSOCKET_MISUSE
        }
    expected = {**HTTP_MISUSE, **WEBSOCKET_MISUSE}
    assert set(errors) == set(expected)
    for case, message in errors.items():
        assert expected[case][1] in message
    assert statuses.pop("body-after-end") == 200  # the response was out before the misuse
    assert set(statuses.values()) == {500}
    accepted_first = {"accept-twice", "send-nothing", "accept-then-deny"}
    for case, outcome in outcomes.items():
        assert outcome == (("closed", 1011) if case in accepted_first else ("refused", 500))


async def test_a_websocket_the_app_does_not_decide_on_in_time_is_refused(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hyco_adapters.asgi.server, "DECISION_TIMEOUT", 0.2)

    async def undecided(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await anyio.sleep(1)
        with pytest.raises(LocalProtocolError):
            await send(ACCEPT)

    async with serving(relay, undecided, lifespan="off"):
        status, _ = await refused(ws_uri(relay, "slow"), token(relay))
    assert status == 503


async def test_lifespan_shutdown_failures_are_logged(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        if scope["state"].get("hang"):
            await anyio.sleep_forever()
        await send({"type": "lifespan.shutdown.failed", "message": "could not flush"})

    async with serving(relay, app):
        pass
    assert "lifespan shutdown failed: could not flush" in caplog.text

    async def hanging(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"]["hang"] = True
        await app(scope, receive, send)

    async with serving(relay, hanging, shutdown_timeout=0.2):
        pass
    assert "lifespan shutdown took over 0.2 s" in caplog.text


async def test_on_status_hears_the_listener(relay: Relay) -> None:
    statuses: list[str] = []

    def on_status(event: ListenerStatusChanged) -> None:
        statuses.append(event.status.value)

    async with serving(relay, raw_app.app, on_status=on_status):
        assert statuses == ["connecting", "online"]
    assert statuses[-1] == "closed"


async def leave_in_the_middle_of_a_stream() -> None:
    async with own_relay() as relay, serving(relay, fastapi_app.app), sender(relay) as client:
        async with client.stream("GET", "/endless") as response:
            async for _ in response.aiter_bytes():
                break
        await eventually(lambda: fastapi_app.stream_ends == ["stopped"])
        assert (await client.get("/pid")).status_code == 200


def test_a_sender_leaving_in_the_middle_of_a_stream_stops_the_app() -> None:
    isolated(leave_in_the_middle_of_a_stream)

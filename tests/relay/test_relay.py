"""The local relay over real sockets: plain clients and hyco listeners, every error path."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from hyco_conformance.harness import LISTEN_KEY, ROOT_KEY, SEND_KEY
from hyco_core import (
    AuthorizationError,
    ConnectionLostError,
    EndpointNotFoundError,
    ListenerStatus,
    ListenerStatusChanged,
    create_relay_listen_uri,
    create_relay_send_uri,
    create_sas_token,
)
from hyco_core import (
    ConnectionClosed as HycoConnectionClosed,
)
from hyco_relay.config import parse_config
from hyco_relay.server import Relay, serve_relay
from hyco_transports.anyio import (
    AcceptContext,
    HttpRequest,
    HttpResponse,
    Listener,
    WebSocket,
)
from hyco_transports.auth import RelayEndpoint, SasTokenProvider

from .conftest import CONFIG, connection_string, refused, token

pytestmark = pytest.mark.anyio


async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


@asynccontextmanager
async def echo_listener(
    relay: Relay, entity: str = "hc1", **options: Any
) -> AsyncIterator[Listener]:
    options.setdefault("connection_handler", echo)
    async with Listener.from_connection_string(
        connection_string(relay, entity), **options
    ) as listener:
        yield listener


def send_uri(relay: Relay, entity: str = "hc1", **kwargs: object) -> str:
    return create_relay_send_uri(relay.address, entity, secure=False, **kwargs)  # type: ignore[arg-type]


async def test_plain_websocket_client_through_the_relay_to_a_hyco_listener(relay: Relay) -> None:
    async with echo_listener(relay):
        headers = {"ServiceBusAuthorization": token(relay)}
        async with ws_connect(send_uri(relay), additional_headers=headers) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01" * 100_000)
            assert await ws.recv() == b"\x00\x01" * 100_000
            await ws.send(["frag", "ment"])  # a fragmented text message
            assert await ws.recv() == "fragment"


async def test_token_in_the_query_as_browsers_send_it(relay: Relay) -> None:
    async with echo_listener(relay), ws_connect(send_uri(relay, token=token(relay))) as ws:
        await ws.send("q")
        assert await ws.recv() == "q"


async def test_anonymous_senders_where_the_entity_allows_them(relay: Relay) -> None:
    async with echo_listener(relay, "open"), ws_connect(send_uri(relay, "open")) as ws:
        await ws.send("anon")
        assert await ws.recv() == "anon"


async def test_accept_handler_sees_headers_suffix_query_and_chooses_subprotocol(
    relay: Relay,
) -> None:
    seen: list[AcceptContext] = []

    async def decide(context: AcceptContext) -> None:
        seen.append(context)
        context.accept(subprotocol="v2")

    async with echo_listener(relay, accept_handler=decide):
        uri = send_uri(relay, suffix="room/7", query="user=ann&x=%20y", tracking_id="trace-1")
        headers = {"ServiceBusAuthorization": token(relay), "X-Custom": "yes"}
        async with ws_connect(uri, additional_headers=headers, subprotocols=["v1", "v2"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "v2"
            await ws.send("x")
            assert await ws.recv() == "x"
    (context,) = seen
    assert context.suffix == "/room/7"
    assert context.query == "user=ann&x=%20y"
    assert context.headers["x-custom"] == "yes"
    assert "ServiceBusAuthorization" not in context.headers
    assert context.remote_endpoint is not None
    assert context.remote_endpoint.address == "127.0.0.1"


async def test_rejection_reaches_the_sender_with_status_and_description(relay: Relay) -> None:
    async def decide(context: AcceptContext) -> None:
        context.reject(451, "Not here, not now")

    async with echo_listener(relay, accept_handler=decide):
        status, reason = await refused(
            send_uri(relay), additional_headers={"ServiceBusAuthorization": token(relay)}
        )
    assert status == 451
    assert reason.startswith("Not here, not now. TrackingId:")


async def test_failing_accept_handler_rejects_with_502(relay: Relay) -> None:
    async def decide(context: AcceptContext) -> None:
        raise RuntimeError("bug in the application")

    async with echo_listener(relay, accept_handler=decide):
        status, reason = await refused(
            send_uri(relay), additional_headers={"ServiceBusAuthorization": token(relay)}
        )
    assert status == 502
    assert "bug in the application" not in reason


async def test_close_codes_pass_end_to_end(relay: Relay) -> None:
    async def close_with_code(ws: WebSocket) -> None:
        await ws.recv()
        await ws.close(4321, "application says bye")

    async with echo_listener(relay, connection_handler=close_with_code):
        headers = {"ServiceBusAuthorization": token(relay)}
        async with ws_connect(send_uri(relay), additional_headers=headers) as ws:
            await ws.send("bye?")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4321, "application says bye")


async def test_an_error_in_the_listeners_block_comes_out_as_itself(relay: Relay) -> None:
    class Oops(Exception):
        pass

    with pytest.raises(Oops):
        async with echo_listener(relay):
            raise Oops
    assert relay.listener_count("localhost", "hc1") == 0


async def test_a_side_that_vanishes_is_reported_as_1011_not_a_normal_close(relay: Relay) -> None:
    heard: list[tuple[int, str]] = []
    done = anyio.Event()

    async def wait_for_the_end(ws: WebSocket) -> None:
        try:
            await ws.recv()
            await ws.recv()
        except HycoConnectionClosed as closed:
            heard.append((closed.code, closed.reason))
        finally:
            done.set()

    async with echo_listener(relay, connection_handler=wait_for_the_end):
        headers = {"ServiceBusAuthorization": token(relay)}
        sender = await ws_connect(send_uri(relay), additional_headers=headers)
        await sender.send("one")
        sender.transport.abort()  # gone without a close frame
        with anyio.fail_after(10):
            await done.wait()
    # Iterating listeners stop quietly at 1000 and 1001: a lost peer must not look like that.
    assert heard == [(1011, "The other side's connection was lost")]


async def test_http_inline_and_via_rendezvous_with_via_header(relay: Relay) -> None:
    async def handler(request: HttpRequest) -> HttpResponse:
        body = await request.body()
        headers = {"X-Path": request.path, "X-Query": request.query, "X-Length": str(len(body))}
        return HttpResponse(201, headers, body=body[::-1])

    async with (
        echo_listener(relay, request_handler=handler),
        httpx.AsyncClient(timeout=10) as client,
    ):
        for size in (0, 1, 65535, 65536, 65537, 1_000_000):
            payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
            response = await client.post(
                f"http://{relay.address}/hc1/items/9?a=1&sb-hc-extra=2",
                content=payload,
                headers={"ServiceBusAuthorization": token(relay)},
            )
            assert response.status_code == 201, size
            assert response.content == payload[::-1]
            assert response.headers["x-length"] == str(size)
            assert response.headers["x-path"] == "/items/9"
            assert response.headers["x-query"] == "a=1"
            assert response.headers["via"] == "1.1 localhost"


async def test_http_chunked_upload_and_streamed_response(relay: Relay) -> None:
    async def handler(request: HttpRequest) -> HttpResponse:
        total = 0
        async for piece in request.stream():
            total += len(piece)

        async def produce() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"s" * 50_000

        return HttpResponse(200, {"X-Received": str(total)}, body=produce())

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"u" * 30_000

    async with (
        echo_listener(relay, request_handler=handler),
        httpx.AsyncClient(timeout=10) as client,
    ):
        response = await client.put(
            f"http://{relay.address}/hc1",
            content=upload(),
            headers={"ServiceBusAuthorization": token(relay)},
        )
    assert response.status_code == 200
    assert response.headers["x-received"] == "300000"
    assert response.content == b"s" * 1_000_000


async def test_http_without_handler_is_501_and_failing_handler_500(relay: Relay) -> None:
    headers = {"ServiceBusAuthorization": token(relay)}
    async with echo_listener(relay), httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://{relay.address}/hc1", headers=headers)
        assert response.status_code == 501

    async def failing(request: HttpRequest) -> HttpResponse:
        raise ValueError("secret internals")

    async with echo_listener(relay, request_handler=failing), httpx.AsyncClient() as client:
        response = await client.get(f"http://{relay.address}/hc1", headers=headers)
        assert response.status_code == 500
        assert b"secret internals" not in response.content


async def test_http_errors_no_listener_502_and_timeout_504(relay: Relay) -> None:
    headers = {"ServiceBusAuthorization": token(relay)}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://{relay.address}/hc1", headers=headers)
        assert response.status_code == 502
        assert "TrackingId:" in response.json()["error"]["message"]

        async def slow(request: HttpRequest) -> HttpResponse:
            await anyio.sleep(5)
            return HttpResponse(200)

        async with echo_listener(relay, request_handler=slow):
            response = await client.get(f"http://{relay.address}/hc1", headers=headers)
        assert response.status_code == 504
        error = response.json()["error"]
        assert error["code"] == "GatewayTimeout"
        assert "did not respond in the required time" in error["message"]

        response = await client.get(f"http://{relay.address}/hc1")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "TokenMissingOrInvalid"


@pytest.mark.parametrize(
    ("uri_of", "headers_of", "status", "phrase"),
    [
        (lambda r: send_uri(r, "nope"), lambda r: {}, 404, "Endpoint does not exist"),
        (lambda r: send_uri(r), lambda r: {}, 401, "token is required"),
        (
            lambda r: send_uri(r),
            lambda r: {"ServiceBusAuthorization": token(r, key="d3Jvbmc=")},
            401,
            "Invalid token",
        ),
        (
            lambda r: send_uri(r),
            lambda r: {"ServiceBusAuthorization": token(r, rule="listen-only", key=LISTEN_KEY)},
            403,
            "does not grant Send",
        ),
        (
            lambda r: send_uri(r),
            lambda r: {"ServiceBusAuthorization": token(r, entity="open")},
            403,
            "does not grant access here",
        ),
        (
            lambda r: send_uri(r),
            lambda r: {"ServiceBusAuthorization": token(r)},
            404,
            "No listener is connected",
        ),
        (
            lambda r: f"ws://{r.address}/$hc/hc1?sb-hc-action=accept&sb-hc-id=forged",
            lambda r: {},
            403,
            "unknown or expired",
        ),
        (
            lambda r: f"ws://{r.address}/$hc/hc1?sb-hc-action=request&sb-hc-id=forged",
            lambda r: {},
            400,
            "Unknown or expired",
        ),
    ],
)
async def test_handshake_errors_carry_status_and_tracking_id(
    relay: Relay, uri_of: object, headers_of: object, status: int, phrase: str
) -> None:
    uri = uri_of(relay)  # type: ignore[operator]
    got_status, reason = await refused(uri, additional_headers=headers_of(relay))  # type: ignore[operator]
    assert got_status == status
    assert phrase in reason
    assert "TrackingId:" in reason


async def test_listener_errors_are_typed_and_fail_fast(relay: Relay) -> None:
    endpoint = RelayEndpoint(
        namespace=relay.address,
        path="hc1",
        secure=False,
        token_provider=SasTokenProvider(token(relay, rule="send-only", key=SEND_KEY)),
    )
    with pytest.raises(AuthorizationError) as caught:
        async with Listener(endpoint):
            pass
    assert caught.value.status_code == 403
    assert caught.value.tracking_id
    missing = RelayEndpoint(namespace=relay.address, path="nope", secure=False)
    with pytest.raises(EndpointNotFoundError):
        async with Listener(missing):
            pass


async def test_at_most_25_listeners_per_entity(relay: Relay) -> None:
    listen = create_relay_listen_uri(relay.address, "hc1", token(relay), secure=False)
    async with anyio.create_task_group() as tasks:
        opened = anyio.Event()
        release = anyio.Event()
        count = 0

        async def hold() -> None:
            nonlocal count
            async with ws_connect(listen):
                count += 1
                if count == 25:
                    opened.set()
                await release.wait()

        for _ in range(25):
            tasks.start_soon(hold)
        await opened.wait()
        assert relay.listener_count("localhost", "hc1") == 25
        status, reason = await refused(listen)
        assert status == 403
        assert "at most 25 listeners" in reason
        release.set()


async def test_balancing_and_listener_targeting(relay: Relay) -> None:
    hits: dict[str, int] = {}

    def counting(name: str) -> object:
        async def handler(ws: WebSocket) -> None:
            hits[name] = hits.get(name, 0) + 1
            await ws.send(name)

        return handler

    async with (
        echo_listener(relay, connection_handler=counting("a"), tracking_id="id-a"),
        echo_listener(relay, connection_handler=counting("b"), tracking_id="id-b"),
        echo_listener(relay, connection_handler=counting("c"), tracking_id="id-c"),
    ):
        headers = {"ServiceBusAuthorization": token(relay)}
        for _ in range(30):
            async with ws_connect(send_uri(relay), additional_headers=headers) as ws:
                await ws.recv()
        assert set(hits) == {"a", "b", "c"}
        targeted = {**headers, "Microsoft-Relay-AllowedListeners": "id-b"}
        for _ in range(5):
            async with ws_connect(send_uri(relay), additional_headers=targeted) as ws:
                assert await ws.recv() == "b"
        excluded = {**headers, "Microsoft-Relay-DisallowedListeners": "id-a, id-b, id-c"}
        status, reason = await refused(send_uri(relay), additional_headers=excluded)
        assert status == 404
        assert "meet the criteria" in reason


async def test_expired_listener_token_closes_with_1008_and_renewal_prevents_it(
    relay: Relay,
) -> None:
    fresh = token(relay)
    listen = create_relay_listen_uri(relay.address, "hc1", secure=False)
    resource = f"http://{relay.address}/hc1/"
    expiring = create_sas_token(resource, "root", ROOT_KEY, int(time.time()) + 2)
    async with ws_connect(listen, additional_headers={"ServiceBusAuthorization": expiring}) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            with anyio.fail_after(10):
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008

    expiring = create_sas_token(resource, "root", ROOT_KEY, int(time.time()) + 2)
    async with ws_connect(listen, additional_headers={"ServiceBusAuthorization": expiring}) as ws:
        await ws.send(json.dumps({"renewToken": {"token": fresh}}))
        with anyio.move_on_after(3.5):
            await ws.recv()
        assert ws.state.name == "OPEN"
        forged = "SharedAccessSignature sr=x&sig=y&se=1&skn=z"
        await ws.send(json.dumps({"renewToken": {"token": forged}}))
        with pytest.raises(ConnectionClosed) as closed:
            with anyio.fail_after(5):
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


async def test_relay_shutdown_tells_listeners_1001_and_they_reconnect() -> None:
    statuses: list[ListenerStatusChanged] = []
    listeners: list[Listener] = []
    started, stop = anyio.Event(), anyio.Event()

    async def run_listener(cs: str) -> None:
        async with Listener.from_connection_string(cs, on_status=statuses.append) as listener:
            listeners.append(listener)
            started.set()
            await stop.wait()

    async with anyio.create_task_group() as tasks:
        async with serve_relay(parse_config(CONFIG)) as first:
            port = first.port
            tasks.start_soon(run_listener, connection_string(first))
            await started.wait()
        config = parse_config(CONFIG.replace("port = 0", f"port = {port}"))
        async with serve_relay(config) as second:
            with anyio.fail_after(10):
                while second.listener_count("localhost", "hc1") == 0:
                    await anyio.sleep(0.05)
            assert listeners[0].status is ListenerStatus.ONLINE
            stop.set()
    kinds = [s.status for s in statuses]
    assert kinds[:2] == [ListenerStatus.CONNECTING, ListenerStatus.ONLINE]
    offline = next(s for s in statuses if s.status is ListenerStatus.OFFLINE)
    assert isinstance(offline.error, ConnectionLostError)
    assert offline.error.close_code == 1001
    assert kinds[-2:] == [ListenerStatus.ONLINE, ListenerStatus.CLOSED]


async def test_health_and_stats(relay: Relay) -> None:
    async with echo_listener(relay), httpx.AsyncClient() as client:
        health = await client.get(f"http://{relay.address}/health")
        assert health.json() == {"status": "ok"}
        stats = (await client.get(f"http://{relay.address}/stats")).json()
        assert stats["entities"]["localhost/hc1"]["listeners"] == 1
        assert ROOT_KEY_FRAGMENT not in json.dumps(stats)


ROOT_KEY_FRAGMENT = ROOT_KEY[:12]

"""Every transport against a real local relay: fixtures, flavours and shared scenarios.

The relay (``hyco_relay``, anyio) runs in a background thread behind a blocking portal. Every
scenario is written once, as a function of a :class:`Flavour` (the transport module plus how to
wait, run things side by side and call blocking third-party clients in it) and of the running
relay; ``test_scenarios.py`` runs each of them on every transport: sync, gevent, and anyio on
asyncio and on trio behind the blocking interface of ``anyio_flavour``.

The gevent flavour runs in the test's own thread, on gevent's hub, without monkey-patching:
hyco's gevent transport uses gevent's sockets, and the blocking clients the scenarios use to
play the other side (httpx, websockets) run in gevent's thread pool.
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import gc
import hashlib
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any, Generic, TypeVar
from unittest import mock

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from websockets.sync.client import connect as ws_connect

from hyco_conformance.harness import ROOT_KEY, SEND_KEY, relay_config
from hyco_core import (
    AuthorizationError,
    CertificateError,
    ConnectionClosed,
    ConnectionLostError,
    EndpointNotFoundError,
    KeepAlive,
    ListenerStatus,
    ListenerStatusChanged,
    ListenerUnavailableError,
    RejectedError,
    RelayServerError,
    RelayTimeoutError,
    create_relay_send_uri,
    create_relay_token,
)
from hyco_relay.config import parse_config
from hyco_relay.server import Relay, serve_relay
from hyco_relay.tls import client_ssl_context, ensure_development_certificates, server_ssl_context
from hyco_transports import sync
from hyco_transports.auth import (
    CallableTokenProvider,
    RelayEndpoint,
    RelayToken,
    SasKeyTokenProvider,
    SasTokenProvider,
)
from hyco_transports.proxy import ProxyError
from hyco_transports.sync import AcceptContext, HttpRequest, HttpResponse, WebSocket

T = TypeVar("T")


CONFIG = relay_config(request_timeout=30.0, rendezvous_timeout=10.0)

MiB = 1024 * 1024


# -- the relay ---------------------------------------------------------------------------------


class RunningRelay:
    """The local relay, served by an event loop in a background thread."""

    def __init__(
        self, portal: BlockingPortal, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.portal = portal
        self._ssl_context = ssl_context
        self._running: AbstractContextManager[Relay] | None = None
        self.relay: Relay | None = None

    def start(self, port: int = 0) -> None:
        config = parse_config(CONFIG.replace("port = 0", f"port = {port}"))
        running = self.portal.wrap_async_context_manager(
            serve_relay(config, ssl_context=self._ssl_context)
        )
        self.relay = running.__enter__()
        self._running = running

    def stop(self) -> None:
        if self._running is not None:
            self._running.__exit__(None, None, None)
            self._running = None

    def restart(self) -> None:
        """Stop, then serve again on the same port (listeners are told 1001 in between)."""
        port = self._relay.port
        self.stop()
        self.start(port)

    @property
    def _relay(self) -> Relay:
        assert self.relay is not None
        return self.relay

    @property
    def address(self) -> str:
        return self._relay.address

    def connection_string(self, entity: str = "hc1", rule: str = "root") -> str:
        return self._relay.connection_string(entity, rule)

    def token(self, entity: str = "hc1", rule: str = "root", key: str = ROOT_KEY) -> str:
        return create_relay_token(f"sb://{self.address}/{entity}", rule, key, now=time.time())

    def endpoint(self, **options: Any) -> RelayEndpoint:
        options.setdefault("token_provider", SasKeyTokenProvider("root", ROOT_KEY))
        return RelayEndpoint(namespace=self.address, path="hc1", secure=False, **options)

    def http_url(self, rest: str = "") -> str:
        return f"http://{self.address}/hc1{rest}"

    def send_uri(self) -> str:
        return create_relay_send_uri(self.address, "hc1", secure=False)

    def listener_count(self, entity: str = "hc1") -> int:
        return self.portal.call(self._relay.listener_count, "localhost", entity)

    def stats(self, entity: str = "hc1") -> dict[str, Any]:
        """The relay's counters for ``entity`` (listeners, connections, requests, bytes)."""
        every: dict[str, Any] = self.portal.call(self._relay.stats)
        counters: dict[str, Any] = every["entities"][f"localhost/{entity}"]
        return counters


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as running:
        yield running


@pytest.fixture
def relay(portal: BlockingPortal) -> Iterator[RunningRelay]:
    running = RunningRelay(portal)
    running.start()
    try:
        yield running
    finally:
        running.stop()


# -- flavours ----------------------------------------------------------------------------------


class Background(Generic[T]):
    """Something started aside; :meth:`result` waits for its outcome."""

    def __init__(self, result: Callable[[float], T]) -> None:
        self._result = result

    def result(self, timeout: float = 30.0) -> T:
        return self._result(timeout)


class Flavour:
    """A transport module and how a test waits and runs things side by side with it."""

    transport: Any = sync

    @property
    def connect(self) -> Callable[..., AbstractContextManager[WebSocket]]:
        connect: Callable[..., AbstractContextManager[WebSocket]] = self.transport.connect
        return connect

    @property
    def Listener(self) -> type[sync.Listener]:
        listener: type[sync.Listener] = self.transport.Listener
        return listener

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def blocking(self, function: Callable[[], T]) -> T:
        """Run a blocking third-party call (an HTTP or WebSocket client)."""
        return function()

    def start(self, function: Callable[[], T]) -> Background[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function())
            except BaseException as error:
                future.set_exception(error)

        # A daemon thread: a scenario that fails half-way must not keep the test run alive.
        threading.Thread(target=run, name="scenario", daemon=True).start()
        return Background(future.result)

    def concurrently(self, functions: Sequence[Callable[[], T]]) -> list[T]:
        with concurrent.futures.ThreadPoolExecutor(len(functions)) as pool:
            return list(pool.map(lambda function: function(), functions))

    def live_workers(self) -> list[str]:
        """Names of hyco's workers still running."""
        return [t.name for t in threading.enumerate() if t.name.startswith("hyco-")]

    def wait_until(self, condition: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "the condition did not come true in time"
            self.sleep(0.05)


class GeventFlavour(Flavour):
    def __init__(self) -> None:
        import gevent  # type: ignore[import-untyped]

        from hyco_transports import gevent as hyco_gevent

        self._gevent = gevent
        self.transport = hyco_gevent

    def sleep(self, seconds: float) -> None:
        self._gevent.sleep(seconds)

    def blocking(self, function: Callable[[], T]) -> T:
        result: T = self._gevent.get_hub().threadpool.apply(function)
        return result

    def start(self, function: Callable[[], T]) -> Background[T]:
        greenlet = self._gevent.spawn(function)

        def result(timeout: float) -> T:
            value: T = greenlet.get(timeout=timeout)
            return value

        return Background(result)

    def concurrently(self, functions: Sequence[Callable[[], T]]) -> list[T]:
        greenlets = [self._gevent.spawn(function) for function in functions]
        self._gevent.joinall(greenlets, raise_error=True)
        return [greenlet.value for greenlet in greenlets]

    def live_workers(self) -> list[str]:
        # By type, not isinstance: the heap holds weak proxies whose referent is gone.
        greenlets = [
            item for item in gc.get_objects() if issubclass(type(item), self._gevent.Greenlet)
        ]
        return [g.name for g in greenlets if g.name.startswith("hyco-") and not g.ready()]


Scenario = Callable[[Flavour, RunningRelay], None]
SCENARIOS: list[Scenario] = []


def scenario(function: Scenario) -> Scenario:
    SCENARIOS.append(function)
    return function


def run_scenario(flavour: Flavour, relay: RunningRelay, function: Scenario) -> None:
    """Run a scenario; afterwards no worker of hyco's may still be running."""
    function(flavour, relay)
    assert flavour.live_workers() == []


# -- helpers -----------------------------------------------------------------------------------


def echo(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


@contextmanager
def echo_listener(flavour: Flavour, relay: RunningRelay, **options: Any) -> Iterator[sync.Listener]:
    options.setdefault("connection_handler", echo)
    with flavour.Listener.from_connection_string(relay.connection_string(), **options) as listener:
        yield listener


def pattern(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + b"z" * (size % 256)


# -- scenarios ---------------------------------------------------------------------------------


@scenario
def echo_of_text_and_binary_up_to_16_mib(flavour: Flavour, relay: RunningRelay) -> None:
    messages: list[str | bytes] = ["hello", "", "héllo ✓" * 10_000, b"", b"\x00\x01" * 40_000]
    messages += ["ü" * (8 * MiB), pattern(16 * MiB)]
    with echo_listener(flavour, relay):
        with flavour.connect(relay.connection_string()) as ws:
            for message in messages:
                ws.send(message)
                assert ws.recv(timeout=60) == message
            assert ws.subprotocol is None
        assert ws.close_code == 1000
        with flavour.connect(relay.connection_string(), token_in_query=True) as ws:
            ws.send("the token travelled in the query")
            assert ws.recv(timeout=10) == "the token travelled in the query"


@scenario
def fragmented_messages_from_a_websockets_client(flavour: Flavour, relay: RunningRelay) -> None:
    received: list[str | bytes] = []

    def record_and_echo(ws: WebSocket) -> None:
        for message in ws:
            received.append(message)
            ws.send(message)

    def client() -> list[str | bytes]:
        headers = {"ServiceBusAuthorization": relay.token()}
        with ws_connect(relay.send_uri(), additional_headers=headers, max_size=None) as ws:
            ws.send(["frag", "ment"])
            text = ws.recv(timeout=10)
            ws.send([b"\x01" * 70_000, b"\x02" * 70_000, b"\x03"])
            binary = ws.recv(timeout=10)
            return [text, binary]

    whole = b"\x01" * 70_000 + b"\x02" * 70_000 + b"\x03"
    with echo_listener(flavour, relay, connection_handler=record_and_echo):
        assert flavour.blocking(client) == ["fragment", whole]
    assert received == ["fragment", whole]


@scenario
def the_listener_chooses_a_subprotocol(flavour: Flavour, relay: RunningRelay) -> None:
    chosen: list[str | None] = []

    def choose(context: AcceptContext) -> None:
        assert context.subprotocols == ("v1", "v2")
        context.accept(subprotocol="v2")

    def serve(ws: WebSocket) -> None:
        chosen.append(ws.subprotocol)
        echo(ws)

    with (
        echo_listener(flavour, relay, accept_handler=choose, connection_handler=serve),
        flavour.connect(relay.connection_string(), subprotocols=["v1", "v2"]) as ws,
    ):
        assert ws.subprotocol == "v2"
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
    assert chosen == ["v2"]


@scenario
def headers_suffix_and_query_reach_the_accept_handler(
    flavour: Flavour, relay: RunningRelay
) -> None:
    seen: list[AcceptContext] = []
    with (
        echo_listener(flavour, relay, accept_handler=seen.append),
        flavour.connect(
            relay.connection_string(),
            suffix="room/7",
            query="user=ann&x=%20y",
            headers={"X-Custom": "yes"},
        ) as ws,
    ):
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
    (context,) = seen
    assert context.suffix == "/room/7"
    assert context.query == "user=ann&x=%20y"
    assert context.headers["x-custom"] == "yes"
    assert "ServiceBusAuthorization" not in context.headers
    assert context.remote_endpoint is not None
    assert context.remote_endpoint.address == "127.0.0.1"


@scenario
def a_rejection_reaches_the_sender_as_a_typed_error(flavour: Flavour, relay: RunningRelay) -> None:
    def refuse(context: AcceptContext) -> None:
        context.reject(451, "Not here, not now")

    with (
        echo_listener(flavour, relay, accept_handler=refuse),
        pytest.raises(RejectedError) as caught,
        flavour.connect(relay.connection_string()),
    ):
        pytest.fail("the connection was refused")
    assert caught.value.status_code == 451
    assert caught.value.reason.startswith("Not here, not now")
    assert caught.value.tracking_id


@scenario
def a_failing_accept_handler_rejects_with_502(flavour: Flavour, relay: RunningRelay) -> None:
    def broken(context: AcceptContext) -> None:
        raise RuntimeError("bug in the application")

    with (
        echo_listener(flavour, relay, accept_handler=broken),
        pytest.raises(RelayServerError) as caught,
        flavour.connect(relay.connection_string()),
    ):
        pytest.fail("the connection was refused")
    assert caught.value.status_code == 502
    assert "bug in the application" not in str(caught.value)
    assert caught.value.tracking_id


@scenario
def close_codes_pass_end_to_end(flavour: Flavour, relay: RunningRelay) -> None:
    def close_with_code(ws: WebSocket) -> None:
        ws.recv()
        ws.close(4321, "application says bye")

    with (
        echo_listener(flavour, relay, connection_handler=close_with_code),
        flavour.connect(relay.connection_string()) as ws,
    ):
        ws.send("bye?")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert (closed.value.code, closed.value.reason) == (4321, "application says bye")
        assert (ws.close_code, ws.close_reason) == (4321, "application says bye")
        with pytest.raises(ConnectionClosed):
            ws.send("too late")


@scenario
def http_bodies_of_every_size_both_ways(flavour: Flavour, relay: RunningRelay) -> None:
    def handler(request: HttpRequest) -> HttpResponse:
        body = request.body()
        headers = {"X-Path": request.path, "X-Query": request.query, "X-Length": str(len(body))}
        return HttpResponse(201, headers, body=body[::-1])

    sizes = (0, 1, 65535, 65536, 65537, 10 * MiB)

    def client() -> None:
        headers = {"ServiceBusAuthorization": relay.token()}
        with httpx.Client(timeout=60) as http:
            for size in sizes:
                payload = pattern(size)
                url = relay.http_url("/items/9?a=1&sb-hc-extra=2")
                response = http.post(url, content=payload, headers=headers)
                assert response.status_code == 201, size
                assert response.content == payload[::-1], size
                assert response.headers["x-length"] == str(size)
                assert response.headers["x-path"] == "/items/9"
                assert response.headers["x-query"] == "a=1"
                assert response.headers["via"] == "1.1 localhost"

    with echo_listener(flavour, relay, request_handler=handler):
        flavour.blocking(client)


@scenario
def large_answers_to_small_requests_keep_the_rendezvous_for_the_next(
    flavour: Flavour, relay: RunningRelay
) -> None:
    def handler(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, body=pattern(int(request.query.partition("=")[2])))

    def client() -> None:
        headers = {"ServiceBusAuthorization": relay.token()}
        with httpx.Client(timeout=60) as http:
            for size in (70_000, 10, 2 * MiB, 65536, 0, 65537):
                response = http.get(relay.http_url(f"?size={size}"), headers=headers)
                assert response.status_code == 200, size
                assert response.content == pattern(size), size

    with echo_listener(flavour, relay, request_handler=handler):
        flavour.blocking(client)


@scenario
def chunked_upload_and_streamed_response(flavour: Flavour, relay: RunningRelay) -> None:
    def handler(request: HttpRequest) -> HttpResponse:
        total = sum(len(piece) for piece in request.stream())

        def produce() -> Iterator[bytes]:
            for _ in range(20):
                yield b"s" * 50_000

        return HttpResponse(200, {"X-Received": str(total)}, body=produce())

    def upload() -> Iterator[bytes]:
        for _ in range(10):
            yield b"u" * 30_000

    def client() -> httpx.Response:
        with httpx.Client(timeout=60) as http:
            headers = {"ServiceBusAuthorization": relay.token()}
            return http.put(relay.http_url(), content=upload(), headers=headers)

    with echo_listener(flavour, relay, request_handler=handler):
        response = flavour.blocking(client)
    assert response.status_code == 200
    assert response.headers["x-received"] == "300000"
    assert response.content == b"s" * 1_000_000


@scenario
def http_without_handler_is_501_and_a_failing_handler_500(
    flavour: Flavour, relay: RunningRelay
) -> None:
    def get() -> httpx.Response:
        headers = {"ServiceBusAuthorization": relay.token()}
        return httpx.get(relay.http_url(), headers=headers, timeout=30)

    with echo_listener(flavour, relay):
        assert flavour.blocking(get).status_code == 501

    def failing(request: HttpRequest) -> HttpResponse:
        raise ValueError("secret internals")

    with echo_listener(flavour, relay, request_handler=failing):
        response = flavour.blocking(get)
    assert response.status_code == 500
    assert response.content == b""


@scenario
def a_hundred_concurrent_senders(flavour: Flavour, relay: RunningRelay) -> None:
    def sender(number: int) -> str | bytes:
        with flavour.connect(relay.connection_string()) as ws:
            ws.send(f"hello {number}")
            return ws.recv(timeout=30)

    with echo_listener(flavour, relay):
        answers = flavour.concurrently([functools.partial(sender, n) for n in range(100)])
    assert answers == [f"hello {n}" for n in range(100)]


@scenario
def listener_errors_are_typed_and_fail_fast(flavour: Flavour, relay: RunningRelay) -> None:
    send_only = SasTokenProvider(relay.token(rule="send-only", key=SEND_KEY))
    endpoint = relay.endpoint(token_provider=send_only)
    with pytest.raises(AuthorizationError) as caught, flavour.Listener(endpoint):
        pytest.fail("the listener opened")
    assert caught.value.status_code == 403
    assert caught.value.tracking_id
    missing = RelayEndpoint(namespace=relay.address, path="nope", secure=False)
    with pytest.raises(EndpointNotFoundError), flavour.Listener(missing):
        pytest.fail("the listener opened")
    with pytest.raises(ListenerUnavailableError), flavour.connect(relay.connection_string()):
        pytest.fail("there is no listener")


@scenario
def a_short_lived_token_is_renewed_without_going_offline(
    flavour: Flavour, relay: RunningRelay
) -> None:
    statuses: list[ListenerStatusChanged] = []
    signer = SasKeyTokenProvider("root", ROOT_KEY, lifetime=4)

    def slowly(resource: str) -> RelayToken:
        time.sleep(0.1)  # a provider that goes over the network (and blocks the thread)
        return signer.get_token(resource)

    endpoint = relay.endpoint(token_provider=CallableTokenProvider(slowly, blocking=True))
    with flavour.Listener(endpoint, connection_handler=echo, on_status=statuses.append) as listener:
        end = time.monotonic() + 15
        while time.monotonic() < end:
            flavour.sleep(0.5)
            assert listener.status is ListenerStatus.ONLINE
        with flavour.connect(relay.connection_string()) as ws:
            ws.send("still here")
            assert ws.recv(timeout=10) == "still here"
    assert [s.status for s in statuses] == [
        ListenerStatus.CONNECTING,
        ListenerStatus.ONLINE,
        ListenerStatus.CLOSED,
    ]


@scenario
def the_listener_comes_back_after_a_relay_restart(flavour: Flavour, relay: RunningRelay) -> None:
    statuses: list[ListenerStatusChanged] = []
    with echo_listener(flavour, relay, on_status=statuses.append) as listener:
        relay.restart()
        flavour.wait_until(
            lambda: listener.status is ListenerStatus.ONLINE and relay.listener_count() == 1
        )
        with flavour.connect(relay.connection_string()) as ws:
            ws.send("back")
            assert ws.recv(timeout=10) == "back"
    kinds = [s.status for s in statuses]
    assert kinds[:2] == [ListenerStatus.CONNECTING, ListenerStatus.ONLINE]
    offline = next(s for s in statuses if s.status is ListenerStatus.OFFLINE)
    assert isinstance(offline.error, ConnectionLostError)
    assert offline.error.close_code == 1001
    assert offline.retry_in is not None
    assert kinds[-2:] == [ListenerStatus.ONLINE, ListenerStatus.CLOSED]


@scenario
def closing_the_listener_is_graceful(flavour: Flavour, relay: RunningRelay) -> None:
    handling: list[str] = []
    connected: list[bool] = []

    def slow(request: HttpRequest) -> HttpResponse:
        handling.append(request.path)
        flavour.sleep(1.0)
        return HttpResponse(200, body=b"finished")

    def request() -> tuple[int, bytes]:
        headers = {"ServiceBusAuthorization": relay.token()}
        response = httpx.get(relay.http_url("/slow"), headers=headers, timeout=30)
        return response.status_code, response.content

    def sender() -> tuple[int | None, str | None]:
        with flavour.connect(relay.connection_string()) as ws:
            ws.send("hi")
            assert ws.recv(timeout=10) == "hi"
            connected.append(True)
            assert list(ws) == []  # ends quietly on 1001
            return ws.close_code, ws.close_reason

    with echo_listener(flavour, relay, request_handler=slow) as listener:
        in_flight = flavour.start(lambda: flavour.blocking(request))
        talking = flavour.start(sender)
        flavour.wait_until(lambda: bool(handling and connected))
    assert listener.status is ListenerStatus.CLOSED
    assert in_flight.result() == (200, b"finished")
    assert talking.result() == (1001, "The listener closed")
    # The relay forgets the listener just after it has answered its close.
    flavour.wait_until(lambda: relay.listener_count() == 0, timeout=5)


@scenario
def accepting_by_iteration_and_queued_connections_at_close(
    flavour: Flavour, relay: RunningRelay
) -> None:
    def sender() -> tuple[list[str | bytes], int | None]:
        with flavour.connect(relay.connection_string()) as ws:
            return list(ws), ws.close_code

    with flavour.Listener.from_connection_string(relay.connection_string()) as listener:
        first = flavour.start(sender)
        with listener.accept(timeout=20) as ws:
            assert ws.accept is not None
            ws.send("welcome")
        assert first.result() == (["welcome"], 1000)
        unclaimed = flavour.start(sender)
        flavour.wait_until(lambda: relay.stats()["connections"] == 2)
    assert unclaimed.result() == ([], 1001)
    with pytest.raises(ConnectionClosed):
        listener.accept(timeout=1)
    assert list(listener) == []


@scenario
def pings_receive_timeouts_and_the_message_size_limit(
    flavour: Flavour, relay: RunningRelay
) -> None:
    with (
        echo_listener(flavour, relay, max_message_size=1000),
        flavour.connect(relay.connection_string()) as ws,
    ):
        ws.ping(b"are you there")
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)
        ws.send(b"x" * 1000)
        assert ws.recv(timeout=10) == b"x" * 1000
        ws.send(b"x" * 1001)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert (closed.value.code, closed.value.reason) == (1009, "message too big")


@scenario
def a_failing_connection_handler_closes_with_1011_and_the_listener_stays(
    flavour: Flavour, relay: RunningRelay
) -> None:
    def broken(ws: WebSocket) -> None:
        if ws.recv() == "break":
            raise RuntimeError("bug in the application")
        echo(ws)

    with echo_listener(flavour, relay, connection_handler=broken) as listener:
        with flavour.connect(relay.connection_string()) as ws:
            ws.send("break")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert (closed.value.code, closed.value.reason) == (1011, "The listener failed")
        with flavour.connect(relay.connection_string()) as ws:
            ws.send("first")
            ws.send("second")
            assert ws.recv(timeout=10) == "second"
        assert listener.status is ListenerStatus.ONLINE


@scenario
def a_response_stream_that_fails_drops_the_response(flavour: Flavour, relay: RunningRelay) -> None:
    def handler(request: HttpRequest) -> HttpResponse:
        def produce() -> Iterator[bytes]:
            yield b"a" * 100_000
            raise RuntimeError("the database went away")

        if request.path == "/broken":
            return HttpResponse(200, body=produce())
        return HttpResponse(200, body=b"fine")

    def client() -> bytes:
        headers = {"ServiceBusAuthorization": relay.token()}
        with httpx.Client(timeout=30) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                http.get(relay.http_url("/broken"), headers=headers)
            return http.get(relay.http_url("/fine"), headers=headers).content

    with echo_listener(flavour, relay, request_handler=handler):
        assert flavour.blocking(client) == b"fine"


@scenario
def work_announced_while_closing_is_declined_with_503(
    flavour: Flavour, relay: RunningRelay
) -> None:
    handling: list[str] = []
    answer: list[bool] = []

    def handler(request: HttpRequest) -> HttpResponse:
        handling.append(request.path)
        flavour.wait_until(lambda: bool(answer))
        return HttpResponse(200, body=request.path.encode())

    def get(path: str) -> tuple[int, str | None, bytes]:
        headers = {"ServiceBusAuthorization": relay.token()}
        response = httpx.get(relay.http_url(path), headers=headers, timeout=30)
        return response.status_code, response.headers.get("retry-after"), response.content

    with echo_listener(flavour, relay, request_handler=handler) as listener:
        slow = flavour.start(lambda: flavour.blocking(lambda: get("/slow")))
        flavour.wait_until(lambda: handling == ["/slow"])
        listener.close()
        assert listener.status is ListenerStatus.CLOSED
        # The control channel stays open until /slow is answered; the relay still routes here.
        assert flavour.blocking(lambda: get("/late")) == (503, "5", b"This listener is closing.")
        with pytest.raises(RelayServerError) as refused, flavour.connect(relay.connection_string()):
            pytest.fail("the listener is closing")
        assert refused.value.status_code == 503
        answer.append(True)
        assert slow.result() == (200, None, b"/slow")
        flavour.wait_until(lambda: relay.listener_count() == 0)
    assert handling == ["/slow"]


@scenario
def a_closing_listener_ends_the_exchange_on_a_rendezvous_and_takes_no_more(
    flavour: Flavour, relay: RunningRelay
) -> None:
    seen: list[str] = []
    release: list[bool] = []

    def handler(request: HttpRequest) -> HttpResponse:
        seen.append(request.path)
        if request.path == "/slow":
            flavour.wait_until(lambda: bool(release))
        body = b"x" * 70_000 if request.path == "/big" else request.path.encode()
        return HttpResponse(200, body=body)

    headers = {"ServiceBusAuthorization": relay.token()}
    with httpx.Client(headers=headers, timeout=30) as client:

        def get(path: str) -> httpx.Response:
            return flavour.blocking(lambda: client.get(relay.http_url(path)))

        with echo_listener(flavour, relay, request_handler=handler) as listener:
            # Too big for the control channel: the answer opens a rendezvous, which the relay
            # then keeps for this sender's next requests.
            assert get("/big").status_code == 200
            slow = flavour.start(lambda: get("/slow"))
            flavour.wait_until(lambda: seen == ["/big", "/slow"])
            listener.close()
            release.append(True)
            answered = slow.result()
            assert (answered.status_code, answered.content) == (200, b"/slow")
            # The exchange over, the closing listener retires the rendezvous: the relay then has
            # no listener left to ask (502), unless the request overtook the close (503).
            after = get("/after")
    assert after.status_code in (502, 503), after.text
    assert seen == ["/big", "/slow"]  # no handler saw it


@scenario
def iterating_over_accepted_connections(flavour: Flavour, relay: RunningRelay) -> None:
    def sender(number: int) -> str | bytes:
        with flavour.connect(relay.connection_string()) as ws:
            ws.send(f"hello {number}")
            return ws.recv(timeout=10)

    with flavour.Listener.from_connection_string(relay.connection_string()) as listener:
        senders = [flavour.start(functools.partial(sender, n)) for n in range(3)]
        for served, ws in enumerate(listener, start=1):
            with ws:
                ws.send(f"{ws.recv(timeout=10)!s} back")
            if served == 3:
                break
        assert sorted(str(s.result()) for s in senders) == [f"hello {n} back" for n in range(3)]
        with pytest.raises(TimeoutError):
            listener.accept(timeout=0.1)


@scenario
def tls_with_a_trusted_ca_and_a_refused_certificate(flavour: Flavour, relay: RunningRelay) -> None:
    with _tls_relay(relay) as (secure, trusted):
        cs = secure.connection_string()
        listener = flavour.Listener.from_connection_string(
            cs, connection_handler=echo, ssl_context=trusted
        )
        with listener, flavour.connect(cs, ssl_context=trusted) as ws:
            ws.send(pattern(3 * MiB))
            assert ws.recv(timeout=30) == pattern(3 * MiB)
            with pytest.raises(CertificateError, match="certificate"), flavour.connect(cs):
                pytest.fail("the default context trusts no development CA")


@scenario
def many_workers_send_on_one_websocket(flavour: Flavour, relay: RunningRelay) -> None:
    def talk(ws: WebSocket, worker: int) -> None:
        for number in range(20):
            ws.send(f"{worker}:{number}:" + "x" * 50_000)

    with echo_listener(flavour, relay), flavour.connect(relay.connection_string()) as ws:
        work = [functools.partial(talk, ws, worker) for worker in range(10)]
        writing = flavour.start(lambda: flavour.concurrently(work))
        echoed = [ws.recv(timeout=30) for _ in range(200)]
        writing.result()
    assert sorted(echoed) == sorted(
        f"{worker}:{number}:" + "x" * 50_000 for worker in range(10) for number in range(20)
    )


@scenario
def dead_connections_are_noticed_by_their_timers(flavour: Flavour, relay: RunningRelay) -> None:
    with mute_server(answer=False) as address:
        endpoint = RelayEndpoint(namespace=address, path="hc1", secure=False)
        with (
            pytest.raises(RelayTimeoutError),
            flavour.connect(endpoint, connect_timeout=0.5),
        ):
            pytest.fail("nothing answered")
    with mute_server(answer=True) as address:
        endpoint = RelayEndpoint(namespace=address, path="hc1", secure=False)
        keepalive = KeepAlive(ping_interval=0.2, pong_timeout=0.3)
        with (
            flavour.connect(endpoint, keepalive=keepalive) as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout=10)
    assert closed.value.code == 1006
    assert isinstance(closed.value.__cause__, RelayTimeoutError)


@contextmanager
def mute_server(*, answer: bool) -> Iterator[str]:
    """A server on 127.0.0.1 that accepts one WebSocket (``answer``), then never says a word."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with suppress(OSError), server.accept()[0] as client:
            head = b""
            while b"\r\n\r\n" not in head:
                head += client.recv(4096)
            if answer:
                key = next(
                    line.split(b":", 1)[1].strip()
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key:")
                )
                magic = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's, with SHA-1
                digest = hashlib.sha1(key + magic, usedforsecurity=False).digest()
                client.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                    + base64.b64encode(digest)
                    + b"\r\n\r\n"
                )
            while client.recv(4096):
                pass  # hears pings and closes, answers nothing

    thread = threading.Thread(target=serve, name="mute-server", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        thread.join(10)


@scenario
def connections_tunnel_through_an_http_connect_proxy(flavour: Flavour, relay: RunningRelay) -> None:
    cs = relay.connection_string()
    with connect_proxy() as (port, tunnels), _environment(HTTP_PROXY=f"http://127.0.0.1:{port}"):
        with (
            flavour.Listener.from_connection_string(cs, connection_handler=echo),
            flavour.connect(cs) as ws,
        ):
            ws.send("through the proxy")
            assert ws.recv(timeout=10) == "through the proxy"
        assert len(tunnels) == 3  # the control channel, the sender, the accept rendezvous
        assert set(tunnels) == {relay.address}
    with connect_proxy(refuse=True) as (port, _):
        address = f"127.0.0.1:{port}"
        with (
            _environment(HTTP_PROXY=address),
            pytest.raises(ProxyError, match="403 Forbidden by policy"),
            flavour.connect(cs),
        ):
            pytest.fail("the proxy refused the tunnel")


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables (and no proxy exceptions) for the block."""
    with mock.patch.dict(os.environ, values):
        for name in ("NO_PROXY", "no_proxy"):
            os.environ.pop(name, None)
        yield


@contextmanager
def connect_proxy(*, refuse: bool = False) -> Iterator[tuple[int, list[str]]]:
    """A minimal HTTP CONNECT proxy on 127.0.0.1, in threads, recording the tunnels it opened."""
    tunnels: list[str] = []
    server = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def start(function: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=function, args=args, name="proxy", daemon=True)
        thread.start()
        threads.append(thread)

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def handle(client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(4096)
                if not data:
                    return
                head += data
            if refuse:
                client.sendall(b"HTTP/1.1 403 Forbidden by policy\r\n\r\n")
                return
            target = head.split(b" ")[1].decode()
            host, _, port = target.rpartition(":")
            tunnels.append(target)
            with socket.create_connection((host, int(port))) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                backwards = threading.Thread(target=pipe, args=(upstream, client), name="proxy")
                backwards.start()
                pipe(client, upstream)
                backwards.join()

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            start(handle, client)

    start(serve)
    try:
        yield server.getsockname()[1], tunnels
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        server.close()
        for thread in threads:
            thread.join(10)


@contextmanager
def _tls_relay(relay: RunningRelay) -> Iterator[tuple[RunningRelay, ssl.SSLContext]]:
    with tempfile.TemporaryDirectory() as directory:
        certificates = ensure_development_certificates(Path(directory))
        context = server_ssl_context(certificates.certificate, certificates.private_key)
        secure = RunningRelay(relay.portal, ssl_context=context)
        secure.start()
        try:
            yield secure, client_ssl_context(certificates.ca_certificate)
        finally:
            secure.stop()

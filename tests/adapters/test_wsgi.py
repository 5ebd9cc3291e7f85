"""WSGI apps behind the local relay: a Flask app and plain WSGI apps for the edge cases, served
by the sync and gevent transports, with httpx as the sender, over real sockets on 127.0.0.1.

The relay runs on an event loop in a background thread. A gevent server runs in a thread of its
own, on that thread's hub, so nothing is monkey-patched in the test process.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from hyco_adapters.hosting import header_bytes
from hyco_adapters.wsgi import (
    AppImportError,
    Environ,
    Server,
    StartResponse,
    Transport,
    WSGIApp,
    load_app,
    serve,
)
from hyco_adapters.wsgi.request import Input
from hyco_conformance.harness import ROOT_KEY, relay_config
from hyco_core import EndpointNotFoundError, create_relay_send_uri, create_relay_token
from hyco_relay.config import parse_config
from hyco_relay.server import Relay, serve_relay
from hyco_transports.auth import RelayEndpoint
from hyco_transports.httpx import RelayAuth

from .apps import flask_app

ROOT = Path(__file__).resolve().parents[2]
FLASK_APP = "tests.adapters.apps.flask_app:app"
TRANSPORTS: list[Transport] = ["sync", "gevent"]

CONFIG = relay_config(request_timeout=20.0, rendezvous_timeout=10.0)


class RunningRelay:
    def __init__(self, portal: BlockingPortal, relay: Relay) -> None:
        self.portal = portal
        self.relay = relay

    def endpoint(self, entity: str = "hc1") -> RelayEndpoint:
        return RelayEndpoint.from_connection_string(self.relay.connection_string(entity, "root"))

    def listener_count(self, entity: str = "hc1") -> int:
        count: int = self.portal.call(self.relay.listener_count, "localhost", entity)
        return count


@pytest.fixture(scope="module")
def relay() -> Iterator[RunningRelay]:
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(serve_relay(parse_config(CONFIG))) as running,
    ):
        yield RunningRelay(portal, running)


@pytest.fixture(autouse=True)
def fresh_app() -> None:
    flask_app.closed.clear()


@contextmanager
def serving(
    relay: RunningRelay, app: WSGIApp, entity: str = "hc1", **options: Any
) -> Iterator[httpx.Client]:
    """Serve ``app`` in a thread of its own; yield an httpx sender for the hybrid connection.

    Each request has a connection of its own, so that small ones reach the listener inline.
    """
    endpoint = relay.endpoint(entity)
    server = Server(app, endpoint, **options)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            server.serve_forever()
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=run, name="wsgi-server")
    thread.start()
    try:
        assert server.wait_online(10), failures
        auth = RelayAuth(endpoint)
        with httpx.Client(
            base_url=auth.url(),
            auth=auth,
            timeout=30,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            yield client
    finally:
        server.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert failures == []


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


# -- the Flask app, on both transports ---------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_flask_routes_and_urls_work_as_if_mounted_at_the_hybrid_connection(
    relay: RunningRelay, transport: Transport
) -> None:
    address = relay.relay.address
    with serving(relay, flask_app.app, transport=transport) as client:
        item = client.get("/items/7", params={"q": "x y"})
        missing = client.get("/nowhere")
    assert item.status_code == 200
    assert item.json() == {
        "item_id": 7,
        "q": "x y",
        "script_name": "/hc1",
        "path": "/items/7",
        "url": f"http://{address}/hc1/items/7?q=x+y",
        "url_for": f"http://{address}/hc1/items/7",
        "host": address,
        "remote_addr": "127.0.0.1",
        "multithread": True,
    }
    assert missing.status_code == 404


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_post_bodies_small_and_large_are_echoed(relay: RunningRelay, transport: Transport) -> None:
    big = os.urandom(1 << 20)
    with serving(relay, flask_app.app, transport=transport) as client:
        small = client.post("/echo", content=b"hello", headers={"content-type": "application/x-a"})
        large = client.post("/echo", content=big)
    assert (small.status_code, small.content) == (200, b"hello")
    assert small.headers["content-type"] == "application/x-a"
    # A small body arrives whole, so its length is known; a large one is streamed.
    assert small.headers["x-content-length"] == "5"
    assert large.status_code == 200
    assert large.content == big


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_generated_response_of_several_mib_arrives_whole(
    relay: RunningRelay, transport: Transport
) -> None:
    digest = hashlib.sha256()
    size = 0
    with (
        serving(relay, flask_app.app, transport=transport) as client,
        client.stream("GET", "/stream", params={"mib": 8}) as response,
    ):
        for piece in response.iter_bytes():
            digest.update(piece)
            size += len(piece)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert size == 8 << 20
    assert digest.hexdigest() == hashlib.sha256(flask_app.CHUNK * 128).hexdigest()
    assert flask_app.closed == ["/stream"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_streamed_upload_is_read_piece_by_piece(
    relay: RunningRelay, transport: Transport
) -> None:
    def upload() -> Iterator[bytes]:
        for _ in range(128):
            yield flask_app.CHUNK

    with serving(relay, flask_app.app, transport=transport) as client:
        response = client.post("/sha256", content=upload())
        lines = client.post("/lines", content=b"one\ntwo\nthree")
    assert response.json() == {
        "sha256": hashlib.sha256(flask_app.CHUNK * 128).hexdigest(),
        "size": 8 << 20,
    }
    assert lines.json() == {"lines": ["one\n", "two\n", "three"]}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_app_error_is_a_500_that_does_not_leak_the_error(
    relay: RunningRelay, transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, "hyco.adapters.wsgi"),
        serving(relay, flask_app.app, transport=transport) as client,
    ):
        response = client.get("/fail")
    assert response.status_code == 500
    assert flask_app.SECRET not in response.text
    # Flask turns the error into its own 500 page; it logs the error itself.
    assert "Internal Server Error" in response.text


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_failure_after_the_body_started_cuts_the_response(
    relay: RunningRelay, transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, "hyco.adapters.wsgi"),
        serving(relay, flask_app.app, transport=transport) as client,
    ):
        with pytest.raises(httpx.HTTPError), client.stream("GET", "/fail-midway") as response:
            response.read()
        after = client.get("/items/1")
    assert after.status_code == 200
    assert "after its response started" in caplog.text
    assert flask_app.SECRET not in caplog.text.split("Traceback")[0]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cookies_go_both_ways_and_only_the_last_one_set_is_sent(
    relay: RunningRelay, transport: Transport
) -> None:
    with serving(relay, flask_app.app, transport=transport) as client:
        set_response = client.get("/cookies/set")
        read = client.get("/cookies/read", headers={"cookie": "session=abc123"})
        two = client.get("/cookies/two")
    assert set_response.cookies["session"] == "abc123"
    assert "HttpOnly" in set_response.headers["set-cookie"]
    assert read.json() == {"session": "abc123"}
    assert dict(two.cookies) == {"second": "2"}


def test_gevent_serving_patches_nothing(relay: RunningRelay) -> None:
    import gevent.monkey  # type: ignore[import-untyped]

    with serving(relay, flask_app.app, transport="gevent") as client:
        assert client.get("/items/3").status_code == 200
    assert not gevent.monkey.is_anything_patched()


def test_a_nested_entity_path_is_the_script_name(relay: RunningRelay) -> None:
    with serving(relay, flask_app.app, entity="deep/path") as client:
        item = client.get("/items/5")
    assert item.json()["script_name"] == "/deep/path"
    assert item.json()["url_for"].endswith("/deep/path/items/5")


def test_script_name_can_be_given(relay: RunningRelay) -> None:
    captured: list[Environ] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        captured.append(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with serving(relay, app, script_name="") as client:
        client.get("/caf%C3%A9/x", params={"a": "1"})
    with serving(relay, app, script_name="/hc1/caf\u00e9") as client:
        client.get("/caf%C3%A9/x")
        client.get("/cafeteria")
    whole, mounted, elsewhere = captured
    assert (whole["SCRIPT_NAME"], whole["PATH_INFO"]) == ("", wsgi("/hc1/café/x"))
    assert whole["QUERY_STRING"] == "a=1"
    assert (mounted["SCRIPT_NAME"], mounted["PATH_INFO"]) == (wsgi("/hc1/café"), "/x")
    assert elsewhere["PATH_INFO"] == "/hc1/cafeteria"


def wsgi(text: str) -> str:
    """A PEP 3333 native string: the UTF-8 bytes of ``text``, one latin-1 character each."""
    return text.encode().decode("latin-1")


# -- plain WSGI apps for the edge cases (sync transport) --------------------------------------


def test_the_environ_follows_pep_3333(relay: RunningRelay) -> None:
    captured: list[Environ] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        captured.append(dict(environ))
        start_response("200 OK", [])
        return []

    with serving(relay, app) as client:
        client.post(
            "/a%20b",
            content=b"xyz",
            headers={"content-type": "text/plain", "x-thing": "1", "x_sneaky": "2"},
        )
    environ = captured[0]
    address = relay.relay.address
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["SCRIPT_NAME"] == "/hc1"
    assert environ["PATH_INFO"] == "/a b"
    assert environ["QUERY_STRING"] == ""
    assert environ["SERVER_NAME"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == address.rpartition(":")[2]
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "3"
    assert environ["HTTP_X_THING"] == "1"
    assert "HTTP_X_SNEAKY" not in environ
    assert environ["HTTP_HOST"] == address
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert int(environ["REMOTE_PORT"]) > 0
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is False
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.errors"] is sys.stderr


class Closing:
    """An app iterable that records that it was closed."""

    def __init__(self, pieces: Iterable[bytes], log: list[str]) -> None:
        self._pieces = iter(pieces)
        self._log = log

    def __iter__(self) -> Iterator[bytes]:
        return self._pieces

    def close(self) -> None:
        self._log.append("closed")


class FailingClose(Closing):
    def close(self) -> None:
        self._log.append("close failed")
        raise OSError("cannot close")


def test_write_exc_info_head_and_close(relay: RunningRelay) -> None:
    log: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/write":
            write = start_response("201 Made", [("X-A", "1"), ("Content-Length", "99")])
            write(b"written ")
            return Closing([b"", b"then yielded"], log)
        if path == "/exc-info":
            start_response("200 OK", [])
            try:
                raise ValueError("first attempt")
            except ValueError:
                start_response("418 Teapot", [("X-B", "2")], sys.exc_info())
            return Closing([b"short and stout"], log)
        if path == "/twice":
            start_response("200 OK", [])
            start_response("200 OK", [])
        if path == "/no-start":
            return Closing([b"body"], log)
        if path == "/bad-status":
            start_response("OK", [])
        if path == "/bad-header":
            start_response("200 OK", [("X-C", "a\r\nb")])
        if path == "/str-body":
            start_response("200 OK", [])
            return ["text"]  # type: ignore[list-item]
        if path == "/silent":
            return Closing([b""], log)
        if path == "/headers-not-a-list":
            start_response("200 OK", (("X-D", "1"),))  # type: ignore[arg-type]
        if path == "/header-not-a-str":
            start_response("200 OK", [("X-D", 1)])  # type: ignore[list-item]
        if path == "/header-name":
            start_response("200 OK", [("X D", "1")])
        if path == "/close-fails":
            start_response("200 OK", [])
            return FailingClose([b"fine"], log)
        if path == "/gaps":
            start_response("200 OK", [])
            return Closing([b"a" * (1 << 17), b"", b"b"], log)
        start_response("200 OK", [("Connection", "close"), ("Content-Length", "4")])
        return Closing([b"body"], log)

    with serving(relay, app) as client:
        written = client.get("/write")
        exc_info = client.get("/exc-info")
        head = client.head("/head")
        failures = [
            client.get(path).status_code
            for path in (
                "/twice",
                "/no-start",
                "/bad-status",
                "/bad-header",
                "/str-body",
                "/silent",
                "/headers-not-a-list",
                "/header-not-a-str",
                "/header-name",
            )
        ]
        close_fails = client.get("/close-fails")
        gaps = client.get("/gaps")
    assert (written.status_code, written.reason_phrase) == (201, "Made")
    assert written.content == b"written then yielded"
    assert written.headers["x-a"] == "1"
    assert (exc_info.status_code, exc_info.content) == (418, b"short and stout")
    assert exc_info.headers["x-b"] == "2"
    assert (head.status_code, head.content) == (200, b"")
    assert "connection" not in head.headers or head.headers["connection"] != "close"
    assert failures == [500] * 9
    assert close_fails.content == b"fine"
    assert gaps.content == b"a" * (1 << 17) + b"b"
    # Every iterable the app returned was closed, whatever became of the response.
    assert log == ["closed"] * 5 + ["close failed", "closed"]


def test_exc_info_after_the_body_started_reraises_and_cuts_the_response(
    relay: RunningRelay,
) -> None:
    seen: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"x" * (1 << 17)
        try:
            raise ValueError("late")
        except ValueError:
            try:
                start_response("500 Oops", [], sys.exc_info())
            except ValueError as error:
                seen.append(str(error))
                raise

    with (
        serving(relay, app) as client,
        pytest.raises(httpx.HTTPError),
        client.stream("GET", "/") as response,
    ):
        response.read()
    assert seen == ["late"]


def test_requests_beyond_the_workers_wait_for_a_slot(relay: RunningRelay) -> None:
    inside = threading.Semaphore(0)
    release = threading.Event()
    most = 0
    current = 0
    lock = threading.Lock()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        nonlocal most, current
        with lock:
            current += 1
            most = max(most, current)
        inside.release()
        release.wait(10)
        with lock:
            current -= 1
        start_response("200 OK", [])
        return [b"done"]

    results: list[int] = []
    with serving(relay, app, workers=2) as client:

        def call() -> None:
            results.append(client.get("/").status_code)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        assert inside.acquire(timeout=10)
        assert inside.acquire(timeout=10)
        assert not inside.acquire(timeout=0.5)
        release.set()
        for thread in threads:
            thread.join(30)
    assert results == [200] * 4
    assert most == 2


def test_websockets_are_refused_with_501(relay: RunningRelay) -> None:
    address = relay.relay.address
    uri = create_relay_send_uri(address, "hc1", secure=False)
    token = create_relay_token(f"sb://{address}/hc1", "root", ROOT_KEY, now=time.time())
    with (
        serving(relay, flask_app.app),
        pytest.raises(InvalidStatus) as refused,
        ws_connect(uri, additional_headers={"ServiceBusAuthorization": token}),
    ):
        pass
    assert refused.value.response.status_code == 501


def test_an_unknown_hybrid_connection_fails_fast(relay: RunningRelay) -> None:
    endpoint = relay.endpoint()
    missing = RelayEndpoint(
        namespace=endpoint.namespace,
        path="nope",
        token_provider=endpoint.token_provider,
        secure=False,
    )
    with pytest.raises(EndpointNotFoundError):
        Server(flask_app.app, missing).serve_forever()


def test_bad_options_are_refused() -> None:
    endpoint = RelayEndpoint(namespace="example.servicebus.windows.net", path="hc")
    with pytest.raises(ValueError, match="transport"):
        Server(flask_app.app, endpoint, transport="asyncio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        Server(flask_app.app, endpoint, workers=0)
    server = Server(flask_app.app, endpoint, transport="gevent")
    assert repr(server) == "<Server example.servicebus.windows.net/hc gevent>"
    assert server.script_name == "/hc"


# -- serve() and load_app() -------------------------------------------------------------------


def test_serve_runs_until_sigterm_and_then_stops_in_order(relay: RunningRelay) -> None:
    connection_string = relay.relay.connection_string("hc1", "root")
    code = (
        "from hyco_adapters.wsgi import load_app, serve; "
        f"serve(load_app({FLASK_APP!r}), {connection_string!r})"
    )
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        eventually(lambda: relay.listener_count() == 1, timeout=20)
        auth = RelayAuth(relay.endpoint())
        response = httpx.get(auth.url("/items/9"), auth=auth, timeout=30)
        assert response.json()["item_id"] == 9
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, errors[-3000:]
    eventually(lambda: relay.listener_count() == 0)


def test_serve_raises_the_listeners_typed_error(relay: RunningRelay) -> None:
    connection_string = relay.relay.connection_string("hc1", "root")
    with pytest.raises(EndpointNotFoundError):
        serve(flask_app.app, connection_string, path="nope")


def test_load_app_imports_the_app_or_says_why_not() -> None:
    assert load_app(FLASK_APP) is flask_app.app
    assert load_app("tests.adapters.apps.flask_app:app.wsgi_app") == flask_app.app.wsgi_app
    with pytest.raises(AppImportError, match="module:attribute"):
        load_app("tests.adapters.apps.flask_app")
    with pytest.raises(AppImportError, match="no attribute"):
        load_app("tests.adapters.apps.flask_app:nothing")
    with pytest.raises(AppImportError, match="not callable"):
        load_app("tests.adapters.apps.flask_app:CHUNK")


# -- wsgi.input --------------------------------------------------------------------------------


reads = st.lists(
    st.tuples(st.sampled_from(["read", "readline"]), st.one_of(st.none(), st.integers(-1, 40))),
    max_size=12,
)


@given(pieces=st.lists(st.binary(max_size=30), max_size=8), calls=reads)
def test_wsgi_input_reads_as_a_file_over_the_same_bytes_would(
    pieces: list[bytes], calls: list[tuple[str, int | None]]
) -> None:
    body = Input(iter(pieces))
    model = io.BytesIO(b"".join(pieces))
    for method, size in calls:
        assert getattr(body, method)(size) == getattr(model, method)(size)
    assert body.readlines() == model.readlines()


def test_header_values_latin_1_cannot_hold_travel_as_utf_8() -> None:
    assert header_bytes("café") == "café".encode("latin-1")
    assert header_bytes("snow ☃") == "snow ☃".encode()


def test_wsgi_input_iterates_lines_and_honours_readlines_hints() -> None:
    assert list(Input(iter([b"a\nb", b"b\n", b"c"]))) == [b"a\n", b"bb\n", b"c"]
    assert Input(iter([b"a\nb\nc\n"])).readlines(3) == [b"a\n", b"b\n"]

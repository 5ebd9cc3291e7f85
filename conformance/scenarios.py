"""The conformance scenarios: what every listener and sender must get right.

Each scenario drives the driver under test through the harness and asserts from the outside.
A scenario fails with an ``AssertionError`` (or any exception) whose message is the reason.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from websockets.exceptions import ConnectionClosed, InvalidStatus

from .driver import AcceptInfo, Decision, HttpAnswer, HttpCall, ListenerSpec, Refused, SenderClosed
from .harness import Harness, blackhole

__all__ = ["SCENARIOS", "Scenario"]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    run: Callable[[Harness], None]


SCENARIOS: list[Scenario] = []


def scenario(description: str) -> Callable[[Callable[[Harness], None]], Callable[[Harness], None]]:
    def register(function: Callable[[Harness], None]) -> Callable[[Harness], None]:
        SCENARIOS.append(Scenario(function.__name__, description, function))
        return function

    return register


E = TypeVar("E", bound=BaseException)


def _raised(kind: type[E], action: Callable[[], object], what: str) -> E:
    """Run ``action``, which must raise ``kind``; return the exception to inspect."""
    try:
        action()
    except kind as error:
        return error
    raise AssertionError(what)


def _connect_and_close(h: Harness) -> None:
    with h.sender():
        pass


def _payload(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def _echo(spec: ListenerSpec | None = None) -> ListenerSpec:
    return spec or ListenerSpec()


@scenario("text and binary messages of 0 B to 16 MiB echo byte-exact through the relay")
def echo_sizes(h: Harness) -> None:
    listener = h.driver.open_listener(h.connection_string(), _echo())
    try:
        with h.sender() as ws:
            for size in (0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20):
                data = _payload(size)
                ws.send(data)
                assert ws.recv(timeout=60) == data, f"binary echo of {size} bytes differs"
            for text in ("", "hé ✓", "x" * 70_000):
                ws.send(text)
                assert ws.recv(timeout=20) == text, "text echo differs"
    finally:
        listener.close()


@scenario("a fragmented message from a plain client arrives whole and keeps its type")
def fragmented_messages(h: Harness) -> None:
    listener = h.driver.open_listener(h.connection_string(), _echo())
    try:
        with h.sender() as ws:
            ws.send(["frag", "ment", "ed"])
            assert ws.recv(timeout=10) == "fragmented"
            ws.send([b"\x00" * 70_000, b"\x01" * 70_000])
            assert ws.recv(timeout=10) == b"\x00" * 70_000 + b"\x01" * 70_000
    finally:
        listener.close()


@scenario("the listener's accept decision sees headers, suffix and query, and picks a subprotocol")
def accept_information_and_subprotocol(h: Harness) -> None:
    listener = h.driver.open_listener(
        h.connection_string(), ListenerSpec(decide=lambda info: Decision.accept("v2"))
    )
    try:
        with h.sender(
            suffix="rooms/7",
            query="user=ann&sb-hc-extra=1&plain",
            subprotocols=("v1", "v2"),
            headers={"X-Custom": "yes"},
        ) as ws:
            assert ws.subprotocol == "v2", f"the sender got subprotocol {ws.subprotocol!r}"
            ws.send("hi")
            assert ws.recv(timeout=10) == "hi"
        (info,) = listener.accepted()
        assert info.suffix == "/rooms/7", f"suffix {info.suffix!r}"
        assert info.query == "user=ann&plain", f"query {info.query!r} (sb-hc-* must be gone)"
        headers = {name.lower(): value for name, value in info.headers.items()}
        assert headers.get("x-custom") == "yes", "a custom header did not reach the listener"
        assert "servicebusauthorization" not in headers, "the sender's token leaked"
        assert info.subprotocols == ("v1", "v2")
    finally:
        listener.close()


@scenario("a rejection reaches the sender with the listener's status and description")
def reject_with_status(h: Harness) -> None:
    decide = lambda info: Decision.reject(451, "Not here")  # noqa: E731
    listener = h.driver.open_listener(h.connection_string(), ListenerSpec(decide=decide))
    try:
        refused = _raised(InvalidStatus, lambda: _connect_and_close(h), "the sender was accepted")
        assert refused.response.status_code == 451, refused.response.status_code
        assert refused.response.reason_phrase.startswith("Not here")
    finally:
        listener.close()


@scenario("an accept handler that fails rejects the sender with 502")
def accept_handler_failure(h: Harness) -> None:
    decide = lambda info: Decision.failure()  # noqa: E731
    listener = h.driver.open_listener(h.connection_string(), ListenerSpec(decide=decide))
    try:
        refused = _raised(InvalidStatus, lambda: _connect_and_close(h), "the sender was accepted")
        assert refused.response.status_code == 502, refused.response.status_code
    finally:
        listener.close()


@scenario("close codes and reasons pass end to end in both directions")
def close_codes(h: Harness) -> None:
    listener = h.driver.open_listener(h.connection_string(), _echo())
    try:
        with h.sender() as ws:
            ws.send("close 4001 listener says bye")
            closed = _raised(
                ConnectionClosed, lambda: ws.recv(timeout=10), "the listener did not close"
            )
            assert closed.rcvd is not None
            assert (closed.rcvd.code, closed.rcvd.reason) == (4001, "listener says bye")
        with h.sender() as ws:
            ws.close(4002, "sender says bye")
        deadline = time.monotonic() + 10
        while (4002, "sender says bye") not in listener.closes():
            assert time.monotonic() < deadline, f"listener saw {listener.closes()}"
            time.sleep(0.02)
    finally:
        listener.close()


@scenario("the driver's sender talks to the driver's listener, subprotocol and close code included")
def sender_to_listener(h: Harness) -> None:
    def decide(info: AcceptInfo) -> Decision:
        return Decision.accept("chat" if "chat" in info.subprotocols else None)

    listener = h.driver.open_listener(h.connection_string(), ListenerSpec(decide=decide))
    try:
        sender = h.driver.connect(h.connection_string(), subprotocols=("chat",), suffix="x")
        try:
            assert sender.subprotocol == "chat"
            for message in ("text", b"\x00binary", _payload(1 << 20)):
                sender.send(message)
                assert sender.recv(10) == message
            sender.send("close 4003 done")
            ended = _raised(SenderClosed, lambda: sender.recv(10), "the sender was not closed")
            assert (ended.code, ended.reason) == (4003, "done")
        finally:
            sender.close()
        token_query = h.driver.connect(h.connection_string(), token_in_query=True)
        token_query.send("q")
        assert token_query.recv(10) == "q"
        token_query.close()
    finally:
        listener.close()


@scenario("refused senders fail with the relay's status: 404 entity, 404 no listener, 401")
def sender_refusals(h: Harness) -> None:
    cases = [
        (h.connection_string().replace("EntityPath=hc1", "EntityPath=missing"), 404),
        (h.connection_string(), 404),
        (h.connection_string(key="d3Jvbmcta2V5"), 401),
    ]
    for connection_string, status in cases:
        refused = _raised(
            Refused,
            lambda cs=connection_string: h.driver.connect(cs).close(),  # type: ignore[misc]
            f"expected a refusal with {status}",
        )
        assert refused.status_code == status, f"expected {status}, got {refused.status_code}"


@scenario("a listener with a bad key fails to open with 401")
def listener_refused(h: Harness) -> None:
    refused = _raised(
        Refused,
        lambda: h.driver.open_listener(h.connection_string(key="d3Jvbmcta2V5"), _echo()).close(),
        "the listener opened with a wrong key",
    )
    assert refused.status_code == 401, refused.status_code


def _reverse(call: HttpCall) -> HttpAnswer:
    return HttpAnswer(
        status=201,
        headers={"X-Path": call.path, "X-Query": call.query, "X-Method": call.method},
        body=call.body[::-1],
    )


@scenario("HTTP requests and responses of 0 B to 10 MiB, inline and over a rendezvous")
def http_sizes(h: Harness) -> None:
    listener = h.driver.open_listener(h.connection_string(), ListenerSpec(answer=_reverse))
    try:
        with h.http() as client:
            for size in (0, 1, 65535, 65536, 65537, 10 << 20):
                body = _payload(size)
                response = client.post("/items/7", params={"a": "1"}, content=body)
                assert response.status_code == 201, (size, response.status_code)
                assert response.content == body[::-1], f"{size}-byte exchange differs"
                assert response.headers["x-path"] == "/items/7"
                assert response.headers["x-query"] == "a=1"
                assert response.headers["via"].endswith("localhost")
    finally:
        listener.close()


@scenario("a chunked upload streams to the listener; a streamed answer streams back")
def http_streaming(h: Harness) -> None:
    def digest(call: HttpCall) -> HttpAnswer:
        return HttpAnswer(
            headers={"X-SHA256": hashlib.sha256(call.body).hexdigest()},
            body=call.body * 3,
            streamed=True,
        )

    listener = h.driver.open_listener(h.connection_string(), ListenerSpec(answer=digest))
    try:
        pieces = [_payload(30_000) for _ in range(20)]
        with h.http() as client:
            response = client.put("/upload", content=iter(pieces))
        body = b"".join(pieces)
        assert response.status_code == 200, response.status_code
        assert response.headers["x-sha256"] == hashlib.sha256(body).hexdigest()
        assert response.content == body * 3
    finally:
        listener.close()


@scenario("several large requests on one sender connection reuse its rendezvous")
def http_rendezvous_reuse(h: Harness) -> None:
    listener = h.driver.open_listener(h.connection_string(), ListenerSpec(answer=_reverse))
    try:
        with h.http() as client:
            for index in range(5):
                body = _payload(200_000 + index)
                response = client.post("/again", content=body)
                assert response.status_code == 201
                assert response.content == body[::-1]
    finally:
        listener.close()


@scenario("no request handler answers 501; a failing one 500 without its error text")
def http_handler_errors(h: Harness) -> None:
    listener = h.driver.open_listener(h.connection_string(), _echo())
    try:
        with h.http() as client:
            assert client.get("/").status_code == 501
    finally:
        listener.close()
    failing = lambda call: HttpAnswer(fail=True)  # noqa: E731
    listener = h.driver.open_listener(h.connection_string(), ListenerSpec(answer=failing))
    try:
        with h.http() as client:
            response = client.get("/")
            assert response.status_code == 500, response.status_code
            assert b"Traceback" not in response.content
    finally:
        listener.close()


@scenario("a listener with 3-second tokens stays online for a minute, renewing them")
def token_renewal(h: Harness) -> None:
    listener = h.driver.open_listener(h.connection_string(), ListenerSpec(token_lifetime=3))
    try:
        time.sleep(60)
        statuses = listener.statuses()
        assert "offline" not in statuses, f"the listener went offline: {statuses}"
        with h.sender() as ws:
            ws.send("still here")
            assert ws.recv(timeout=10) == "still here"
    finally:
        listener.close()


@scenario("a relay restart takes the listener offline; it comes back online by itself")
def relay_restart(h: Harness) -> None:
    listener = h.driver.open_listener(h.connection_string(), _echo())
    try:
        h.restart_relay()
        h.wait_for_listeners(1, timeout=20)
        # The relay counts the listener once it accepted the control channel; the listener
        # reports online a moment later, when it has read the answer.
        deadline = time.monotonic() + 10
        while listener.statuses()[-1] != "online" and time.monotonic() < deadline:
            time.sleep(0.02)
        statuses = listener.statuses()
        assert "offline" in statuses, statuses
        assert statuses[-1] == "online", statuses
        with h.sender() as ws:
            ws.send("back")
            assert ws.recv(timeout=10) == "back"
    finally:
        listener.close()


@scenario("a silent connection (no pong) is detected and the listener reconnects")
def ping_timeout(h: Harness) -> None:
    with blackhole(h.relay.port) as hole:
        spec = ListenerSpec(ping_interval=1.0, pong_timeout=1.0)
        listener = h.driver.open_listener(
            h.connection_string(address=f"127.0.0.1:{hole.port}"), spec
        )
        try:
            h.wait_for_listeners(1)
            hole.silent.set()
            deadline = time.monotonic() + 15
            while "offline" not in listener.statuses():
                assert time.monotonic() < deadline, "the dead connection was not detected"
                time.sleep(0.05)
            hole.silent.clear()
            while listener.statuses()[-1] != "online":
                assert time.monotonic() < deadline + 15, listener.statuses()
                time.sleep(0.05)
        finally:
            listener.close()


@scenario("25 listeners fit on one hybrid connection; the 26th is refused with 403")
def listener_limit(h: Harness) -> None:
    listeners = []
    try:
        for _ in range(25):
            listeners.append(h.driver.open_listener(h.connection_string(), _echo()))
        refused = _raised(
            Refused,
            lambda: listeners.append(h.driver.open_listener(h.connection_string(), _echo())),
            "a 26th listener was admitted",
        )
        assert refused.status_code == 403, refused.status_code
    finally:
        for listener in listeners:
            listener.close()


@scenario("senders are spread over 3 listeners; each gets some")
def balancing(h: Harness) -> None:
    listeners = [
        h.driver.open_listener(h.connection_string(), ListenerSpec(tracking_id=f"L{index}"))
        for index in range(3)
    ]
    try:
        for _ in range(36):
            with h.sender() as ws:
                ws.send("x")
                ws.recv(timeout=10)
        counts = [len(listener.accepted()) for listener in listeners]
        assert sum(counts) == 36
        assert all(counts), f"a listener got no sender: {counts}"
    finally:
        for listener in listeners:
            listener.close()


@scenario("100 concurrent senders echo through one listener")
def concurrent_senders(h: Harness) -> None:
    listener = h.driver.open_listener(h.connection_string(), _echo())
    failures: list[str] = []

    def one(index: int) -> None:
        try:
            with h.sender() as ws:
                message = f"sender {index}".encode() * 100
                ws.send(message)
                if ws.recv(timeout=30) != message:
                    failures.append(f"sender {index}: echo differs")
        except Exception as error:
            failures.append(f"sender {index}: {error!r}")

    try:
        threads = [threading.Thread(target=one, args=(index,)) for index in range(100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not failures, failures[:3]
    finally:
        listener.close()

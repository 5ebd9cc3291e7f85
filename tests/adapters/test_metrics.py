"""``--metrics-addr``: the figures a long-running command serves match the traffic it carried,
its readiness follows the relay's coming and going, and hostile clients of the metrics port
change nothing for the others. Each test runs the ``hyco`` command as a user does, against a
real ``hyco relay``."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hyco_core import EndpointNotFoundError
from hyco_transports import sync
from hyco_transports.httpx import RelayAuth
from tests.cli import hyco_relay, lines_of, run_hyco, start_hyco, stop

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample ``url`` serves, by name and labels."""
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def metrics_base(process: subprocess.Popen[str]) -> str:
    """The metrics server's address, which the command prints on standard error at start."""
    assert process.stderr is not None
    line = process.stderr.readline()
    assert "metrics on http://" in line, line
    return line.split("metrics on ", 1)[1].split()[0].removesuffix("/metrics")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: object, timeout: float = 20.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.1)


@contextmanager
def listening(connection_string: str, cwd: Path, *options: str) -> Iterator[str]:
    """``hyco listen`` with metrics on a free port, online; yields the metrics address."""
    process = start_hyco(
        "listen", "-c", connection_string, "--metrics-addr", "127.0.0.1:0", *options, cwd=cwd
    )
    try:
        base = metrics_base(process)
        assert lines_of(process, 2) == ["listener connecting", "listener online"]
        yield base
    finally:
        stop(process)


def test_listen_counts_each_echo_request_and_byte_and_the_relay_its_own(tmp_path: Path) -> None:
    with (
        hyco_relay("--metrics-addr", "127.0.0.1:0", cwd=tmp_path) as relay,
        listening(relay.listener, tmp_path) as listener,
    ):
        relay_metrics = metrics_base(relay.process) + "/metrics"
        messages: list[str | bytes] = ["héllo", "x" * 1000, b"\x00" * 70_000]
        sizes = [len("héllo".encode()), 1000, 70_000]
        with sync.connect(relay.listener) as websocket:
            for message in messages:
                websocket.send(message)
                assert websocket.recv() == message
            # While it is open, the relay has one sender on the hybrid connection.
            during = scrape(relay_metrics)
            entity = {"namespace": "localhost", "hybrid_connection": "hyco"}
            assert value(during, "hyco_relay_senders", **entity) == 1
            assert value(during, "hyco_relay_listeners", **entity) == 1
        bodies = [b"", b"a" * 10, b"b" * 100_000]  # the last one travels over a rendezvous
        auth = RelayAuth.from_connection_string(relay.listener)
        with httpx.Client(auth=auth, timeout=30) as client:
            for body in bodies:
                answer = client.post(auth.url("/echo"), content=body)
                assert (answer.status_code, answer.content) == (200, body)

        samples = scrape(listener + "/metrics")
        hc = {"hybrid_connection": "hyco"}
        assert value(samples, "hyco_listener_online", **hc) == 1
        accepted = {**hc, "outcome": "accepted", "status": ""}
        assert value(samples, "hyco_listener_connections_total", **accepted) == 1
        assert value(samples, "hyco_listener_accept_duration_seconds_count", **hc) == 1
        ok = {**hc, "status": "200"}
        assert value(samples, "hyco_listener_http_requests_total", **ok) == len(bodies)
        assert value(samples, "hyco_listener_http_request_duration_seconds_count", **hc) == 3
        websocket_bytes = {**hc, "kind": "websocket"}
        http_bytes = {**hc, "kind": "http"}
        for name in ("hyco_listener_received_bytes_total", "hyco_listener_sent_bytes_total"):
            assert value(samples, name, **websocket_bytes) == sum(sizes)
            assert value(samples, name, **http_bytes) == sum(map(len, bodies))
        assert value(samples, "hyco_ready") == 1

        relayed = scrape(relay_metrics)
        assert value(relayed, "hyco_relay_senders", **entity) == 0
        assert value(relayed, "hyco_relay_pending_rendezvous", **entity) == 0
        assert value(relayed, "hyco_relay_connections_total", **entity) == 1
        assert value(relayed, "hyco_relay_http_requests_total", **entity) == len(bodies)
        total = sum(sizes) + sum(map(len, bodies))
        for direction in ("to_listener", "to_sender"):
            labels = {**entity, "direction": direction}
            assert value(relayed, "hyco_relay_relayed_bytes_total", **labels) == total
        assert value(relayed, "hyco_part_up", part="relay") == 1


def test_a_rejected_sender_is_counted_with_its_status_by_both_sides(tmp_path: Path) -> None:
    with hyco_relay("--metrics-addr", "127.0.0.1:0", cwd=tmp_path) as relay:
        relay_metrics = metrics_base(relay.process) + "/metrics"
        process = start_hyco(
            "expose",
            "-c",
            relay.listener,
            "--target",
            f"db=127.0.0.1:{free_port()}",
            "--metrics-addr",
            "127.0.0.1:0",
            cwd=tmp_path,
        )
        try:
            base = metrics_base(process)
            assert lines_of(process, 1)[0].startswith("online, exposing db")
            for _ in range(2):
                with (
                    pytest.raises(EndpointNotFoundError) as refused,
                    sync.connect(relay.listener, suffix="/web"),
                ):
                    pass
                assert refused.value.status_code == 404
            samples = scrape(base + "/metrics")
            relayed = scrape(relay_metrics)
        finally:
            stop(process)
    rejected = {"hybrid_connection": "hyco", "outcome": "rejected", "status": "404"}
    assert value(samples, "hyco_listener_connections_total", **rejected) == 2
    accepted = {"hybrid_connection": "hyco", "outcome": "accepted", "status": ""}
    assert value(samples, "hyco_listener_connections_total", **accepted) == 0
    # The relay refused the sender with the listener's 404, and confirmed each rejection's
    # delivery to the listener with 410.
    assert value(relayed, "hyco_relay_refusals_total", status="404") == 2
    assert value(relayed, "hyco_relay_refusals_total", status="410") == 2
    entity = {"namespace": "localhost", "hybrid_connection": "hyco"}
    assert value(relayed, "hyco_relay_connections_total", **entity) == 0


def test_the_relay_counts_each_refusal_by_status(tmp_path: Path) -> None:
    with hyco_relay("--metrics-addr", "127.0.0.1:0", cwd=tmp_path) as relay:
        relay_metrics = metrics_base(relay.process) + "/metrics"
        auth = RelayAuth.from_connection_string(relay.listener)
        with httpx.Client(timeout=10) as client:
            # No listener: 502 for HTTP; no token: 401.
            assert client.get(auth.url("/x"), auth=auth).status_code == 502
            assert client.get(auth.url("/x")).status_code == 401
        with pytest.raises(EndpointNotFoundError), sync.connect(relay.listener):
            pass  # no listener: 404
        samples = scrape(relay_metrics)
    for status in ("401", "404", "502"):
        assert value(samples, "hyco_relay_refusals_total", status=status) == 1, status


def test_readiness_follows_the_relay_going_and_coming_back(tmp_path: Path) -> None:
    home = tmp_path / "home"  # the relay's key, kept there, survives its restart
    port = free_port()

    def start_relay() -> tuple[subprocess.Popen[str], str]:
        """``hyco relay`` on ``port``, and the listener's connection string it prints."""
        process = start_hyco("relay", "--port", str(port), cwd=tmp_path, env={"HOME": str(home)})
        lines = lines_of(process, 4)
        assert lines[0].startswith("hyco relay listening on"), lines
        return process, lines[3].split("listener: ", 1)[1]

    relay, connection_string = start_relay()
    try:
        with listening(connection_string, tmp_path) as listener:
            assert httpx.get(listener + "/readyz").status_code == 200
            relay.kill()  # gone without a goodbye
            relay.communicate()
            wait_for(lambda: httpx.get(listener + "/readyz").status_code == 503)
            down = httpx.get(listener + "/readyz")
            assert down.json() == {"ready": False, "parts": {"hyco": "down"}, "down": ["hyco"]}
            assert httpx.get(listener + "/healthz").status_code == 200
            offline = scrape(listener + "/metrics")
            assert value(offline, "hyco_listener_online", hybrid_connection="hyco") == 0
            reconnects = {
                dict(labels)["reason"]: count
                for (name, labels), count in offline.items()
                if name == "hyco_listener_reconnects_total"
            }
            assert sum(reconnects.values()) >= 1, offline
            assert all(reason.endswith("Error") for reason in reconnects)
            relay, restarted_with = start_relay()
            assert restarted_with == connection_string
            wait_for(lambda: httpx.get(listener + "/readyz").status_code == 200)
            assert value(scrape(listener + "/metrics"), "hyco_ready") == 1
    finally:
        stop(relay)


def test_hostile_clients_of_the_metrics_port_hold_up_no_one(tmp_path: Path) -> None:
    with hyco_relay(cwd=tmp_path) as relay, listening(relay.listener, tmp_path) as listener:
        host, port = listener.removeprefix("http://").rsplit(":", 1)
        address = (host, int(port))
        stalled = [socket.create_connection(address) for _ in range(20)]
        half = socket.create_connection(address)
        half.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        garbage = socket.create_connection(address)
        garbage.sendall(b"\x16\x03\x01\x00\xff" + bytes(range(256)) + b"\r\n\r\n")
        try:
            started = time.monotonic()
            for _ in range(5):
                assert httpx.get(listener + "/readyz", timeout=5).status_code == 200
            assert time.monotonic() - started < 5
            garbage.settimeout(5)
            assert b"400" in b"".join(iter(lambda: garbage.recv(4096), b""))  # then closed
            assert httpx.get(listener + "/nothing-here").status_code == 404
            assert httpx.post(listener + "/metrics").status_code == 405
            assert scrape(listener + "/metrics")
        finally:
            for client in (*stalled, half, garbage):
                client.close()
        assert httpx.get(listener + "/healthz").status_code == 200


def test_serve_wsgi_counts_requests_answered_by_threads(tmp_path: Path) -> None:
    apps = Path(__file__).parent / "apps"
    with hyco_relay(cwd=tmp_path) as relay:
        process = start_hyco(
            "serve",
            "--wsgi",
            "flask_app:app",
            "--app-dir",
            str(apps),
            "-c",
            relay.listener,
            "--metrics-addr",
            "127.0.0.1:0",
            cwd=tmp_path,
        )
        try:
            base = metrics_base(process)
            assert lines_of(process, 1)[0].startswith("online: flask_app:app serves")
            assert json.loads(httpx.get(base + "/readyz").text)["ready"] is True
            auth = RelayAuth.from_connection_string(relay.listener)
            with httpx.Client(auth=auth, timeout=30) as client:
                statuses = [client.get(auth.url(path)).status_code for path in ("/", "/nope")]
            samples = scrape(base + "/metrics")
        finally:
            stop(process)
    for status in statuses:
        labels = {"hybrid_connection": "hyco", "status": str(status)}
        assert value(samples, "hyco_listener_http_requests_total", **labels) >= 1
    refusal = {"hybrid_connection": "hyco", "outcome": "rejected", "status": "501"}
    assert value(samples, "hyco_listener_connections_total", **refusal) == 0


def test_metrics_address_mistakes_are_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = run_hyco(
            "relay", "--port", "0", "--metrics-addr", f"127.0.0.1:{port}", cwd=tmp_path
        )
    assert in_use.returncode == 1
    assert in_use.stderr.strip().splitlines() == [
        f"hyco relay: 127.0.0.1:{port} is already in use: stop what uses it, or pass another "
        "--metrics-addr (port 0 picks a free one)"
    ]
    unknown = run_hyco(
        "relay", "--port", "0", "--metrics-addr", "no.such.host.invalid:9100", cwd=tmp_path
    )
    assert unknown.returncode == 1
    assert "--metrics-addr" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    malformed = run_hyco("relay", "--metrics-addr", "9100", cwd=tmp_path)
    assert malformed.returncode == 2
    assert "--metrics-addr" in malformed.stderr
    assert "Traceback" not in malformed.stderr
    cs = "Endpoint=sb://127.0.0.1:9/;SharedAccessKeyName=k;SharedAccessKey=a2V5;EntityPath=hc"
    workers = run_hyco(
        "serve",
        "m:app",
        "-c",
        cs,
        "--workers",
        "2",
        "--metrics-addr",
        "127.0.0.1:0",
        cwd=tmp_path,
    )
    assert workers.returncode == 2
    assert "--metrics-addr needs one process" in workers.stderr
    stdio = run_hyco(
        "forward",
        "-c",
        cs,
        "--target",
        "t",
        "--stdio",
        "--metrics-addr",
        "127.0.0.1:0",
        cwd=tmp_path,
    )
    assert stdio.returncode == 2
    assert "--metrics-addr goes with --bind" in stdio.stderr


def test_a_flood_of_idle_clients_is_capped_not_given_a_thread_each(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    from hyco_adapters import metrics as metrics_module
    from hyco_adapters.metrics import MAX_CLIENTS, Metrics, serve_metrics
    from hyco_adapters.vitals import Vitals

    # The idle clients must hold their slots for the whole test, however slow the machine.
    monkeypatch.setattr(metrics_module._Handler, "timeout", 120.0)
    vitals = Vitals()
    vitals.set("part", True)
    idle: list[socket.socket] = []
    with serve_metrics(Metrics(vitals), "127.0.0.1", 0) as (host, port):
        before = threading.active_count()
        try:
            idle.extend(socket.create_connection((host, port)) for _ in range(MAX_CLIENTS))
            # The server takes connections in order, so this one comes after every idle one
            # holds a slot: it is closed at once, with no thread of its own.
            with socket.create_connection((host, port)) as extra:
                extra.settimeout(30)
                assert extra.recv(100) == b""
            assert threading.active_count() <= before + MAX_CLIENTS
            idle.pop().close()

            def ready() -> bool:
                try:
                    return httpx.get(f"http://{host}:{port}/readyz", timeout=5).status_code == 200
                except httpx.TransportError:  # the freed slot is not free yet
                    return False

            wait_for(ready)
        finally:
            for client in idle:
                client.close()
    assert "Traceback" not in caplog.text

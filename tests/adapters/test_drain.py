"""SIGTERM drains a command that answers senders: the work under way finishes (up to
``--drain-timeout``), what arrives meanwhile is refused with 503 and ``Retry-After`` (or by the
relay once the listener is offline), work longer than the limit is cut so that its sender sees
an error, and the process exits 0 within the limit."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from hyco_transports.httpx import RelayAuth
from tests.cli import RunningRelay, hyco_relay, start_hyco, stop

from .apps.slow_app import STREAMED

ROOT = Path(__file__).resolve().parents[2]
APPS = {
    "asgi": ("tests.adapters.apps.slow_app:app",),
    "wsgi": ("--wsgi", "tests.adapters.apps.slow_app:wsgi_app"),
}


class Sender:
    """HTTP requests through the relay, each outcome recorded as (status, headers, body) or
    the error's type name."""

    def __init__(self, relay: RunningRelay) -> None:
        self.auth = RelayAuth.from_connection_string(relay.listener)
        self.outcomes: dict[str, object] = {}
        self._threads: list[threading.Thread] = []

    def get(self, target: str, client: httpx.Client | None = None) -> object:
        path, _, query = target.partition("?")
        try:
            if client is None:
                response = httpx.get(self.auth.url(path, query), auth=self.auth, timeout=30)
            else:
                response = client.get(self.auth.url(path, query))
        except httpx.HTTPError as error:
            outcome: object = type(error).__name__
        else:
            outcome = (response.status_code, response.headers, response.content)
        self.outcomes[target] = outcome
        return outcome

    def start(self, target: str) -> None:
        thread = threading.Thread(target=self.get, args=(target,))
        thread.start()
        self._threads.append(thread)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(60)


@contextmanager
def serving(
    relay: RunningRelay, cwd: Path, kind: str, drain_timeout: float
) -> Iterator[subprocess.Popen[str]]:
    process = start_hyco(
        "serve",
        *APPS[kind],
        "-c",
        relay.listener,
        "--drain-timeout",
        str(drain_timeout),
        "--app-dir",
        str(ROOT),
        cwd=cwd,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("online: ")
        yield process
    finally:
        stop(process)


def refused_while_closing(outcome: object) -> bool:
    assert isinstance(outcome, tuple), outcome
    status, headers, _ = outcome
    return bool(status == 503 and headers["retry-after"] == "5")


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_sigterm_lets_the_answers_under_way_finish_and_refuses_new_ones(
    tmp_path: Path, kind: str
) -> None:
    with hyco_relay(cwd=tmp_path) as relay, serving(relay, tmp_path, kind, 10) as process:
        sender = Sender(relay)
        with httpx.Client(auth=sender.auth, timeout=30) as kept_alive:
            assert sender.get("/", kept_alive) is not None
            sender.start("/slow?2")
            sender.start("/stream?2")
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.3)
            # The same kept-alive connection, then another sender's: the listener is closing.
            during_kept = sender.get("/", kept_alive)
            during_new = sender.get("/?new")
        _out, err = process.communicate(timeout=30)
        stopped_after = time.monotonic() - signalled
        sender.join()
        after = sender.get("/?after")
    assert process.returncode == 0, err
    assert stopped_after < 10
    slow = sender.outcomes["/slow?2"]
    assert isinstance(slow, tuple), slow
    assert slow[0] == 200
    streamed = sender.outcomes["/stream?2"]
    assert isinstance(streamed, tuple), streamed
    assert (streamed[0], len(streamed[2])) == (200, STREAMED)
    assert refused_while_closing(during_kept)
    assert refused_while_closing(during_new)
    # Offline now: the relay itself refuses, as for any hybrid connection without a listener.
    assert isinstance(after, tuple)
    assert after[0] == 502
    assert b"No listener is connected" in after[2]
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_work_longer_than_the_drain_is_cut_and_the_process_still_exits(
    tmp_path: Path, kind: str
) -> None:
    with hyco_relay(cwd=tmp_path) as relay, serving(relay, tmp_path, kind, 1) as process:
        sender = Sender(relay)
        sender.start("/slow?30")
        sender.start("/stream?30")
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _out, err = process.communicate(timeout=30)
        stopped_after = time.monotonic() - signalled
        sender.join()
    assert process.returncode == 0, err
    # The drain, and for WSGI the wait for the app's threads to return after the cut.
    assert stopped_after < (1 + 5 + 3 if kind == "wsgi" else 1 + 3), stopped_after
    slow = sender.outcomes["/slow?30"]
    assert isinstance(slow, tuple)
    assert slow[0] == 502  # the relay's: the listener went away before it answered
    # Cut halfway through the body: an error, never a short body passed off as whole.
    assert sender.outcomes["/stream?30"] == "RemoteProtocolError", sender.outcomes


def test_expose_lets_open_tunnels_finish_and_exits_once_they_have(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as service, hyco_relay(cwd=tmp_path) as relay:
        port = service.getsockname()[1]

        def echo() -> None:
            connection, _ = service.accept()
            with connection:
                while data := connection.recv(1024):
                    connection.sendall(data)

        threading.Thread(target=echo, daemon=True).start()
        env = {"HYCO_CONNECTION_STRING": relay.listener}
        exposing = start_hyco("expose", "--target", f"svc=127.0.0.1:{port}", cwd=tmp_path, env=env)
        forwarding = start_hyco("forward", "--target", "svc", "--bind", "0", cwd=tmp_path, env=env)
        try:
            assert exposing.stdout is not None
            assert forwarding.stdout is not None
            assert exposing.stdout.readline().startswith("online, exposing svc")
            bound = forwarding.stdout.readline().split()[1]
            host, _, local = bound.rpartition(":")
            with socket.create_connection((host, int(local)), timeout=10) as tunnel:
                tunnel.sendall(b"before")
                assert tunnel.recv(1024) == b"before"
                exposing.send_signal(signal.SIGTERM)
                time.sleep(1.0)
                tunnel.sendall(b"during")  # the tunnel outlives the signal
                assert tunnel.recv(1024) == b"during"
                assert exposing.poll() is None
                closed = time.monotonic()
            _out, err = exposing.communicate(timeout=20)
            ended_after = time.monotonic() - closed
        finally:
            stop(exposing)
            stop(forwarding)
    assert exposing.returncode == 0, err
    assert ended_after < 5  # once its last tunnel ended, not at the 10 s limit


def test_listen_closes_what_is_still_open_at_the_drain_limit(tmp_path: Path) -> None:
    with hyco_relay(cwd=tmp_path) as relay:
        env = {"HYCO_CONNECTION_STRING": relay.listener}
        listening = start_hyco("listen", "--drain-timeout", "1", cwd=tmp_path, env=env)
        assert listening.stdout is not None
        assert [listening.stdout.readline().strip() for _ in range(2)] == [
            "listener connecting",
            "listener online",
        ]
        connecting = start_hyco("connect", cwd=tmp_path, env=env, stdin=subprocess.PIPE)
        try:
            assert connecting.stderr is not None
            assert connecting.stderr.readline().startswith("connected")
            listening.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            _out, err = listening.communicate(timeout=20)
            stopped_after = time.monotonic() - signalled
            _, said = connecting.communicate(timeout=20)
        finally:
            stop(listening)
            stop(connecting)
    assert listening.returncode == 0, err
    assert 0.9 < stopped_after < 5
    assert "closed (1001" in said

"""What the long-running commands tell systemd over ``$NOTIFY_SOCKET``: READY=1 once online (not
before), STATUS= as readiness changes, STOPPING=1 as soon as a signal comes, WATCHDOG=1 from the
command's event loop; and nothing of it may break a command when the socket is missing."""

from __future__ import annotations

import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from hyco_adapters.systemd import (
    Notifier,
    describe,
    notification,
    socket_address,
    tell_service_manager,
    watchdog_interval,
)
from hyco_adapters.vitals import Vitals
from hyco_core import ListenerStatus, ListenerStatusChanged
from tests.cli import hyco_relay, start_hyco, stop

APP = "tests.adapters.apps.slow_app:app"
ROOT = Path(__file__).resolve().parents[2]


def fields_of(datagram: bytes) -> dict[str, str]:
    text = datagram.decode()
    assert text.endswith("\n"), text
    return dict(line.split("=", 1) for line in text.splitlines())


@contextmanager
def notify_socket(address: str | bytes) -> Iterator[socket.socket]:
    """A service manager's end: a datagram socket bound at ``address``."""
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        receiver.bind(address)
        yield receiver
    finally:
        receiver.close()


def receive(receiver: socket.socket, timeout: float = 20.0) -> dict[str, str]:
    receiver.settimeout(timeout)
    return fields_of(receiver.recv(4096))


def receive_until(receiver: socket.socket, name: str, timeout: float = 20.0) -> dict[str, str]:
    """The first message with field ``name``, skipping the watchdog's pings."""
    deadline = time.monotonic() + timeout
    while True:
        fields = receive(receiver, max(0.01, deadline - time.monotonic()))
        if name in fields:
            return fields


def pending_output(process: subprocess.Popen[str]) -> bool:
    """Whether the process has written to stdout what has not been read yet."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], 0)
    return bool(readable)


def abstract_name() -> str:
    return f"@hyco-test-{uuid.uuid4().hex}"


# -- the message format ------------------------------------------------------------------------


def test_a_notification_is_one_line_per_field_in_order() -> None:
    message = notification({"READY": "1", "STATUS": "online: hyco"})
    assert message == b"READY=1\nSTATUS=online: hyco\n"


@pytest.mark.parametrize(
    "fields",
    [{}, {"ready": "1"}, {"A=B": "1"}, {"STATUS": "two\nlines"}, {"": "x"}],
    ids=["empty", "lower-case", "equals", "newline", "no-name"],
)
def test_a_malformed_notification_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="notification"):
        notification(fields)


def test_socket_addresses_are_paths_or_abstract_names() -> None:
    assert socket_address("/run/systemd/notify") == b"/run/systemd/notify"
    assert socket_address("@hyco/notify") == b"\0hyco/notify"
    for wrong in ("relative/path", "@", ""):
        with pytest.raises(ValueError, match="not an absolute path or an @abstract name"):
            socket_address(wrong)


def test_the_watchdog_pings_at_half_its_timeout_for_this_process_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "200000"}, 42) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "7"}, 42) is None
    for usec in ("", "0", "-5", "soon"):
        assert watchdog_interval({"WATCHDOG_USEC": usec}, 42) is None
    assert watchdog_interval({}, 42) is None


# -- the notifier over real sockets -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_the_notifier_reaches_a_path_or_an_abstract_socket(tmp_path: Path, kind: str) -> None:
    name = str(tmp_path / "notify") if kind == "path" else abstract_name()
    with notify_socket(socket_address(name)) as receiver, Notifier(name) as notifier:
        assert notifier.send({"STATUS": "hello"})
        assert receive(receiver, 5) == {"STATUS": "hello"}


def test_a_socket_that_is_not_there_is_warned_of_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "hyco.adapters.systemd")
    with Notifier(str(tmp_path / "nobody")) as notifier:
        assert not notifier.send({"READY": "1"})
        assert not notifier.send({"WATCHDOG": "1"})
    levels = [record.levelno for record in caplog.records]
    assert levels == [logging.WARNING, logging.DEBUG]
    assert "cannot notify the service manager" in caplog.records[0].getMessage()


def test_an_unusable_address_is_warned_of_and_sends_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Notifier("relative/notify") as notifier:
        assert not notifier.send({"READY": "1"})
    assert "NOTIFY_SOCKET=relative/notify" in caplog.text


def test_a_service_manager_that_reads_nothing_does_not_block_the_command(tmp_path: Path) -> None:
    name = str(tmp_path / "notify")
    with notify_socket(name), Notifier(name) as notifier:
        began = time.monotonic()
        results = [notifier.send({"STATUS": "x" * 1000}) for _ in range(2000)]
        elapsed = time.monotonic() - began
    assert results[0]
    assert not results[-1]  # its queue filled, and the rest was dropped
    assert elapsed < 5


# -- what the vitals say ------------------------------------------------------------------------


def _status(status: ListenerStatus) -> ListenerStatusChanged:
    return ListenerStatusChanged(status=status)


def test_ready_once_then_status_as_readiness_changes_then_stopping(tmp_path: Path) -> None:
    name = str(tmp_path / "notify")
    vitals = Vitals()
    with notify_socket(name) as receiver, tell_service_manager(vitals, {"NOTIFY_SOCKET": name}):
        listener = vitals.follow("hc1")
        listener(_status(ListenerStatus.ONLINE))
        assert receive(receiver, 5) == {"READY": "1", "STATUS": "online: hc1"}
        listener(_status(ListenerStatus.OFFLINE))
        assert receive(receiver, 5) == {"STATUS": "reconnecting: hc1 is offline"}
        listener(_status(ListenerStatus.ONLINE))
        assert receive(receiver, 5) == {"STATUS": "online: hc1"}
        vitals.stopping()
        vitals.stopping()
        listener(_status(ListenerStatus.CLOSED))
        assert receive(receiver, 5) == {
            "STOPPING": "1",
            "STATUS": "stopping: finishing the work under way",
        }
        receiver.settimeout(0.2)
        with pytest.raises(TimeoutError):
            receiver.recv(4096)  # nothing more: stopping said it all


def test_a_part_that_is_not_a_listener_is_described_as_down() -> None:
    vitals = Vitals()
    vitals.set("forward 127.0.0.1:2222", True)
    vitals.set("relay", True)
    assert describe(vitals) == "online: forward 127.0.0.1:2222, relay"
    vitals.set("relay", False)
    assert describe(vitals) == "not ready: relay is down"


def test_without_notify_socket_nothing_is_set_up() -> None:
    vitals = Vitals()
    with tell_service_manager(vitals, {}) as notifier:
        assert notifier is None


def test_the_watchdog_pings_from_the_event_loop_and_stop_when_it_is_wedged(
    tmp_path: Path,
) -> None:
    name = str(tmp_path / "notify")
    vitals = Vitals()
    environ = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "200000"}
    pings: list[float] = []
    wedged: list[float] = []

    async def wedge_the_loop() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(vitals.keep_beating)
            await anyio.sleep(0.5)
            wedged.append(time.monotonic())
            time.sleep(1.0)  # an app's blocking call: the loop is wedged
            wedged.append(time.monotonic())
            await anyio.sleep(0.5)
            tasks.cancel_scope.cancel()

    with notify_socket(name) as receiver, tell_service_manager(vitals, environ):

        def read() -> None:
            receiver.settimeout(1.5)  # above the wedge: only the end of the run stops this
            while True:
                try:
                    fields = fields_of(receiver.recv(4096))
                except (TimeoutError, OSError):
                    return
                assert fields == {"WATCHDOG": "1"}
                pings.append(time.monotonic())

        reader = threading.Thread(target=read)
        reader.start()
        anyio.run(wedge_the_loop)
        reader.join()
    before = [ping for ping in pings if ping < wedged[0]]
    during = [ping for ping in pings if wedged[0] + 0.05 < ping < wedged[1]]
    after = [ping for ping in pings if ping > wedged[1]]
    assert 3 <= len(before) <= 8, pings  # every 0.1 s
    assert during == []
    assert len(after) >= 3, pings


# -- the commands, as a service manager runs them ----------------------------------------------


def _service_env(name: str, **extra: str) -> dict[str, str]:
    return {"NOTIFY_SOCKET": name, "PYTHONPATH": str(ROOT), **extra}


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_relay_is_ready_after_it_says_so_pings_and_stops(tmp_path: Path, kind: str) -> None:
    name = str(tmp_path / "notify") if kind == "path" else abstract_name()
    with notify_socket(socket_address(name)) as receiver:
        env = _service_env(name, WATCHDOG_USEC="200000", HOME=str(tmp_path))
        relay = start_hyco("relay", "--port", "0", cwd=tmp_path, env=env)
        try:
            ready = receive_until(receiver, "READY")
            # Its online line was written before READY=1 was sent.
            assert pending_output(relay)
            assert relay.stdout is not None
            assert relay.stdout.readline().startswith("hyco relay listening on ")
            assert ready == {"READY": "1", "STATUS": "online: relay"}
            pings = 0
            began = time.monotonic()
            while time.monotonic() - began < 1.0:
                pings += receive(receiver) == {"WATCHDOG": "1"}
            assert 4 <= pings <= 15, pings  # every 0.1 s
            relay.send_signal(signal.SIGTERM)
            assert receive_until(receiver, "STOPPING")["STOPPING"] == "1"
            _out, err = relay.communicate(timeout=20)
        finally:
            stop(relay)
    assert relay.returncode == 0, err


def test_serve_says_stopping_as_the_drain_starts_not_after(tmp_path: Path) -> None:
    name = str(tmp_path / "notify")
    with hyco_relay(cwd=tmp_path) as relay, notify_socket(name) as receiver:
        serving = start_hyco(
            "serve", APP, "-c", relay.listener, cwd=tmp_path, env=_service_env(name)
        )
        try:
            ready = receive_until(receiver, "READY")
            assert pending_output(serving)
            assert serving.stdout is not None
            assert serving.stdout.readline().startswith(f"online: {APP} serves ")
            assert ready == {"READY": "1", "STATUS": "online: hyco"}
            slow = threading.Thread(target=_get, args=(relay.listener, "/slow?3"))
            slow.start()
            time.sleep(0.5)
            serving.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert receive_until(receiver, "STOPPING")["STOPPING"] == "1"
            assert time.monotonic() - signalled < 2  # long before the slow answer is out
            _out, err = serving.communicate(timeout=20)
            slow.join()
        finally:
            stop(serving)
    assert serving.returncode == 0, err


def _get(connection_string: str, target: str) -> None:
    import httpx

    from hyco_transports.httpx import RelayAuth

    auth = RelayAuth.from_connection_string(connection_string)
    path, _, query = target.partition("?")
    httpx.get(auth.url(path, query), auth=auth, timeout=30)


def test_expose_is_ready_once_online_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    name = str(tmp_path / "notify")
    with (
        socket.create_server(("127.0.0.1", 0)) as target,
        hyco_relay(cwd=tmp_path) as relay,
        notify_socket(name) as receiver,
    ):
        port = target.getsockname()[1]
        exposing = start_hyco(
            "expose",
            "--target",
            f"svc=127.0.0.1:{port}",
            "-c",
            relay.listener,
            cwd=tmp_path,
            env=_service_env(name),
        )
        try:
            ready = receive_until(receiver, "READY")
            assert pending_output(exposing)
            assert exposing.stdout is not None
            assert exposing.stdout.readline().strip() == "online, exposing svc; Ctrl-C to stop"
            assert ready == {"READY": "1", "STATUS": "online: hyco"}
            exposing.send_signal(signal.SIGTERM)
            assert receive_until(receiver, "STOPPING")["STOPPING"] == "1"
            _out, err = exposing.communicate(timeout=20)
        finally:
            stop(exposing)
    assert exposing.returncode == 0, err


def test_a_lost_relay_is_told_as_status_and_regained(tmp_path: Path) -> None:
    name = str(tmp_path / "notify")
    home = tmp_path / "relay-home"
    with notify_socket(name) as receiver:
        with hyco_relay(cwd=tmp_path, home=home) as relay:
            port = relay.address.rsplit(":", 1)[1]
            listening = start_hyco(
                "listen", "-c", relay.listener, cwd=tmp_path, env=_service_env(name)
            )
            assert receive_until(receiver, "READY") == {"READY": "1", "STATUS": "online: hyco"}
        try:
            assert receive_until(receiver, "STATUS")["STATUS"].startswith("reconnecting: hyco is ")
            with hyco_relay("--port", port, cwd=tmp_path, home=home):
                assert receive_until(receiver, "STATUS", timeout=60) == {"STATUS": "online: hyco"}
                listening.send_signal(signal.SIGTERM)
                assert receive_until(receiver, "STOPPING")["STOPPING"] == "1"
                _out, err = listening.communicate(timeout=20)
        finally:
            stop(listening)
    assert listening.returncode == 0, err


@pytest.mark.parametrize(
    "arguments",
    [("relay", "--port", "0"), ("serve", APP)],
    ids=["relay", "serve"],
)
def test_a_notify_socket_that_is_not_there_changes_nothing(
    tmp_path: Path, arguments: tuple[str, ...]
) -> None:
    env = _service_env(str(tmp_path / "nobody"), WATCHDOG_USEC="200000", HOME=str(tmp_path))
    with hyco_relay(cwd=tmp_path) as relay:
        env["HYCO_CONNECTION_STRING"] = relay.listener
        running = start_hyco(*arguments, cwd=tmp_path, env=env)
        try:
            assert running.stdout is not None
            first = running.stdout.readline()
            assert first.startswith(("hyco relay listening on ", f"online: {APP} serves ")), first
            time.sleep(1.0)  # pings fail meanwhile, every 0.1 s
            assert running.poll() is None
            running.send_signal(signal.SIGTERM)
            _out, err = running.communicate(timeout=20)
        finally:
            stop(running)
    assert running.returncode == 0, err
    warnings = [line for line in err.splitlines() if "cannot notify the service manager" in line]
    assert len(warnings) == 1, err
    assert "Traceback" not in err
    assert os.path.basename(str(tmp_path / "nobody")) in warnings[0]


# -- the documented units ----------------------------------------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_the_documented_units_verify_cleanly(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    text = (ROOT / "docs" / "systemd.md").read_text("utf-8")
    units = re.findall(r"```ini\n(.*?)```", text, re.DOTALL)
    assert len(units) == 3
    for number, unit in enumerate(units):
        # The programs are not installed here: a program that is stands in for hyco.
        runnable = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", unit, flags=re.MULTILINE)
        assert "ExecStart=/bin/true " in runnable
        path = tmp_path / f"hyco-documented-{number}.service"
        path.write_text(runnable, "utf-8")
        result = subprocess.run(  # noqa: S603 - a system tool, on our own file
            [SYSTEMD_ANALYZE, "verify", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        complaints = [line for line in result.stderr.splitlines() if str(path) in line]
        assert not complaints, result.stderr

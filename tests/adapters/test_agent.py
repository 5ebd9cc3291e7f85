"""``hyco agent`` as a user runs it: one process running a TCP expose, an HTTP expose, a
forward and two serve entries from one file against a real relay, a reload that restarts only
what changed, the signals a service manager sends, and one entry's failure leaving the others
alone."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from hyco_transports.httpx import RelayAuth
from tests.cli import hyco_relay, run_hyco, start_hyco, stop

ASGI_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"asgi {scope['root_path']}|{scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""

WSGI_APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi " + environ["PATH_INFO"].encode()]
"""

RELAY = """\
[[namespace]]
name = "localhost"
default = true
  [[namespace.rule]]
  name = "RootManageSharedAccessKey"
  primary_key = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="
  rights = ["Manage"]
  [[namespace.entity]]
  name = "tcp"
  [[namespace.entity]]
  name = "asgi"
  [[namespace.entity]]
  name = "wsgi"
  [[namespace.entity]]
  name = "more"
  [[namespace.entity]]
  name = "web"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def echo_service() -> Iterator[int]:
    """A TCP service answering each line in upper case, on a thread."""
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stopping = threading.Event()

    def serve(connection: socket.socket) -> None:
        with connection:
            for line in connection.makefile("rb"):
                connection.sendall(line.upper())

    def accept() -> None:
        while not stopping.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stopping.set()
        thread.join()
        server.close()


@contextmanager
def web_server() -> Iterator[int]:
    """An HTTP server of the standard library's, answering each GET with its path."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"web {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def connection_string(relay_listener: str, entity: str) -> str:
    return relay_listener.replace("EntityPath=hyco", f"EntityPath={entity}")


def wait_for_lines(
    process: subprocess.Popen[str], wanted: set[str], timeout: float = 30
) -> list[str]:
    """The process's output lines until one starting with each of ``wanted`` has appeared."""
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    missing = set(wanted)
    while missing:
        assert time.monotonic() < deadline, (missing, seen)
        line = process.stdout.readline()
        assert line, (missing, seen, process.stderr.read() if process.stderr else "")
        seen.append(line.strip())
        missing = {start for start in missing if not line.startswith(start)}
    return seen


def get(cs: str, path: str, query: str = "") -> httpx.Response:
    auth = RelayAuth.from_connection_string(cs)
    return httpx.get(auth.url(path, query), auth=auth, timeout=10)


def agent_file(echo_port: int, web_port: int, bind: int, root: str) -> str:
    return f"""\
[[expose]]
connection_string = "${{WEB_CS}}"
http = "http://127.0.0.1:{web_port}"

[[expose]]
connection_string = "${{TCP_CS}}"
targets = ["echo=127.0.0.1:{echo_port}"]

[[forward]]
connection_string = "${{TCP_CS}}"
target = "echo"
bind = "{bind}"

[[serve]]
connection_string = "${{ASGI_CS}}"
app = "asgi_app:app"
root_path = "{root}"

[[serve]]
connection_string = "${{WSGI_CS}}"
app = "wsgi_app:app"
wsgi = true
"""


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "relay.toml"
    config.write_text(RELAY)
    with hyco_relay("--config", str(config), cwd=tmp_path) as running:
        yield running.listener.replace("EntityPath=tcp", "EntityPath=hyco")


def test_every_kind_of_entry_runs_and_a_reload_restarts_only_what_changed(
    tmp_path: Path, relay: str
) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "asgi_app.py").write_text(ASGI_APP)
    (apps / "wsgi_app.py").write_text(WSGI_APP)
    names = {entity: connection_string(relay, entity) for entity in ("tcp", "asgi", "wsgi", "web")}
    env = {f"{entity.upper()}_CS": cs for entity, cs in names.items()}
    bind = free_port()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with echo_service() as echo_port, web_server() as web_port:
        path = apps / "hyco.toml"
        path.write_text(agent_file(echo_port, web_port, bind, "/asgi"))
        checked = run_hyco("agent", "--config", str(path), "--check", cwd=elsewhere, env=env)
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.splitlines()[1].startswith("tcp: line 5, exposing echo=")
        process = start_hyco("agent", "--config", str(path), cwd=elsewhere, env=env)
        try:
            lines = wait_for_lines(
                process,
                {
                    "agent: 5 entries",
                    "online: web",
                    "online: tcp",
                    "online: echo",
                    "online: asgi",
                    "online: wsgi",
                },
            )
            assert "relay-key" not in "".join(lines)
            assert env["TCP_CS"].split("SharedAccessKey=")[1] not in "".join(lines)
            assert get(names["asgi"], "/x").text == "asgi /asgi|/asgi/x"
            assert get(names["wsgi"], "/y").text == "wsgi /y"
            assert get(names["web"], "/z", "q=1").text == "web /z?q=1"
            # A TCP session through forward and expose, kept open across the reload.
            with socket.create_connection(("127.0.0.1", bind), timeout=10) as session:
                session.sendall(b"before\n")
                assert session.recv(100) == b"BEFORE\n"
                # One edit (the ASGI app's root path), one entry gone (WSGI), by SIGHUP.
                text = agent_file(echo_port, web_port, bind, "/api")
                path.write_text(text.split('[[serve]]\nconnection_string = "${WSGI_CS}"')[0])
                process.send_signal(signal.SIGHUP)
                (reloaded,) = [
                    line
                    for line in wait_for_lines(process, {"reloaded"})
                    if line.startswith("reloaded")
                ]
                assert reloaded.endswith(": restarted asgi; stopped wsgi"), reloaded
                session.sendall(b"after\n")
                assert session.recv(100) == b"AFTER\n"
            wait_for_lines(process, {"online: asgi"})
            assert get(names["asgi"], "/x").text == "asgi /api|/api/x"
            assert get(names["wsgi"], "/y").status_code in (404, 502)
            process.send_signal(signal.SIGTERM)
            _out, err = process.communicate(timeout=30)
            assert process.returncode == 0, err
            assert "Traceback" not in err
        finally:
            stop(process)


def test_a_changed_file_is_reloaded_and_a_broken_one_keeps_the_entries(
    tmp_path: Path, relay: str
) -> None:
    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    cs = connection_string(relay, "asgi")
    path = tmp_path / "hyco.toml"
    entry = '[[serve]]\nname = "{name}"\nconnection_string = "${{CS}}"\napp = "asgi_app:app"\n'
    path.write_text(entry.format(name="one"))
    process = start_hyco("agent", "--config", str(path), cwd=tmp_path, env={"CS": cs})
    try:
        wait_for_lines(process, {"online: one"})
        path.write_text("[[serve]\n")  # a broken edit: logged, the entry runs on
        time.sleep(2.5)
        assert get(cs, "/still").text == "asgi /asgi|/asgi/still"
        path.write_text(entry.format(name="two") + "\n")
        lines = wait_for_lines(process, {"reloaded", "online: two"})
        assert any(line.endswith(": started two; stopped one") for line in lines), lines
        _out, err = stop(process)
        assert process.returncode == 130
        assert err.count("not valid TOML") == 1, err
        assert "the entries run on as they were" in err
    finally:
        stop(process)


def test_an_entry_that_cannot_start_leaves_the_others_running(tmp_path: Path, relay: str) -> None:
    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    good = connection_string(relay, "asgi")
    wrong_key = connection_string(relay, "more").replace("SharedAccessKey=", "SharedAccessKey=x")
    path = tmp_path / "hyco.toml"
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    path.write_text(
        '[[serve]]\nconnection_string = "${GOOD}"\napp = "asgi_app:app"\n\n'
        '[[serve]]\nconnection_string = "${WRONG}"\napp = "asgi_app:app"\n\n'
        f'[[forward]]\nconnection_string = "${{GOOD}}"\ntarget = "t"\nbind = "{port}"\n'
    )
    process = start_hyco(
        "agent", "--config", str(path), cwd=tmp_path, env={"GOOD": good, "WRONG": wrong_key}
    )
    try:
        wait_for_lines(process, {"online: asgi"})
        assert get(good, "/ok").text == "asgi /asgi|/asgi/ok"
        time.sleep(1.5)
        _out, err = stop(process)
        assert "entry 'more' (line 5):" in err
        assert f"entry 't' (line 9): 127.0.0.1:{port} is already in use" in err
        assert "starting it again in" in err
        assert "x" + wrong_key.split("SharedAccessKey=x")[1].split(";")[0] not in err
        assert "Traceback" not in err
    finally:
        stop(process)
        taken.close()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            '[[serve]]\nconnection_string = "${UNSET_VARIABLE}"\napp = "m:a"\n',
            "hyco.toml:2: ${UNSET_VARIABLE} is not set",
        ),
        (
            '[[serve]]\nconnection_string = "Endpoint=sb://h/;SharedAccessKeyName=a;'
            'SharedAccessKey=b;EntityPath=e"\napp = "nowhere_to_be_found:app"\n',
            "hyco.toml:1: entry 'e': no module named 'nowhere_to_be_found'",
        ),
    ],
)
def test_a_bad_file_is_refused_before_anything_starts(
    tmp_path: Path, text: str, words: str
) -> None:
    (tmp_path / "hyco.toml").write_text(text)
    result = run_hyco("agent", "--config", "hyco.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"hyco agent: {words}"), result.stderr
    assert "Traceback" not in result.stderr


def test_the_service_manager_hears_ready_once_every_entry_is_up_and_stopping(
    tmp_path: Path, relay: str
) -> None:
    from tests.adapters.test_systemd import notify_socket, receive_until

    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    path = tmp_path / "hyco.toml"
    path.write_text(
        '[[serve]]\nconnection_string = "${ASGI_CS}"\napp = "asgi_app:app"\n\n'
        '[[expose]]\nconnection_string = "${TCP_CS}"\ntargets = ["echo=127.0.0.1:9"]\n'
    )
    env = {
        "ASGI_CS": connection_string(relay, "asgi"),
        "TCP_CS": connection_string(relay, "tcp"),
        "NOTIFY_SOCKET": str(tmp_path / "notify"),
        "WATCHDOG_USEC": "200000",
    }
    with notify_socket(env["NOTIFY_SOCKET"]) as receiver:
        process = start_hyco("agent", "--config", str(path), cwd=tmp_path, env=env)
        try:
            ready = receive_until(receiver, "READY")
            # READY came once both entries were online, each having said so.
            assert process.stdout is not None
            lines = {process.stdout.readline().split(" (")[0].split(" from ")[0] for _ in range(3)}
            assert lines == {"agent: 2 entries", "online: asgi", "online: tcp"}, lines
            assert ready["READY"] == "1"
            assert "WATCHDOG" in receive_until(receiver, "WATCHDOG")
            process.send_signal(signal.SIGTERM)
            assert receive_until(receiver, "STOPPING")["STOPPING"] == "1"
            _out, err = process.communicate(timeout=30)
            assert process.returncode == 0, err
        finally:
            stop(process)


def test_each_entry_is_counted_and_ready_under_its_name(tmp_path: Path, relay: str) -> None:
    from tests.adapters.test_metrics import metrics_base, scrape, value

    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    (tmp_path / "wsgi_app.py").write_text(WSGI_APP)
    path = tmp_path / "hyco.toml"
    path.write_text(
        '[[serve]]\nname = "api"\nconnection_string = "${ASGI_CS}"\napp = "asgi_app:app"\n\n'
        '[[serve]]\nconnection_string = "${WSGI_CS}"\napp = "wsgi_app:app"\nwsgi = true\n'
    )
    env = {"ASGI_CS": connection_string(relay, "asgi"), "WSGI_CS": connection_string(relay, "wsgi")}
    process = start_hyco(
        "agent", "--config", str(path), "--metrics-addr", "127.0.0.1:0", cwd=tmp_path, env=env
    )
    try:
        base = metrics_base(process)
        wait_for_lines(process, {"online: api", "online: wsgi"})
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
        for _ in range(3):
            assert get(env["ASGI_CS"], "/x").status_code == 200
        assert get(env["WSGI_CS"], "/y").status_code == 200
        samples = scrape(f"{base}/metrics")
        assert value(samples, "hyco_listener_online", hybrid_connection="api") == 1
        assert value(samples, "hyco_listener_online", hybrid_connection="wsgi") == 1
        assert value(samples, "hyco_part_up", part="api") == 1
        requests = "hyco_listener_http_requests_total"
        assert value(samples, requests, hybrid_connection="api", status="200") == 3
        assert value(samples, requests, hybrid_connection="wsgi", status="200") == 1
        # The WSGI entry leaves the file: it leaves readiness too, and the rest stays ready.
        path.write_text(path.read_text().split("\n\n")[0] + "\n")
        wait_for_lines(process, {"reloaded"})
        answer = httpx.get(f"{base}/readyz", timeout=10)
        assert answer.status_code == 200, answer.text
        assert value(scrape(f"{base}/metrics"), "hyco_part_up", part="wsgi") == 0
    finally:
        stop(process)

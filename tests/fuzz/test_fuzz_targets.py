"""Every fuzz target on its seed files and a modest hypothesis budget, plus the crashes fuzzing
found, each kept fixed by a test that names what a user would have seen."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fuzz.campaign import fuzz_target, replay_seeds, signature
from fuzz.corpus import CORPUS, build, seed_files
from fuzz.inputs import websocket_upgrade
from fuzz.targets import MARKER, TARGETS, Target, check, fuzz_http_server
from hyco_conformance.harness import ROOT_KEY, relay_config
from hyco_core import (
    HycoError,
    InvalidUrlError,
    LocalProtocolError,
    RemoteProtocolError,
    create_relay_token,
    relay_token_resource,
)
from hyco_core.service import HttpServer, IncomingRequest, verify_sas_token
from hyco_relay.config import ConfigError, parse_config
from hyco_relay.server import serve_relay
from hyco_transports.anyio import HttpRequest, HttpResponse, Listener

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = 250


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the targets -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_seed_file_keeps_the_contract(name: str) -> None:
    report = replay_seeds(TARGETS[name])
    assert report.inputs == len(seed_files(name)) > 0
    assert report.failures == []


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_generated_and_mutated_inputs_keep_the_contract(name: str) -> None:
    report = fuzz_target(TARGETS[name], examples=EXAMPLES, seed=0)
    assert report.inputs >= EXAMPLES
    assert report.failures == [], report.failures[0].error


def test_every_target_declares_typed_errors_only() -> None:
    for target in TARGETS.values():
        assert all(issubclass(error, HycoError) for error in target.errors), target.name


def test_a_crash_is_caught_shrunk_and_does_not_hide_the_next() -> None:
    def parser(data: bytes) -> None:
        if b"x" in data:
            raise KeyError("x")
        if b"y" in data:
            raise RecursionError

    report = fuzz_target(Target("toy", parser, (), "a parser with two bugs"), examples=2000)
    found = {failure.signature.split(" ")[0]: failure.data for failure in report.failures}
    assert found == {"KeyError": b"x", "RecursionError": b"y"}


def test_a_broken_invariant_is_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    address = f"wss://ns/$hc/hc1?sb-hc-action=connect&sb-hc-token={MARKER}".encode()
    check(TARGETS["uris"], address)
    # Were redact_url to stop hiding tokens, the uris target would catch it.
    monkeypatch.setattr("fuzz.targets.redact_url", lambda url: url)
    with pytest.raises(AssertionError, match="a secret came out"):
        check(TARGETS["uris"], address)


def test_signatures_point_into_our_code_not_into_libraries() -> None:
    with pytest.raises(RecursionError) as raised:
        json.loads("[" * 100_000 + "]" * 100_000)
    # However deep json recursed, the bug is known by the line in our code that called it.
    assert signature(raised.value).startswith("RecursionError at fuzz/test_fuzz_targets.py:")


# -- the corpus and the command ----------------------------------------------------------------


def test_the_corpus_is_small_and_up_to_date() -> None:
    files = [path for path in CORPUS.rglob("*") if path.is_file()]
    assert len(files) < 200
    assert sum(path.stat().st_size for path in files) < 1024 * 1024
    built = build()
    assert set(built) == set(TARGETS)
    for name, seeds in built.items():
        on_disk = {path.name: path.read_bytes() for path in seed_files(name)}
        assert on_disk == seeds, f"run python -m fuzz --make-corpus ({name})"


def test_python_m_fuzz_prints_inputs_and_failures_per_target() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "fuzz", "sas", "uris", "--examples", "30"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith("sas: ")
    assert lines[0].endswith(", 0 failure(s)")
    assert lines[1].startswith("uris: ")
    assert lines[-1].startswith("total: ")
    assert lines[-1].endswith("no crash")


# -- crashes found by fuzzing, fixed -----------------------------------------------------------


def test_a_deeply_nested_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="too deeply"):
        parse_config("namespace = " + "[" * 1200 + "]" * 1200)
    with pytest.raises(ConfigError, match="too deeply"):
        parse_config("a = " + "{b = " * 1200 + "1" + "}" * 1200)


def _read(server: HttpServer, data: bytes) -> IncomingRequest:
    server.receive_data(data)
    event = server.next_event()
    assert isinstance(event, IncomingRequest)
    return event


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_a_response_that_has_no_body_drops_the_body_it_is_given(method: str, status: int) -> None:
    server = HttpServer()
    _read(server, f"{method} /hc1 HTTP/1.1\r\nHost: ns\r\n\r\n".encode())
    assert server.next_event() is not None  # the end of the (empty) request body
    head = server.start_response(status, "X", [], content_length=5)
    assert server.send_body(b"hello") == b""
    assert server.end_response() == b""
    assert head.startswith(f"HTTP/1.1 {status} X\r\n".encode())
    assert server.start_next_request()


def test_sending_what_h11_refuses_raises_our_local_error() -> None:
    server = HttpServer()
    _read(server, b"CONNECT ns:443 HTTP/1.1\r\nHost: ns\r\n\r\n")
    server.start_response(200, "OK", [], content_length=None)  # switches: no body may follow
    with pytest.raises(LocalProtocolError, match="cannot send"):
        server.send_body(b"x")
    with pytest.raises(LocalProtocolError, match="cannot send"):
        server.end_response()


def _upgrade(subprotocols: str | None = None, extra: bytes = b"") -> bytes:
    head = websocket_upgrade("/$hc/hc1?sb-hc-action=connect", subprotocols=subprotocols)
    return head.replace(b"\r\n\r\n", b"\r\n" + extra + b"\r\n", 1) if extra else head


def test_an_upgrade_with_a_malformed_body_is_a_remote_error() -> None:
    server = HttpServer()
    _read(server, _upgrade(extra=b"Transfer-Encoding: chunked\r\n") + b"zz\r\n")
    with pytest.raises(RemoteProtocolError, match="malformed"):
        server.accept_websocket()
    # The fuzz target, which drives the server as the relay does, survives it too.
    fuzz_http_server(b"\x00" + _upgrade(extra=b"Transfer-Encoding: chunked\r\n") + b"zz\r\n")


def test_an_offered_subprotocol_goes_back_byte_for_byte() -> None:
    server = HttpServer()
    request = _read(server, _upgrade(subprotocols="chat, b").replace(b"chat", b"chat\xe9"))
    assert request.subprotocols == ("chat\xe9", "b")
    answer, _ = server.accept_websocket(subprotocol=request.subprotocols[0])
    assert b"\r\nSec-WebSocket-Protocol: chat\xe9\r\n" in answer


@pytest.mark.parametrize("subprotocol", ["chat\u2713", "a\r\nX: y"])
def test_a_subprotocol_no_header_can_carry_is_a_local_error(subprotocol: str) -> None:
    server = HttpServer()
    _read(server, _upgrade(subprotocols="a"))
    with pytest.raises(LocalProtocolError):
        server.accept_websocket(subprotocol=subprotocol)


def test_an_address_starting_with_hc_twice_gets_no_token() -> None:
    # Minting used to sign 'http://ns/$hc/x/', which the verifier reads as the entity 'x'.
    for uri in ("sb://ns/$hc/$hc/x", "ns/$hc/%24hc/x", "sb://ns/$HC/$hc"):
        with pytest.raises(InvalidUrlError, match="twice"):
            relay_token_resource(uri)
    for uri in ("sb://ns/$hc/x", "sb://ns/%24hc/x", "sb://ns/x/$hc"):
        token = create_relay_token(uri, "k", "key", now=1000)
        assert verify_sas_token(token, keys={"k": ["key"]}, target=uri, now=1000).valid


@pytest.mark.anyio
async def test_head_through_the_relay_keeps_the_connection_and_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(request: HttpRequest) -> HttpResponse:
        # Inline (small) and over a rendezvous (large): both bodies must be dropped for HEAD.
        return HttpResponse(200, body=b"hello" * (1 if request.path == "/small" else 30_000))

    caplog.set_level(logging.INFO)
    async with serve_relay(parse_config(relay_config())) as relay:
        cs = relay.connection_string("hc1", "root")
        token = create_relay_token(f"sb://{relay.address}/hc1", "root", ROOT_KEY, now=time.time())
        headers = {"ServiceBusAuthorization": token}
        async with (
            Listener.from_connection_string(cs, request_handler=handler),
            httpx.AsyncClient(base_url=f"http://{relay.address}/hc1", timeout=30) as client,
        ):
            for path in ("/small", "/big", "/small"):
                head = await client.head(path, headers=headers)
                assert (head.status_code, head.content) == (200, b"")
            got = await client.get("/small", headers=headers)
            assert got.content == b"hello"
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []

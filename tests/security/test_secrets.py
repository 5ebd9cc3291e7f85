"""Secrets stay secret: keys, token signatures and token-bearing URLs never show anywhere.

A full run on the anyio and the sync transports (a relay, a listener, senders with the token in
a header and in the query, HTTP requests inline and over a rendezvous, a token renewal, refused
tokens, a relay restart and the reconnect after it) with every logger at DEBUG; then no log
record, no exception raised, no relay output and no ``repr`` of the objects involved may hold a
key, a signature (raw, or percent-encoded once or twice) or an ``sb-hc-token`` value.

Also: signatures are compared in constant time, rendezvous ids are unguessable, and TLS
certificates are verified unless the caller hands over a context that does not verify.
"""

from __future__ import annotations

import hmac
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from hyco_conformance.harness import LISTEN_KEY, ROOT_KEY, SEND_KEY, relay_config
from hyco_core import (
    AuthorizationError,
    CertificateError,
    ListenerStatus,
    ListenerStatusChanged,
    RejectedError,
    create_relay_token,
    encode_component,
    parse_connection_string,
    parse_sas_token,
)
from hyco_core.service import verify_sas_token
from hyco_core.timing import Backoff
from hyco_relay.config import parse_config
from hyco_relay.server import Relay, serve_relay
from hyco_relay.tls import (
    DevelopmentCertificates,
    client_ssl_context,
    ensure_development_certificates,
    server_ssl_context,
)
from hyco_transports import anyio as anyio_transport
from hyco_transports import sync as sync_transport
from hyco_transports.auth import (
    RelayEndpoint,
    RelayToken,
    SasKeyTokenProvider,
    SasTokenProvider,
)
from hyco_transports.httpx import RelayAuth

WRONG_KEY = "d3Jvbmcta2V5LW5vYm9keS1oYXM="
KEYS = (ROOT_KEY, SEND_KEY, LISTEN_KEY, WRONG_KEY)
# Shorter than the renewal margin: the listener renews halfway, well before the relay's cut-off.
LISTENER_TOKEN_LIFETIME = 4
BIG = b"x" * 100_000  # over the 64 KiB inline limit: the exchange goes over a rendezvous
UNREDACTED_TOKEN_PARAMETER = re.compile(r"sb-hc-token=(?!\*\*\*)", re.IGNORECASE)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- what is collected -------------------------------------------------------------------------


class RecordingKeyProvider(SasKeyTokenProvider):
    """A SAS key provider that remembers every token it hands out (to look for them later)."""

    def __init__(self, key_name: str, key: str, tokens: list[str], **options: Any) -> None:
        super().__init__(key_name, key, **options)
        self._issued = tokens

    def get_token(self, resource: str) -> RelayToken:
        token = super().get_token(resource)
        self._issued.append(token.token)
        return token


@dataclass
class Evidence:
    """Every token issued in a run, and every text the run showed besides its logs."""

    tokens: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def provider(self, key_name: str, key: str, **options: Any) -> RecordingKeyProvider:
        return RecordingKeyProvider(key_name, key, self.tokens, **options)

    def token(self, rule: str, key: str, relay: Relay) -> str:
        issued = create_relay_token(f"sb://{relay.address}/hc1", rule, key, now=time.time())
        self.tokens.append(issued)
        return issued

    def issued(self, rule: str) -> int:
        return sum(parse_sas_token(token).key_name == rule for token in self.tokens)

    def shown(self, *objects: object) -> None:
        self.texts += [repr(item) for item in objects]

    def raised(self, error: BaseException) -> None:
        """The error, its causes and contexts, and (for groups) their members."""
        seen: set[int] = set()
        pending = [error]
        while pending:
            current = pending.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            self.texts += [str(current), repr(current)]
            pending += [e for e in (current.__cause__, current.__context__) if e is not None]
            members = getattr(current, "exceptions", ())  # an exception group's
            pending += [e for e in members if isinstance(e, BaseException)]


class Capture(logging.Handler):
    """Every record of every logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.records: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        with self._lock:
            self.records.append(text)


@pytest.fixture
def logs() -> Iterator[Capture]:
    root = logging.getLogger()
    capture = Capture()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(level)


def secrets_of(tokens: list[str]) -> list[str]:
    """The keys, and each token's signature: raw, percent-encoded once (as in the token), twice
    (as in a query) and with lower-case escapes."""
    found = list(KEYS)
    for token in tokens:
        signature = parse_sas_token(token).signature
        once = encode_component(signature)
        twice = encode_component(once)
        found += [signature, once, twice, re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), once)]
    return found


def assert_nothing_secret(texts: list[str], tokens: list[str]) -> None:
    secrets = secrets_of(tokens)
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a key or signature shows in: {text[:300]!r}"
        assert not UNREDACTED_TOKEN_PARAMETER.search(text), f"a token shows in: {text[:300]!r}"


def test_the_check_finds_a_planted_secret() -> None:
    token = create_relay_token("sb://ns/hc1", "root", ROOT_KEY, now=1000)
    signature = parse_sas_token(token).signature
    assert_nothing_secret(["sb-hc-token=***&x=1", "nothing here"], [token])
    for leak in (
        signature,
        encode_component(signature),
        encode_component(encode_component(signature)),
        f"GET /$hc/hc1?sb-hc-token={encode_component(token)}",
        f"key {SEND_KEY}",
    ):
        with pytest.raises(AssertionError):
            assert_nothing_secret([f"connecting ... {leak} ..."], [token])


# -- the relay, in a thread of its own, that can restart on its port ---------------------------


class RunningRelay:
    def __init__(self, portal: BlockingPortal) -> None:
        self.portal = portal
        self._context: AbstractContextManager[Relay] | None = None
        self._relay: Relay | None = None

    @property
    def relay(self) -> Relay:
        assert self._relay is not None
        return self._relay

    def start(self, port: int = 0) -> None:
        config = relay_config(request_timeout=20.0, rendezvous_timeout=10.0)
        context = self.portal.wrap_async_context_manager(
            serve_relay(parse_config(config.replace("port = 0", f"port = {port}")))
        )
        self._relay = context.__enter__()
        self._context = context

    def stop(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None

    def restart(self) -> None:
        port = self.relay.port
        self.stop()
        self.start(port)

    def endpoint(self, provider: SasKeyTokenProvider) -> RelayEndpoint:
        return RelayEndpoint(
            namespace=self.relay.address, path="hc1", token_provider=provider, secure=False
        )

    def outputs(self) -> list[str]:
        """What the relay tells anyone who asks: /health and /stats."""
        base = f"http://{self.relay.address}"
        return [httpx.get(base + path, timeout=10).text for path in ("/health", "/stats")]


@pytest.fixture
def running() -> Iterator[RunningRelay]:
    with start_blocking_portal() as portal:
        relay = RunningRelay(portal)
        relay.start()
        try:
            yield relay
        finally:
            relay.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


async def async_wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.02)


def came_back(statuses: list[ListenerStatusChanged]) -> bool:
    kinds = [status.status for status in statuses]
    if ListenerStatus.OFFLINE not in kinds:
        return False
    return ListenerStatus.ONLINE in kinds[kinds.index(ListenerStatus.OFFLINE) :]


# -- the full runs -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_full_run_on_anyio_shows_no_secret(running: RunningRelay, logs: Capture) -> None:
    evidence = Evidence()
    statuses: list[ListenerStatusChanged] = []

    async def accept(context: anyio_transport.AcceptContext) -> None:
        evidence.shown(context, context.accept_message, context.headers)

    async def echo(ws: anyio_transport.WebSocket) -> None:
        evidence.shown(ws, ws.accept)
        async for message in ws:
            await ws.send(message)

    async def answer(request: anyio_transport.HttpRequest) -> anyio_transport.HttpResponse:
        evidence.shown(request, request.headers)
        body = await request.body()
        return anyio_transport.HttpResponse(200, body=BIG if request.path == "/big" else body)

    listener_provider = evidence.provider(
        "listen-only", LISTEN_KEY, lifetime=LISTENER_TOKEN_LIFETIME
    )
    listener = anyio_transport.Listener(
        running.endpoint(listener_provider),
        accept_handler=accept,
        connection_handler=echo,
        request_handler=answer,
        on_status=statuses.append,
        backoff=Backoff([0.0, 0.2, 0.5, 1.0]),
    )
    cs = running.relay.connection_string("hc1", "root")
    sender = running.endpoint(evidence.provider("send-only", SEND_KEY))
    async with listener:
        online_at = time.time()
        evidence.shown(listener, listener.endpoint, listener_provider)
        # Senders: the token in a header, and in the query.
        async with anyio_transport.connect(cs) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            evidence.shown(ws)
        async with anyio_transport.connect(sender, token_in_query=True) as ws:
            await ws.send(b"\x00" * 70_000)
            assert await ws.recv() == b"\x00" * 70_000
        # HTTP: inline, and over a rendezvous both ways.
        auth = RelayAuth(sender)
        async with httpx.AsyncClient(auth=auth, timeout=30) as client:
            assert (await client.get(auth.url("/small"))).content == b""
            assert (await client.post(auth.url("/big"), content=BIG)).content == BIG
        # Refused: a wrong key in a header, in the query, for a listener and for HTTP.
        wrong = running.endpoint(evidence.provider("root", WRONG_KEY))
        for in_query in (False, True):
            with pytest.raises(AuthorizationError) as refused:
                async with anyio_transport.connect(wrong, token_in_query=in_query):
                    pytest.fail("a wrong key was let in")
            evidence.raised(refused.value)
        with pytest.raises(AuthorizationError) as refused:
            async with anyio_transport.Listener(wrong):
                pytest.fail("a wrong key was let in")
        evidence.raised(refused.value)
        bad = evidence.token("root", WRONG_KEY, running.relay)
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(auth.url("/x"), headers={"ServiceBusAuthorization": bad})
        assert response.status_code == 401
        evidence.texts += [response.text, repr(response.headers)]
        # Renewal: past the first token's expiry the listener is still the same, online one.
        await async_wait_until(lambda: time.time() > online_at + LISTENER_TOKEN_LIFETIME + 0.5)
        assert [s.status for s in statuses] == [ListenerStatus.CONNECTING, ListenerStatus.ONLINE]
        assert evidence.issued("listen-only") >= 2
        async with anyio_transport.connect(cs) as ws:
            await ws.send("after the renewal")
            assert await ws.recv() == "after the renewal"
        # Reconnect: the relay restarts on its port; the listener comes back by itself.
        await anyio.to_thread.run_sync(running.restart)
        await async_wait_until(lambda: came_back(statuses))
        async with anyio_transport.connect(cs) as ws:
            await ws.send("after the restart")
            assert await ws.recv() == "after the restart"
    evidence.texts += await anyio.to_thread.run_sync(running.outputs)
    evidence.shown(
        listener,
        sender,
        auth,
        SasTokenProvider(evidence.tokens[0]),
        parse_connection_string(cs),
        *statuses,
    )
    check_the_run(evidence, logs)


def test_a_full_run_on_threads_shows_no_secret(running: RunningRelay, logs: Capture) -> None:
    evidence = Evidence()
    statuses: list[ListenerStatusChanged] = []

    def accept(context: sync_transport.AcceptContext) -> None:
        evidence.shown(context, context.accept_message, context.headers)

    def echo(ws: sync_transport.WebSocket) -> None:
        evidence.shown(ws, ws.accept)
        for message in ws:
            ws.send(message)

    def answer(request: sync_transport.HttpRequest) -> sync_transport.HttpResponse:
        evidence.shown(request, request.headers)
        body = request.body()
        return sync_transport.HttpResponse(200, body=BIG if request.path == "/big" else body)

    listener_provider = evidence.provider(
        "listen-only", LISTEN_KEY, lifetime=LISTENER_TOKEN_LIFETIME
    )
    listener = sync_transport.Listener(
        running.endpoint(listener_provider),
        accept_handler=accept,
        connection_handler=echo,
        request_handler=answer,
        on_status=statuses.append,
        backoff=Backoff([0.0, 0.2, 0.5, 1.0]),
    )
    cs = running.relay.connection_string("hc1", "root")
    sender = running.endpoint(evidence.provider("send-only", SEND_KEY))
    with listener:
        online_at = time.time()
        evidence.shown(listener, listener.endpoint, listener_provider)
        with sync_transport.connect(cs) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            evidence.shown(ws)
        with sync_transport.connect(sender, token_in_query=True) as ws:
            ws.send(b"\x00" * 70_000)
            assert ws.recv(timeout=10) == b"\x00" * 70_000
        auth = RelayAuth(sender)
        with httpx.Client(auth=auth, timeout=30) as client:
            assert client.get(auth.url("/small")).content == b""
            assert client.post(auth.url("/big"), content=BIG).content == BIG
        wrong = running.endpoint(evidence.provider("root", WRONG_KEY))
        for in_query in (False, True):
            with (
                pytest.raises(AuthorizationError) as refused,
                sync_transport.connect(wrong, token_in_query=in_query),
            ):
                pytest.fail("a wrong key was let in")
            evidence.raised(refused.value)
        with pytest.raises(AuthorizationError) as refused, sync_transport.Listener(wrong):
            pytest.fail("a wrong key was let in")
        evidence.raised(refused.value)
        bad = evidence.token("root", WRONG_KEY, running.relay)
        response = httpx.get(auth.url("/x"), headers={"ServiceBusAuthorization": bad}, timeout=30)
        assert response.status_code == 401
        evidence.texts += [response.text, repr(response.headers)]
        wait_until(lambda: time.time() > online_at + LISTENER_TOKEN_LIFETIME + 0.5)
        assert [s.status for s in statuses] == [ListenerStatus.CONNECTING, ListenerStatus.ONLINE]
        assert evidence.issued("listen-only") >= 2
        with sync_transport.connect(cs) as ws:
            ws.send("after the renewal")
            assert ws.recv(timeout=10) == "after the renewal"
        running.restart()
        wait_until(lambda: came_back(statuses))
        with sync_transport.connect(cs) as ws:
            ws.send("after the restart")
            assert ws.recv(timeout=10) == "after the restart"
    evidence.texts += running.outputs()
    evidence.shown(
        listener,
        sender,
        auth,
        SasTokenProvider(evidence.tokens[0]),
        parse_connection_string(cs),
        *statuses,
    )
    check_the_run(evidence, logs)


def check_the_run(evidence: Evidence, logs: Capture) -> None:
    records = list(logs.records)
    assert_nothing_secret(records + evidence.texts, evidence.tokens)
    # The run said enough for the check to mean something: refusals, the reconnect, DEBUG.
    assert any("refused" in record for record in records)
    assert any("offline" in record for record in records)
    assert any(" DEBUG " in record for record in records)
    assert any("sb-hc-token=***" in record for record in records)  # a query token, redacted
    assert any("AuthorizationError" in text for text in evidence.texts)


# -- signatures, rendezvous ids, TLS -----------------------------------------------------------


def test_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    keys = {"root": ["first-key", "second-key"]}
    token = create_relay_token("sb://ns/hc1", "root", "second-key", now=1000)
    given = parse_sas_token(token).signature.encode()
    assert verify_sas_token(token, keys=keys, target="sb://ns/hc1", now=1000).valid
    # Every key of the rule is compared, the matching one too, each through compare_digest.
    assert [pair[1] for pair in compared] == [given, given]
    compared.clear()
    forged = token.replace("&sig=", "&sig=A", 1)
    assert not verify_sas_token(forged, keys=keys, target="sb://ns/hc1", now=1000).valid
    assert len(compared) == 2


def test_the_relay_checks_real_tokens_with_compare_digest(
    running: RunningRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[bytes] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    evidence = Evidence()
    endpoint = running.endpoint(evidence.provider("listen-only", LISTEN_KEY))
    with sync_transport.Listener(endpoint):
        pass
    assert parse_sas_token(evidence.tokens[0]).signature.encode() in compared


RENDEZVOUS_ID = re.compile(r"[A-Za-z0-9_-]{32}")  # 24 random bytes in URL-safe base64: 192 bits


@pytest.mark.anyio
async def test_a_thousand_rendezvous_ids_are_unique_and_random() -> None:
    ids: list[str] = []

    async def record(context: anyio_transport.AcceptContext) -> None:
        ids.append(context.accept_message.id)
        assert f"sb-hc-id={context.accept_message.id}" in context.accept_message.address
        context.reject(409, "counted")

    async with serve_relay(parse_config(relay_config())) as relay:
        cs = relay.connection_string("hc1", "root")

        async def sender(count: int) -> None:
            for _ in range(count):
                with pytest.raises(RejectedError):
                    async with anyio_transport.connect(cs):
                        pass

        async with (
            anyio_transport.Listener.from_connection_string(cs, accept_handler=record),
            anyio.create_task_group() as senders,
        ):
            for _ in range(20):
                senders.start_soon(sender, 50)
    assert len(ids) == 1000
    assert len(set(ids)) == 1000
    assert all(RENDEZVOUS_ID.fullmatch(rendezvous_id) for rendezvous_id in ids)
    # Random bits, not a counter or a clock: every position takes many values.
    assert all(len({rendezvous_id[i] for rendezvous_id in ids}) > 40 for i in range(31))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> DevelopmentCertificates:
    return ensure_development_certificates(tmp_path_factory.mktemp("tls"))


def _not_verifying() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.anyio
async def test_tls_is_verified_unless_the_caller_turns_it_off_anyio(
    certificates: DevelopmentCertificates,
) -> None:
    context = server_ssl_context(certificates.certificate, certificates.private_key)
    async with serve_relay(parse_config(relay_config()), ssl_context=context) as relay:
        cs = relay.connection_string("hc1", "root")
        assert "UseDevelopmentEmulator" not in cs
        with pytest.raises(CertificateError, match="certificate"):
            async with anyio_transport.Listener.from_connection_string(cs):
                pytest.fail("an untrusted certificate was accepted")
        with pytest.raises(CertificateError):
            async with anyio_transport.connect(cs):
                pytest.fail("an untrusted certificate was accepted")
        for trusted in (client_ssl_context(certificates.ca_certificate), _not_verifying()):
            async with anyio_transport.Listener.from_connection_string(
                cs, ssl_context=trusted
            ) as listener:
                assert listener.status is ListenerStatus.ONLINE


def test_tls_is_verified_unless_the_caller_turns_it_off_threads(
    certificates: DevelopmentCertificates,
) -> None:
    context = server_ssl_context(certificates.certificate, certificates.private_key)
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(
            serve_relay(parse_config(relay_config()), ssl_context=context)
        ) as relay,
    ):
        cs = relay.connection_string("hc1", "root")
        with (
            pytest.raises(CertificateError, match="certificate"),
            sync_transport.Listener.from_connection_string(cs),
        ):
            pytest.fail("an untrusted certificate was accepted")
        with pytest.raises(CertificateError), sync_transport.connect(cs):
            pytest.fail("an untrusted certificate was accepted")
        for trusted in (client_ssl_context(certificates.ca_certificate), _not_verifying()):
            with sync_transport.Listener.from_connection_string(
                cs, ssl_context=trusted
            ) as listener:
                assert listener.status is ListenerStatus.ONLINE

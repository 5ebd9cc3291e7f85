"""RelayAuth: fresh relay tokens on httpx requests, reused until they near expiry."""

from __future__ import annotations

import httpx

from hyco_core import parse_sas_token
from hyco_core.service import verify_sas_token
from hyco_transports.auth import RelayEndpoint, SasKeyTokenProvider
from hyco_transports.httpx import RelayAuth

KEY = "a2V5LWZvci1odHRweC10ZXN0cw=="


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def authorized(auth: RelayAuth, url: str) -> str:
    request = httpx.Request("GET", url)
    flow = auth.auth_flow(request)
    signed = next(flow)
    return signed.headers["ServiceBusAuthorization"]


def test_tokens_are_reused_then_renewed_ahead_of_expiry() -> None:
    clock = Clock()
    provider = SasKeyTokenProvider("send", KEY, lifetime=600, clock=clock)
    endpoint = RelayEndpoint(namespace="ns.example", path="hc1", token_provider=provider)
    auth = RelayAuth(endpoint, clock=clock)
    first = authorized(auth, auth.url("/a"))
    clock.now += 400
    assert authorized(auth, auth.url()) == first
    clock.now += 100  # 500 s of 600: within the last fifth
    second = authorized(auth, auth.url())
    assert second != first
    verdict = verify_sas_token(
        second, keys={"send": [KEY]}, target="sb://ns.example/hc1", now=clock.now
    )
    assert verdict.valid
    assert parse_sas_token(second).expiry == int(clock.now) + 600


def test_urls_and_anonymous_endpoints() -> None:
    auth = RelayAuth(RelayEndpoint(namespace="localhost:9090", path="hc1", secure=False))
    assert auth.url("/items", "page=2") == "http://localhost:9090/hc1/items?page=2"
    assert auth.url() == "http://localhost:9090/hc1"
    request = next(auth.auth_flow(httpx.Request("GET", auth.url())))
    assert "ServiceBusAuthorization" not in request.headers
    assert repr(auth) == "RelayAuth(localhost:9090/hc1)"

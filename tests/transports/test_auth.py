"""Token providers and relay endpoints."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import anyio.abc
import pytest

from hyco_core import (
    AuthorizationError,
    ConnectionStringError,
    InvalidTokenError,
    create_sas_token,
    parse_sas_token,
)
from hyco_core.service import verify_sas_token
from hyco_transports.anyio import connect
from hyco_transports.auth import (
    ENTRA_SCOPE,
    CallableTokenProvider,
    EntraTokenProvider,
    RelayEndpoint,
    RelayToken,
    SasKeyTokenProvider,
    SasTokenProvider,
)

KEY = "cHJvdmlkZXIta2V5"


def test_sas_key_provider_signs_for_the_resource_with_its_lifetime() -> None:
    provider = SasKeyTokenProvider("listen", KEY, lifetime=120, clock=lambda: 1_800_000_000.0)
    issued = provider.get_token("sb://ns.example/hc1")
    assert issued.expires_at == 1_800_000_120
    verdict = verify_sas_token(
        issued.token, keys={"listen": [KEY]}, target="sb://ns.example/hc1", now=1_800_000_000
    )
    assert verdict.valid
    assert KEY not in repr(provider)
    assert "token" not in repr(issued)


def test_fixed_sas_token_provider_reports_its_expiry() -> None:
    token = create_sas_token("http://ns.example/hc1/", "send", KEY, 1_900_000_000)
    provider = SasTokenProvider(token)
    assert provider.get_token("ignored") == RelayToken(token, 1_900_000_000.0)
    assert "sig=" not in repr(provider)
    with pytest.raises(InvalidTokenError, match="not usable"):
        SasTokenProvider("Bearer abc")


def test_callable_provider_accepts_strings_and_relay_tokens() -> None:
    seen: list[str] = []

    def supply(resource: str) -> str:
        seen.append(resource)
        return "SharedAccessSignature from-callable"

    assert CallableTokenProvider(supply).get_token("sb://a/b") == RelayToken(
        "SharedAccessSignature from-callable"
    )
    assert seen == ["sb://a/b"]
    rich = CallableTokenProvider(lambda _r: RelayToken("t", 5.0), blocking=True)
    assert rich.blocking
    assert rich.get_token("x") == RelayToken("t", 5.0)


@dataclass
class FakeAccessToken:
    token: str
    expires_on: int


class FakeCredential:
    """Stands in for an azure-identity TokenCredential: records the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str) -> FakeAccessToken:
        self.scopes.extend(scopes)
        return FakeAccessToken("eyJhbGciOiJSUzI1NiJ9.payload.signature", 1_900_000_000)


def test_entra_provider_asks_for_the_relay_audience() -> None:
    credential = FakeCredential()
    provider = EntraTokenProvider(credential)
    token = provider.get_token("sb://ns.example/hc1")
    assert credential.scopes == [ENTRA_SCOPE] == ["https://relay.azure.net/.default"]
    assert token == RelayToken("eyJhbGciOiJSUzI1NiJ9.payload.signature", 1_900_000_000.0)
    assert provider.blocking


@pytest.mark.parametrize(
    ("connection_string", "namespace", "host", "port", "secure", "provider"),
    [
        (
            f"Endpoint=sb://ns.example/;SharedAccessKeyName=r;SharedAccessKey={KEY};EntityPath=hc1",
            "ns.example",
            "ns.example",
            443,
            True,
            SasKeyTokenProvider,
        ),
        (
            "Endpoint=sb://127.0.0.1:9090/;EntityPath=hc1;UseDevelopmentEmulator=true;"
            f"SharedAccessSignature={create_sas_token('http://x/', 'r', KEY, 2_000_000_000)}",
            "127.0.0.1:9090",
            "127.0.0.1",
            9090,
            False,
            SasTokenProvider,
        ),
        (
            "Endpoint=sb://[::1]:9443/;EntityPath=hc1;Authentication=Managed Identity",
            "[::1]:9443",
            "::1",
            9443,
            True,
            EntraTokenProvider,
        ),
    ],
)
def test_endpoints_from_connection_strings(
    connection_string: str,
    namespace: str,
    host: str,
    port: int,
    secure: bool,
    provider: type,
) -> None:
    endpoint = RelayEndpoint.from_connection_string(connection_string)
    assert (endpoint.namespace, endpoint.host, endpoint.port, endpoint.secure) == (
        namespace,
        host,
        port,
        secure,
    )
    assert isinstance(endpoint.token_provider, provider)
    assert endpoint.resource == f"sb://{namespace}/hc1"


def test_endpoint_needs_an_entity_path() -> None:
    cs = "Endpoint=sb://ns.example/;SharedAccessKeyName=r;SharedAccessKey=k"
    with pytest.raises(ConnectionStringError, match="EntityPath"):
        RelayEndpoint.from_connection_string(cs)
    assert RelayEndpoint.from_connection_string(cs, path="hc2").path == "hc2"
    anonymous = RelayEndpoint.from_connection_string("Endpoint=sb://ns.example/;EntityPath=x")
    assert anonymous.token_provider is None


@pytest.mark.anyio
async def test_entra_tokens_travel_raw_in_the_authorization_header() -> None:
    """No 'Bearer ' prefix: the relay reads the JWT from ServiceBusAuthorization as it is."""
    heads: list[bytes] = []

    async def refuse(client: anyio.abc.SocketStream) -> None:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await client.receive()
            heads.append(head)
            await client.send(
                b"HTTP/1.1 401 Unauthorized. TrackingId:t-1\r\nContent-Length: 0\r\n\r\n"
            )

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    endpoint = RelayEndpoint(
        namespace=f"127.0.0.1:{port}",
        path="hc1",
        secure=False,
        token_provider=EntraTokenProvider(FakeCredential()),
    )
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, refuse)
        with pytest.raises(AuthorizationError) as caught:
            async with connect(endpoint):
                pass
        tasks.cancel_scope.cancel()
    assert caught.value.tracking_id == "t-1"
    assert b"ServiceBusAuthorization: eyJhbGciOiJSUzI1NiJ9.payload.signature\r\n" in heads[0]


def test_token_expiry_of_parsed_tokens() -> None:
    token = create_sas_token("http://ns/hc1/", "r", KEY, 1_999_999_999)
    assert parse_sas_token(token).expiry == 1_999_999_999


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

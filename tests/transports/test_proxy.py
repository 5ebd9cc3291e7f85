"""HTTP CONNECT proxies: the choice from the environment, and tunnels through a real proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from hyco_relay.config import default_config
from hyco_relay.server import serve_relay
from hyco_relay.tls import client_ssl_context, ensure_development_certificates, server_ssl_context
from hyco_transports.anyio import Listener, WebSocket, connect
from hyco_transports.proxy import (
    Proxy,
    ProxyError,
    connect_request,
    parse_connect_response,
    proxy_for,
)


@pytest.mark.parametrize(
    ("environ", "host", "secure", "expected"),
    [
        ({}, "ns.example", True, None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "ns.example", True, Proxy("proxy", 3128)),
        ({"https_proxy": "proxy:8080"}, "ns.example", True, Proxy("proxy", 8080)),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "ns.example", False, None),
        ({"HTTP_PROXY": "http://proxy"}, "ns.example", False, Proxy("proxy", 80)),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "ns.example", True, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example"}, "ns.example", True, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example"}, "ns.example", True, None),
        (
            {"HTTPS_PROXY": "http://p:1", "no_proxy": "other.org, ns.example"},
            "ns.example",
            True,
            None,
        ),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "xample"}, "ns.example", True, Proxy("p", 1)),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "127.0.0.0/8"}, "127.0.0.1", True, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.1"}, "127.0.0.1", True, Proxy("p", 1)),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "[::1]"}, "::1", True, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ns.example:443"}, "ns.example", True, None),
    ],
)
def test_proxy_choice_follows_the_environment(
    environ: dict[str, str], host: str, secure: bool, expected: Proxy | None
) -> None:
    assert proxy_for(host, secure=secure, environ=environ) == expected


def test_proxy_credentials_and_bad_schemes() -> None:
    proxy = proxy_for("h", secure=True, environ={"HTTPS_PROXY": "http://us%40er:p%3Ass@p:3128"})
    assert proxy is not None
    assert proxy.authorization == "Basic dXNAZXI6cDpzcw=="  # us@er:p:ss
    assert "dXNAZXI" not in repr(proxy)
    request = connect_request("ns.example", 443, proxy)
    assert request.startswith(b"CONNECT ns.example:443 HTTP/1.1\r\nHost: ns.example:443\r\n")
    assert b"Proxy-Authorization: Basic dXNAZXI6cDpzcw==" in request
    assert connect_request("::1", 443, Proxy("p", 1)).startswith(b"CONNECT [::1]:443 ")
    with pytest.raises(ProxyError, match="socks5"):
        proxy_for("h", secure=True, environ={"HTTPS_PROXY": "socks5://p:1080"})


def test_connect_answers() -> None:
    assert parse_connect_response(b"HTTP/1.1 200 Connection established\r\n") is None
    head = b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n"
    assert parse_connect_response(head) == len(head)
    with pytest.raises(ProxyError, match="407 Proxy Authentication Required"):
        parse_connect_response(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
    with pytest.raises(ProxyError, match="answered CONNECT"):
        parse_connect_response(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(ProxyError, match="too long"):
        parse_connect_response(b"x" * 20000)


@asynccontextmanager
async def connect_proxy(*, refuse: bool = False) -> AsyncIterator[tuple[int, list[str]]]:
    """A minimal HTTP CONNECT proxy on 127.0.0.1 that records the tunnels it opened."""
    tunnels: list[str] = []

    async def handle(client: anyio.abc.SocketStream) -> None:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await client.receive()
            target = head.split(b" ")[1].decode()
            if refuse:
                await client.send(b"HTTP/1.1 403 Forbidden by policy\r\n\r\n")
                return
            host, _, port = target.rpartition(":")
            tunnels.append(target)
            async with await anyio.connect_tcp(host.strip("[]"), int(port)) as upstream:
                await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")

                async def pump(
                    source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream
                ) -> None:
                    try:
                        async for data in source:
                            await sink.send(data)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass
                    finally:
                        await sink.send_eof()

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(pump, client, upstream)
                    tasks.start_soon(pump, upstream, client)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handle)
        yield port, tunnels
        tasks.cancel_scope.cancel()


async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


@pytest.mark.anyio
async def test_listener_and_sender_tunnel_through_the_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    certificates = ensure_development_certificates(tmp_path)
    server = server_ssl_context(certificates.certificate, certificates.private_key)
    trusted = client_ssl_context(certificates.ca_certificate)
    async with connect_proxy() as (port, tunnels), serve_relay(default_config(port=0)) as relay:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        cs = relay.connection_string()
        async with Listener.from_connection_string(cs, connection_handler=echo), connect(cs) as ws:
            await ws.send("through the proxy")
            assert await ws.recv() == "through the proxy"
        assert len(tunnels) >= 3  # control channel, sender, accept rendezvous
        assert set(tunnels) == {relay.address}

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        before = len(tunnels)
        async with Listener.from_connection_string(cs, connection_handler=echo), connect(cs) as ws:
            await ws.send("direct")
            assert await ws.recv() == "direct"
        assert len(tunnels) == before

    async with (
        connect_proxy() as (port, tunnels),
        serve_relay(default_config(port=0), ssl_context=server) as relay,
    ):
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY")
        cs = relay.connection_string()
        async with (
            Listener.from_connection_string(cs, connection_handler=echo, ssl_context=trusted),
            connect(cs, ssl_context=trusted) as ws,
        ):
            await ws.send("tls in a tunnel")
            assert await ws.recv() == "tls in a tunnel"
        assert tunnels


@pytest.mark.anyio
async def test_a_refusing_proxy_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async with (
        connect_proxy(refuse=True) as (port, _),
        serve_relay(default_config(port=0)) as relay,
    ):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with pytest.raises(ProxyError, match="403 Forbidden by policy"):
            async with connect(relay.connection_string()):
                pass


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

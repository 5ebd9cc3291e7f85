"""Operating the relay: hooks, management read, presence, reload, rate limits, TLS."""

from __future__ import annotations

import json
import ssl
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import replace
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hyco_conformance.harness import ROOT_KEY, SEND_KEY
from hyco_core import CertificateError, RemoteEndpoint, create_relay_send_uri, create_relay_token
from hyco_relay.config import parse_config
from hyco_relay.hooks import ConnectionInfo, Refused, RelayHooks
from hyco_relay.server import Relay, serve_relay
from hyco_relay.tls import client_ssl_context, ensure_development_certificates, server_ssl_context
from hyco_transports.anyio import Listener, WebSocket, connect

from .conftest import CONFIG, connection_string, token

pytestmark = pytest.mark.anyio


async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def status_of(uri: str, headers: dict[str, str]) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as caught:
        async with ws_connect(uri, additional_headers=headers):
            pass
    return caught.value.response.status_code, caught.value.response.reason_phrase


async def test_hooks_see_connections_and_may_refuse_or_fail() -> None:
    seen: list[ConnectionInfo] = []

    async def record(info: ConnectionInfo) -> None:
        seen.append(info)

    async def police(info: ConnectionInfo) -> None:
        seen.append(info)
        if info.headers.get("x-role") == "intruder":
            raise Refused(403, "Intruders are not welcome")
        if info.headers.get("x-role") == "buggy":
            raise RuntimeError("hook bug")

    hooks = RelayHooks(
        listener_connected=record,
        listener_disconnected=record,
        sender_connecting=police,
        http_request=police,
    )
    async with serve_relay(parse_config(CONFIG), hooks=hooks) as relay:
        cs = connection_string(relay)
        async with Listener.from_connection_string(cs, connection_handler=echo):
            uri = create_relay_send_uri(relay.address, "hc1", suffix="s", secure=False)
            headers = {"ServiceBusAuthorization": token(relay)}
            async with ws_connect(uri, additional_headers=headers) as ws:
                await ws.send("ok")
                assert await ws.recv() == "ok"
            status, reason = await status_of(uri, {**headers, "X-Role": "intruder"})
            assert (status, reason.split(".")[0]) == (403, "Intruders are not welcome")
            status, reason = await status_of(uri, {**headers, "X-Role": "buggy"})
            assert status == 500
            assert "hook bug" not in reason
            async with httpx.AsyncClient() as client:
                response = await client.get(
                    f"http://{relay.address}/hc1", headers={**headers, "X-Role": "intruder"}
                )
            assert response.status_code == 403
    kinds = [info.kind for info in seen]
    assert kinds[0] == "listener"
    assert kinds[-1] == "listener"  # disconnected
    sender = next(info for info in seen if info.kind == "sender")
    assert sender.suffix == "/s"
    assert "ServiceBusAuthorization" not in sender.headers
    assert sender.remote_endpoint is not None


async def test_a_failing_listener_hook_closes_the_control_channel_with_1011() -> None:
    async def broken(info: ConnectionInfo) -> None:
        raise RuntimeError("cannot register")

    async with serve_relay(
        parse_config(CONFIG), hooks=RelayHooks(listener_connected=broken)
    ) as relay:
        listen = f"ws://{relay.address}/$hc/hc1?sb-hc-action=listen"
        async with ws_connect(
            listen, additional_headers={"ServiceBusAuthorization": token(relay)}
        ) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011


async def test_management_read_reports_the_listener_count(relay: Relay) -> None:
    url = f"http://{relay.address}/hc1?api-version=2016-07"
    async with httpx.AsyncClient() as client:
        unauthorized = await client.get(url)
        assert unauthorized.status_code == 401
        headers = {"ServiceBusAuthorization": token(relay, rule="send-only", key=SEND_KEY)}
        async with Listener.from_connection_string(
            connection_string(relay), connection_handler=echo
        ):
            response = await client.get(url, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    entry = ElementTree.fromstring(response.content)
    names = "{http://schemas.microsoft.com/netservices/2010/10/servicebus/connect}"
    description = entry.find(f".//{names}HybridConnectionDescription")
    assert description is not None
    assert description.findtext(f"{names}ListenerCount") == "1"
    assert description.findtext(f"{names}RequiresClientAuthorization") == "true"


async def test_presence_feed_reports_listeners_online_and_offline(relay: Relay) -> None:
    manage = create_relay_token(f"sb://{relay.address}/", "root", ROOT_KEY, now=time.time())
    events: list[tuple[str, dict[str, object]]] = []
    async with httpx.AsyncClient(timeout=10) as client:
        denied = await client.get(
            f"http://{relay.address}/$presence", headers={"ServiceBusAuthorization": token(relay)}
        )
        assert denied.status_code == 401
        async with client.stream(
            "GET", f"http://{relay.address}/$presence", headers={"ServiceBusAuthorization": manage}
        ) as stream:
            assert stream.headers["content-type"] == "text/event-stream"
            lines = stream.aiter_lines()

            async def next_event() -> tuple[str, dict[str, object]]:
                kind = ""
                while True:
                    line = await lines.__anext__()
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        return kind, json.loads(line[6:])

            async with Listener.from_connection_string(
                connection_string(relay), connection_handler=echo, tracking_id="watched"
            ):
                with anyio.fail_after(5):
                    events.append(await next_event())
            with anyio.fail_after(5):
                events.append(await next_event())
    assert [kind for kind, _ in events] == ["online", "offline"]
    assert events[0][1]["listener"] == "watched"
    assert events[0][1]["entity"] == "hc1"
    assert events[0][1]["listeners"] == 1
    assert events[1][1]["listeners"] == 0


async def test_removing_an_entity_closes_its_listeners_with_1001(relay: Relay) -> None:
    listen = f"ws://{relay.address}/$hc/hc1?sb-hc-action=listen"
    async with ws_connect(
        listen, additional_headers={"ServiceBusAuthorization": token(relay)}
    ) as ws:
        namespace = relay.config.namespaces[0]
        kept = tuple(entity for entity in namespace.entities if entity.name != "hc1")
        await relay.reconfigure(
            replace(relay.config, namespaces=(replace(namespace, entities=kept),))
        )
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    status, _ = await status_of(listen, {"ServiceBusAuthorization": token(relay)})
    assert status == 404


async def test_rate_limits_answer_429_and_close_1008() -> None:
    limited = CONFIG.replace(
        "rendezvous_timeout = 2.0",
        "rendezvous_timeout = 2.0\nconnection_rate = 0.001\nconnection_burst = 3\n"
        "message_rate = 0.001\nmessage_burst = 5",
    )
    async with serve_relay(parse_config(limited)) as relay, httpx.AsyncClient() as client:
        codes = [(await client.get(f"http://{relay.address}/health")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        # A crowd of other addresses, more than the relay tracks, does not wash the limit out.
        for number in range(10_001):
            crowd = RemoteEndpoint(address=f"10.0.{number >> 8}.{number & 255}", port=1)
            relay._admit_client(crowd)
        assert (await client.get(f"http://{relay.address}/health")).status_code == 429

    async with (
        serve_relay(
            parse_config(limited.replace("connection_rate = 0.001", "connection_rate = 0"))
        ) as relay,
        Listener.from_connection_string(connection_string(relay), connection_handler=echo),
    ):
        uri = create_relay_send_uri(relay.address, "hc1", secure=False)
        async with ws_connect(
            uri, additional_headers={"ServiceBusAuthorization": token(relay)}
        ) as ws:
            for index in range(5):
                await ws.send(str(index))
                assert await ws.recv() == str(index)
            await ws.send("one too many")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1008,
        "Message rate limit exceeded",
    )


async def test_tls_relay_with_verified_clients(tmp_path: Path) -> None:
    certificates = ensure_development_certificates(tmp_path)
    context = server_ssl_context(certificates.certificate, certificates.private_key)
    trusted = client_ssl_context(certificates.ca_certificate)
    async with serve_relay(parse_config(CONFIG), ssl_context=context) as relay:
        cs = connection_string(relay)
        assert "UseDevelopmentEmulator" not in cs
        async with Listener.from_connection_string(
            cs, connection_handler=echo, ssl_context=trusted
        ):
            async with connect(cs, ssl_context=trusted) as ws:
                await ws.send("over tls")
                assert await ws.recv() == "over tls"
            async with httpx.AsyncClient(verify=trusted) as client:
                response = await client.get(
                    f"https://{relay.address}/hc1",
                    headers={"ServiceBusAuthorization": token(relay)},
                )
                assert response.status_code == 501  # the listener answers over TLS too
            with pytest.raises(CertificateError, match="certificate"):
                async with connect(cs, ssl_context=ssl.create_default_context()):
                    pass

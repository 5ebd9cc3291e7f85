"""What clients written against the real service expect of the relay, tried with such clients.

The listeners here are plain ``websockets`` clients that read and write the control channel's
JSON themselves, with exact keys, as code written against the service does; the senders are
``websockets`` and ``httpx`` clients and raw sockets. Each runs against the real relay on
127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from hyco_core import create_relay_listen_uri, create_relay_send_uri
from hyco_relay.server import Relay

from .conftest import refused, token

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def json_listener(relay: Relay, entity: str = "hc1") -> AsyncIterator[ClientConnection]:
    """A listener's control channel, read and written as JSON by the test itself."""
    uri = create_relay_listen_uri(relay.address, entity, secure=False)
    headers = {"ServiceBusAuthorization": token(relay, entity)}
    async with ws_connect(uri, additional_headers=headers) as control:
        yield control


async def next_message(control: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(10):
        document: dict[str, Any] = json.loads(await control.recv())
    return document


async def answer_inline(
    control: ClientConnection, response: dict[str, Any], body: bytes = b""
) -> dict[str, Any]:
    """Answer the next request on the control channel with ``response`` (and ``body``)."""
    request: dict[str, Any] = (await next_message(control))["request"]
    if request.get("body"):
        await control.recv()
    await control.send(
        json.dumps({"response": {"requestId": request["id"], "body": bool(body), **response}})
    )
    if body:
        await control.send(body)
    return request


# -- portal connection strings end in '/' ------------------------------------------------------


async def test_senders_and_listeners_joining_a_trailing_slash_endpoint_are_served(
    relay: Relay,
) -> None:
    # Endpoint=sb://host/ joined with "/{entity}" by string concatenation.
    listen = f"ws://{relay.address}//$hc/hc1?sb-hc-action=listen"
    listen_headers = {"ServiceBusAuthorization": token(relay)}
    async with ws_connect(listen, additional_headers=listen_headers) as control:
        async with anyio.create_task_group() as tasks:

            async def answer() -> None:
                await answer_inline(control, {"statusCode": 200}, b"found")

            tasks.start_soon(answer)
            async with httpx.AsyncClient() as client:
                response = await client.get(
                    f"http://{relay.address}//hc1",
                    headers={"ServiceBusAuthorization": token(relay)},
                )
        assert (response.status_code, response.content) == (200, b"found")
        # A WebSocket sender at wss://host//$hc/hc1 is announced to the same listener.
        sender = ws_connect(
            f"ws://{relay.address}//$hc/hc1?sb-hc-action=connect",
            additional_headers={"ServiceBusAuthorization": token(relay)},
            open_timeout=3,
        )
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_expect_timeout, sender)
            accept = (await next_message(control))["accept"]
        assert accept["address"].startswith(f"ws://{relay.address}/$hc/hc1?sb-hc-action=accept&")


async def _expect_timeout(sender: Any) -> None:
    with pytest.raises((InvalidStatus, TimeoutError)):
        async with sender:
            pass


async def test_empty_segments_widen_no_token(relay: Relay) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"http://{relay.address}//deep//path",
            headers={"ServiceBusAuthorization": token(relay, "hc1")},
        )
    assert response.status_code == 403


# -- header names as the sender spelled them -----------------------------------------------------


async def test_listeners_read_header_names_as_senders_spelled_them(relay: Relay) -> None:
    async with json_listener(relay, "open") as control:
        sender = ws_connect(
            create_relay_send_uri(relay.address, "open", secure=False),
            additional_headers={"X-Custom-Header": "ws"},
            open_timeout=3,
        )
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_expect_timeout, sender)
            accept = (await next_message(control))["accept"]
        assert accept["connectHeaders"]["X-Custom-Header"] == "ws"
        async with anyio.create_task_group() as tasks:
            served: list[httpx.Response] = []

            async def send() -> None:
                async with httpx.AsyncClient() as client:
                    served.append(
                        await client.get(
                            f"http://{relay.address}/open", headers={"X-Custom-Header": "http"}
                        )
                    )

            tasks.start_soon(send)
            request = await answer_inline(
                control, {"statusCode": 200, "responseHeaders": {"X-Reply-Header": "back"}}
            )
    assert request["requestHeaders"]["X-Custom-Header"] == "http"
    assert served[0].headers["x-reply-header"] == "back"
    assert b"X-Reply-Header" in [name for name, _ in served[0].headers.raw]


# -- listener answers HTTP cannot carry ----------------------------------------------------------


async def _answer_through(relay: Relay, response: dict[str, Any]) -> httpx.Response:
    async with (
        json_listener(relay, "open") as control,
        httpx.AsyncClient() as client,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(answer_inline, control, response)
        answered = await client.get(f"http://{relay.address}/open")
    return answered


async def test_a_latin_1_header_value_from_a_listener_reaches_the_sender(relay: Relay) -> None:
    disposition = "attachment; filename=café.txt"
    response = await _answer_through(
        relay, {"statusCode": 200, "responseHeaders": {"Content-Disposition": disposition}}
    )
    assert response.status_code == 200
    assert response.headers["content-disposition"] == disposition  # httpx reads Latin-1


@pytest.mark.parametrize(
    "response",
    [
        {"statusCode": 101},
        {"statusCode": 199},
        {"statusCode": 200, "responseHeaders": {"X-Split": "a\r\nInjected: yes"}},
        {"statusCode": 200, "responseHeaders": {"X-Nul": "a\x00b"}},
        {"statusCode": 200, "statusDescription": "OK\nInjected: yes"},
    ],
    ids=["101", "199", "cr-lf", "nul", "description-lf"],
)
async def test_a_listener_answer_http_cannot_carry_is_a_502_naming_the_listener(
    relay: Relay, response: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    answered = await _answer_through(relay, response)
    assert answered.status_code == 502
    message = answered.json()["error"]["message"]
    assert message.startswith("The listener's answer cannot be passed on: ")
    assert "TrackingId:" in message
    assert "injected" not in {name.lower() for name in answered.headers}
    warnings = [r for r in caplog.records if "cannot be passed on" in r.getMessage()]
    assert [r.levelname for r in warnings] == ["WARNING"]


@pytest.mark.parametrize(
    ("status", "description", "expected"),
    [
        ("403", "go+away+now", (403, "go away now. TrackingId:")),  # .NET's WebUtility.UrlEncode
        ("403", quote("Go away."), (403, "Go away. TrackingId:")),
        ("101", "switching", (502, "The listener's answer cannot be passed on")),
        ("199", "early", (502, "The listener's answer cannot be passed on")),
    ],
)
async def test_a_reject_reaches_the_sender_as_the_listener_wrote_it(
    relay: Relay, status: str, description: str, expected: tuple[int, str]
) -> None:
    async with json_listener(relay, "open") as control, anyio.create_task_group() as tasks:
        refusals: list[tuple[int, str]] = []

        async def send() -> None:
            uri = create_relay_send_uri(relay.address, "open", secure=False)
            refusals.append(await refused(uri))

        tasks.start_soon(send)
        accept = (await next_message(control))["accept"]
        reject = (
            f"{accept['address']}&sb-hc-statusCode={status}&sb-hc-statusDescription={description}"
        )
        with pytest.raises(InvalidStatus) as delivered:
            async with ws_connect(reject):
                pass
        assert delivered.value.response.status_code == 410
    (refused_status, reason) = refusals[0]
    assert refused_status == expected[0]
    assert reason.startswith(expected[1]), reason


async def test_a_form_encoded_query_token_is_accepted(relay: Relay) -> None:
    # What urllib.parse.urlencode writes: spaces as '+'.
    query = urlencode({"sb-hc-token": token(relay)})
    uri = f"ws://{relay.address}/$hc/hc1?sb-hc-action=listen&{query}"
    assert "+" in query
    async with ws_connect(uri) as control:
        assert control.response is not None
        assert control.response.status_code == 101


# -- a listener leaving while a sender's request is on its way -------------------------------


async def test_a_listener_that_leaves_while_the_body_is_read_is_no_listener(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay picks the listener once the head is in; if its control channel closes before
    the body is, the sender hears that no listener is connected, and the relay logs no fault of
    its own."""
    head = (
        f"POST /hc1/upload HTTP/1.1\r\nHost: {relay.address}\r\n"
        f"ServiceBusAuthorization: {token(relay)}\r\nContent-Length: 5\r\n\r\nab"
    ).encode()
    async with json_listener(relay) as control:
        host, port = relay.address.rsplit(":", 1)
        sender = await anyio.connect_tcp(host, int(port))
        await sender.send(head)
        await anyio.sleep(0.2)  # the relay has read the head and picked this listener
        await control.close()
    with anyio.fail_after(10):
        while relay.listener_count("localhost", "hc1"):
            await anyio.sleep(0.02)
    async with sender:
        await sender.send(b"cde")
        answer = b""
        with anyio.fail_after(10):
            while b"\r\n\r\n" not in answer:
                answer += await sender.receive()
    assert answer.startswith(b"HTTP/1.1 502 "), answer
    assert b"No listener is connected" in answer or b"no listener" in answer.lower()
    assert not [record for record in caplog.records if record.levelname == "ERROR"]

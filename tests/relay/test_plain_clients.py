"""Clients nobody here wrote, against the relay: curl, and a listener written with websockets."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from urllib.parse import quote

import anyio
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from hyco_conformance.harness import ROOT_KEY
from hyco_core import create_reject_uri, create_relay_listen_uri, create_relay_send_uri
from hyco_relay.server import Relay
from hyco_transports.anyio import HttpRequest, HttpResponse, Listener

from .conftest import connection_string, token

pytestmark = pytest.mark.anyio

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed (.ci/run installs it)")


async def curl(*arguments: str) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    return await anyio.run_process([CURL, "--silent", "--show-error", *arguments], check=False)


async def reverse(request: HttpRequest) -> HttpResponse:
    body = await request.body()
    return HttpResponse(200, {"X-Method": request.method}, body=body[::-1])


@needs_curl
async def test_curl_http_inline_rendezvous_and_chunked(relay: Relay, tmp_path: object) -> None:
    headers = ["-H", f"ServiceBusAuthorization: {token(relay)}"]
    url = f"http://{relay.address}/hc1/api"
    cs = connection_string(relay)
    async with Listener.from_connection_string(cs, request_handler=reverse):
        small = await curl(*headers, "--data-binary", "hello", url)
        assert small.stdout == b"olleh"
        big = bytes(range(256)) * 4096  # 1 MiB: over a rendezvous
        result = await anyio.run_process(
            [CURL or "curl", "--silent", "--show-error", *headers, "--data-binary", "@-", url],
            input=big,
            check=False,
        )
        assert result.stdout == big[::-1]
        chunked = await anyio.run_process(
            [
                CURL or "curl",
                "-s",
                *headers,
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                "@-",
                url,
            ],
            input=b"chunky" * 20000,
            check=False,
        )
        assert chunked.stdout == (b"chunky" * 20000)[::-1]
        query_token = await curl(
            "-i",
            f"{url}?sb-hc-token={quote(token(relay), safe='')}",
        )
        assert b"200 OK" in query_token.stdout.splitlines()[0]
        assert b"via: 1.1 localhost" in query_token.stdout.lower()
    no_listener = await curl("-i", *headers, url)
    assert no_listener.stdout.startswith(b"HTTP/1.1 502")
    assert b'"code"' in no_listener.stdout


async def test_hand_written_listener_accepts_and_rejects(relay: Relay) -> None:
    """A listener speaking the protocol with nothing but websockets, as the guide describes it."""
    listen = create_relay_listen_uri(relay.address, "hc1", token(relay), secure=False)
    send = create_relay_send_uri(relay.address, "hc1", secure=False)
    headers = {"ServiceBusAuthorization": token(relay)}
    async with ws_connect(listen) as control, anyio.create_task_group() as tasks:

        async def accept_then_reject() -> None:
            first = json.loads(await control.recv())["accept"]
            async with ws_connect(first["address"]) as rendezvous:
                await rendezvous.send("accepted by hand")
                await rendezvous.recv()
            second = json.loads(await control.recv())["accept"]
            with pytest.raises(InvalidStatus) as gone:
                async with ws_connect(create_reject_uri(second["address"], 418, "short and stout")):
                    pass
            assert gone.value.response.status_code == 410

        tasks.start_soon(accept_then_reject)
        async with ws_connect(send, additional_headers=headers) as sender:
            assert await sender.recv() == "accepted by hand"
            await sender.send("thanks")
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(send, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 418
        assert refused.value.response.reason_phrase.startswith("short and stout. TrackingId:")


async def test_relay_logs_carry_no_keys_or_tokens(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = token(relay)
    cs = connection_string(relay)
    async with Listener.from_connection_string(cs):
        async with ws_connect(create_relay_send_uri(relay.address, "hc1", secret, secure=False)):
            pass
        with pytest.raises(InvalidStatus):
            async with ws_connect(
                create_relay_send_uri(relay.address, "nope", secret, secure=False)
            ):
                pass
    text = caplog.text
    assert text  # the relay did log
    signature = secret.split("sig=")[1].split("&")[0]
    for forbidden in (ROOT_KEY, signature, secret):
        assert forbidden not in text

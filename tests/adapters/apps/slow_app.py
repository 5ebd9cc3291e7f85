"""An ASGI app whose answers take a while, for stopping a server while they are under way:
``/slow?SECONDS`` answers after that long, ``/stream?SECONDS`` sends half of its body at once
and the rest after that long, and ``/`` answers at once."""

from __future__ import annotations

import anyio

from hyco_adapters.asgi import Receive, Scope, Send

__all__ = ["app"]

STREAMED = 200_000


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    route = scope["path"].removeprefix(scope["root_path"])
    seconds = float(scope["query_string"] or 0)
    if route == "/stream":
        headers = [(b"content-length", str(STREAMED).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        half = STREAMED // 2
        await send({"type": "http.response.body", "body": b"a" * half, "more_body": True})
        await anyio.sleep(seconds)
        await send({"type": "http.response.body", "body": b"b" * (STREAMED - half)})
        return
    await anyio.sleep(seconds)
    body = b"finished"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})

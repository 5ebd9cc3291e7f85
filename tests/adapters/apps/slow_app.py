"""An ASGI app whose answers take a while, for stopping a server while they are under way:
``/slow?SECONDS`` answers after that long, ``/stream?SECONDS`` sends half of its body at once
and the rest after that long, and ``/`` answers at once; ``wsgi_app`` is the same for WSGI."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio

from hyco_adapters.asgi import Receive, Scope, Send

__all__ = ["app", "wsgi_app"]

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


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., object]) -> Iterator[bytes]:
    """The same routes for a WSGI server."""
    route = environ["PATH_INFO"]
    seconds = float(environ["QUERY_STRING"] or 0)
    if route == "/stream":
        start_response("200 OK", [("Content-Length", str(STREAMED))])
        half = STREAMED // 2
        yield b"a" * half
        time.sleep(seconds)
        yield b"b" * (STREAMED - half)
        return
    time.sleep(seconds)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "8")])
    yield b"finished"

"""``hyco listen``, ``hyco connect`` and ``hyco http``: the relay from a terminal.

``listen`` echoes (or prints) what senders send and answers HTTP; ``connect`` is a WebSocket cat
(lines from stdin out, messages to stdout); ``http`` sends one request, like curl with the relay
token added.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TextIO
from urllib.parse import urlsplit

import anyio
import anyio.from_thread
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream

from hyco_core import HycoError, ListenerObserver, ListenerStatusChanged
from hyco_transports.anyio import (
    AcceptContext,
    HttpRequest,
    HttpResponse,
    Listener,
    WebSocket,
    connect,
)
from hyco_transports.errors import connect_failure
from hyco_transports.httpx import RelayAuth

from .draining import WorkUnderWay, serve_until_cancelled

__all__ = ["run_connect", "run_http", "run_listen"]

_PROGRESS_FROM = 1024 * 1024
_HTTP_TIMEOUT = 120.0


def _describe(message: str | bytes) -> str:
    return message if isinstance(message, str) else f"<binary, {len(message)} bytes>"


async def run_listen(
    connection_string: str,
    *,
    echo: bool,
    out: TextIO,
    on_status: Callable[[ListenerStatusChanged], None] | None = None,
    drain_timeout: float = 10.0,
    observer: ListenerObserver | None = None,
) -> None:
    """Stay online until cancelled, echoing or printing every message and HTTP request;
    ``on_status`` hears each change of the listener's status after it is printed, ``observer``
    what the listener counts.

    Cancelled, it drains: requests arriving get 503, those under way and the open connections
    get ``drain_timeout`` seconds to finish. Raises the relay's reason when the listener ends
    for good (the hybrid connection was deleted).
    """
    work = WorkUnderWay()

    async def on_connection(websocket: WebSocket) -> None:
        with work.one():
            print(f"+ connection (subprotocol {websocket.subprotocol})", file=out, flush=True)
            async for message in websocket:
                print(f"< {_describe(message)}", file=out, flush=True)
                if echo:
                    await websocket.send(message)
            print(f"- connection closed ({websocket.close_code})", file=out, flush=True)

    async def on_request(request: HttpRequest) -> HttpResponse:
        with work.one():
            body = await request.body()
        print(f"< {request.method} {request.target} ({len(body)} bytes)", file=out, flush=True)
        if echo:
            return HttpResponse(200, {"Content-Type": "application/octet-stream"}, body=body)
        summary = {"method": request.method, "path": request.path, "received": len(body)}
        return HttpResponse(200, {"Content-Type": "application/json"}, json.dumps(summary).encode())

    def print_status(event: ListenerStatusChanged) -> None:
        print(f"listener {event.status.value}", file=out, flush=True)
        if on_status is not None:
            on_status(event)

    async def on_accept(context: AcceptContext) -> None:
        context.accept(context.subprotocols[0] if context.subprotocols else None)

    listener = Listener.from_connection_string(
        connection_string,
        accept_handler=on_accept,
        connection_handler=on_connection,
        request_handler=on_request,
        on_status=print_status,
        drain_timeout=drain_timeout,
        observer=observer,
    )
    await serve_until_cancelled(listener, work, drain_timeout=drain_timeout)


async def run_connect(
    connection_string: str,
    *,
    suffix: str,
    query: str,
    headers: list[tuple[str, str]],
    subprotocols: list[str],
    out: TextIO,
) -> int:
    """Send each stdin line as a text message; print what comes back. EOF closes (1000)."""
    async with (
        _stdin_lines() as stdin,
        connect(
            connection_string,
            suffix=suffix,
            query=query,
            headers=headers,
            subprotocols=subprotocols,
        ) as websocket,
    ):
        print(f"connected (subprotocol {websocket.subprotocol})", file=sys.stderr, flush=True)
        closing = False
        async with anyio.create_task_group() as tasks:

            async def show() -> None:
                async for message in websocket:
                    print(_describe(message), file=out, flush=True)
                if not closing:  # the peer closed: stop reading stdin too
                    tasks.cancel_scope.cancel()

            tasks.start_soon(show)
            async for line in stdin:
                await websocket.send(line.rstrip("\n"))
            await anyio.sleep(0.2)  # answers to the last lines
            closing = True
            await websocket.close()
    code = websocket.close_code or 1000
    reason = f" {websocket.close_reason}" if websocket.close_reason else ""
    print(f"closed ({code}{reason})", file=sys.stderr)
    return 0 if code in (1000, 1001) else 1


@asynccontextmanager
async def _stdin_lines() -> AsyncIterator[MemoryObjectReceiveStream[str]]:
    """The lines of stdin, read by a daemon thread of our own. A read blocked in one of anyio's
    worker threads would hold up Ctrl-C until the next Enter, as they are waited for."""
    send, receive = anyio.create_memory_object_stream[str](16)
    async with anyio.from_thread.BlockingPortal() as portal:

        def read() -> None:
            try:
                for line in sys.stdin:
                    portal.call(send.send, line)
                portal.call(send.aclose)
            except RuntimeError:
                pass  # the portal is closed: nobody reads any more

        threading.Thread(target=read, name="hyco-stdin", daemon=True).start()
        try:
            yield receive
        finally:
            await portal.stop(cancel_remaining=True)


def run_http(
    connection_string: str,
    *,
    method: str,
    path: str,
    data: bytes | None,
    headers: list[tuple[str, str]],
    include: bool,
    out: TextIO,
) -> int:
    """Send one request through the relay; 0 when the status is below 400, else 1."""
    auth = RelayAuth.from_connection_string(connection_string)
    target, _, query = path.partition("?")
    url = auth.url(target, query)
    try:
        return _send(url, method, auth, data, headers, include, out)
    except httpx.TransportError as error:
        raise _transport_failure(error, url) from None


def _transport_failure(error: httpx.TransportError, url: str) -> HycoError:
    """The hyco error for a request that never got an answer: the same words as a listener's."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, httpx.TimeoutException):
        cause = TimeoutError()
    return connect_failure(
        cause or error, parts.hostname or "", port, secure=secure, timeout=_HTTP_TIMEOUT
    )


def _send(
    url: str,
    method: str,
    auth: RelayAuth,
    data: bytes | None,
    headers: list[tuple[str, str]],
    include: bool,
    out: TextIO,
) -> int:
    content = _with_progress(data) if data is not None and len(data) >= _PROGRESS_FROM else data
    with (
        httpx.Client(auth=auth, timeout=_HTTP_TIMEOUT) as client,
        client.stream(method, url, content=content, headers=headers) as response,
    ):
        if include:
            print(f"HTTP/1.1 {response.status_code} {response.reason_phrase}", file=out)
            for name, value in response.headers.items():
                print(f"{name}: {value}", file=out)
            print(file=out)
        # The body may go to the binary buffer under the text stream: what the text stream
        # still holds must reach it first, or a pipe sees the body before the status line.
        out.flush()
        received, began = 0, time.perf_counter()
        sink = getattr(out, "buffer", None)
        for piece in response.iter_bytes():
            received += len(piece)
            if sink is not None:
                sink.write(piece)
            else:
                out.write(piece.decode("utf-8", "replace"))
        out.flush()
        elapsed = time.perf_counter() - began
    if received >= _PROGRESS_FROM:
        rate = received / max(elapsed, 1e-9) / _PROGRESS_FROM
        print(f"received {received} bytes in {elapsed:.2f} s ({rate:.1f} MiB/s)", file=sys.stderr)
    return 0 if response.status_code < 400 else 1


def _with_progress(data: bytes) -> Iterator[bytes]:
    """Send ``data`` in pieces, reporting progress and throughput on stderr."""
    began, piece = time.perf_counter(), 256 * 1024
    for start in range(0, len(data), piece):
        yield data[start : start + piece]
        done = min(start + piece, len(data))
        rate = done / max(time.perf_counter() - began, 1e-9) / _PROGRESS_FROM
        print(f"\rsent {done * 100 // len(data)}% ({rate:.1f} MiB/s)", end="", file=sys.stderr)
    print(file=sys.stderr)

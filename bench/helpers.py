"""The processes a benchmark runs besides itself: a relay, listeners and direct servers.

``python -m bench.helpers ROLE [ARGS]`` starts one, prints one JSON line once it is ready
(its address or connection string and its pid) and runs until its standard input closes, so
that a benchmark can measure each process apart (CPU time, RSS) and never leaves one behind.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

__all__ = ["DIRECT_ENTITY", "DONE", "MAX_MESSAGE", "app", "main"]

MAX_MESSAGE = 4 * 1024 * 1024
DIRECT_ENTITY = "hyco"
DONE = "done"

ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


def _ready(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def _until_stdin_closes() -> None:
    await anyio.to_thread.run_sync(sys.stdin.read)


async def _sink(websocket: Any) -> None:
    """Count binary bytes, answer the text ``done`` with the count, echo any other text."""
    received = 0
    async for message in websocket:
        if isinstance(message, bytes):
            received += len(message)
        elif message == DONE:
            await websocket.send(str(received))
            received = 0
        else:
            await websocket.send(message)


async def _relay() -> None:
    from hyco_relay.config import default_config
    from hyco_relay.server import serve_relay

    async with serve_relay(default_config(port=0)) as relay:
        _ready(connection_string=relay.connection_string(), address=relay.address)
        await _until_stdin_closes()


async def _echo_request(request: Any) -> Any:
    from hyco_transports.anyio import HttpResponse

    return HttpResponse(body=await request.body())


async def _listener(connection_string: str) -> None:
    """WebSockets go to :func:`_sink`; HTTP requests get their body back."""
    from hyco_transports.anyio import Listener

    async with Listener.from_connection_string(
        connection_string,
        connection_handler=_sink,
        request_handler=_echo_request,
        max_message_size=MAX_MESSAGE,
        accept_queue=1024,
    ):
        _ready()
        await _until_stdin_closes()


async def _direct_websocket() -> None:
    import websockets.asyncio.server

    async with websockets.asyncio.server.serve(
        _sink, "127.0.0.1", 0, max_size=None, compression=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        _ready(address=f"127.0.0.1:{port}")
        await _until_stdin_closes()


async def _tcp_sink() -> None:
    """Count bytes until the sender shuts its side, then answer with the count."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        received = 0
        async with stream:
            while True:
                try:
                    received += len(await stream.receive(1 << 20))
                except anyio.EndOfStream:
                    break
            await stream.send(str(received).encode())

    async with await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0) as server:
        port = server.extra(anyio.abc.SocketAttribute.local_port)
        _ready(address=f"127.0.0.1:{port}")
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve, handle)
            await _until_stdin_closes()
            tasks.cancel_scope.cancel()


async def app(scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
    """The ASGI app both HTTP runs serve: ``/small`` (GET), ``/echo`` (POST), ``/large``."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"].rsplit("/", 1)[-1]
    if path == "small":
        answer = b"hello\n"
    elif path == "echo":
        answer = body
    else:
        answer = bytes(1024 * 1024)
    headers = [(b"content-type", b"application/octet-stream")]
    headers.append((b"content-length", str(len(answer)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def _asgi_relayed(connection_string: str) -> None:
    from hyco_adapters.asgi import serve

    async with anyio.create_task_group() as tasks:
        await tasks.start(serve, app, connection_string)
        _ready()
        await _until_stdin_closes()
        tasks.cancel_scope.cancel()


async def _asgi_direct() -> None:
    import socket

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        while not server.started:
            await anyio.sleep(0.01)
        _ready(address=f"127.0.0.1:{port}")
        await _until_stdin_closes()
        server.should_exit = True


async def _http_proxy(connection_string: str, upstream: str) -> None:
    from hyco_adapters.http_proxy import expose_http

    async with anyio.create_task_group() as tasks:
        await tasks.start(expose_http, connection_string, upstream)
        _ready()
        await _until_stdin_closes()
        tasks.cancel_scope.cancel()


def main(argv: list[str]) -> None:
    role, *args = argv
    roles: dict[str, Callable[..., Awaitable[None]]] = {
        "relay": _relay,
        "listener": _listener,
        "direct-websocket": _direct_websocket,
        "tcp-sink": _tcp_sink,
        "asgi-relayed": _asgi_relayed,
        "asgi-direct": _asgi_direct,
        "http-proxy": _http_proxy,
    }
    anyio.run(roles[role], *args)


if __name__ == "__main__":
    main(sys.argv[1:])

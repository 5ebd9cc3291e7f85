"""hyco on anyio (asyncio or trio): listeners, senders and HTTP, as thin glue around hyco_core.

Sender::

    async with connect(connection_string) as ws:
        await ws.send("hello")
        print(await ws.recv())

Listener::

    async with Listener.from_connection_string(connection_string) as listener:
        async for ws in listener:
            ...

All protocol decisions are the kernel's; this package opens sockets, runs one reader task per
socket, keeps the kernel's timers and hands out messages with backpressure.

The package's modules: ``sockets`` (opening a channel's socket), ``websocket`` (a relayed
WebSocket and ``connect``) and ``listener`` (``Listener`` and its HTTP request and response).
"""

from __future__ import annotations

from hyco_core import AcceptContext

from .listener import HttpRequest, HttpResponse, Listener
from .websocket import WebSocket, connect

__all__ = [
    "AcceptContext",
    "HttpRequest",
    "HttpResponse",
    "Listener",
    "WebSocket",
    "connect",
]

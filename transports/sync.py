"""hyco with plain blocking sockets and threads: listeners, senders and HTTP, no event loop.

Sender::

    with connect(connection_string) as ws:
        ws.send("hello")
        print(ws.recv())

Listener::

    with Listener.from_connection_string(connection_string) as listener:
        for ws in listener:
            ...

The same names and behaviour as :mod:`hyco_transports.anyio`, blocking. Every socket has a
reader thread; handlers run in a thread each. The implementation is shared with
:mod:`hyco_transports.gevent`; this module binds it to ``threading`` and ``socket``.
"""

from __future__ import annotations

import logging
import math
import select
import socket
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

from ._sync_http import HttpRequest, HttpResponse
from ._sync_io import Lock, RawSocket, Signal, Worker
from ._sync_listener import AcceptContext
from ._sync_listener import Listener as _Listener
from ._sync_websocket import Connector, WebSocket

__all__ = [
    "AcceptContext",
    "HttpRequest",
    "HttpResponse",
    "Listener",
    "WebSocket",
    "connect",
]

T = TypeVar("T")


class _Threads:
    """The blocking transport's backend for OS threads."""

    logger = logging.getLogger("hyco.transports.sync")

    def spawn(self, function: Callable[[], None], name: str) -> Worker:
        # Daemon threads: a handler stuck in user code must not keep the process alive.
        thread = threading.Thread(target=function, name=name, daemon=True)
        thread.start()
        return thread

    def lock(self) -> Lock:
        return threading.Lock()

    def signal(self) -> Signal:
        return threading.Event()

    def connect_tcp(self, host: str, port: int, timeout: float) -> RawSocket:
        sock = socket.create_connection((host, port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Timeouts apply to the whole socket, and one worker writes while another reads:
            # reads wait in wait_readable instead.
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return sock

    def wait_readable(self, sock: RawSocket, timeout: float | None) -> bool:
        if sys.platform == "win32":
            readable, _, _ = select.select([sock.fileno()], [], [], timeout)
            return bool(readable)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(None if timeout is None else math.ceil(timeout * 1000)))

    def run_blocking(self, function: Callable[[], T]) -> T:
        return function()


_BACKEND = _Threads()

connect = Connector(_BACKEND).connect


class Listener(_Listener):
    __doc__ = _Listener.__doc__
    _backend = _BACKEND

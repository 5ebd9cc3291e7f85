"""hyco on gevent: the blocking API of :mod:`hyco_transports.sync`, cooperative in greenlets.

Sender::

    with connect(connection_string) as ws:
        ws.send("hello")
        print(ws.recv())

Listener::

    with Listener.from_connection_string(connection_string) as listener:
        for ws in listener:
            ...

Every socket has a reader greenlet; handlers run in a greenlet each and should not block the
OS thread. Nothing is monkey-patched: sockets come from ``gevent.socket``, TLS runs in memory
over them, and token providers that block (Entra ID) run in gevent's thread pool. The
implementation is shared with :mod:`hyco_transports.sync`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import gevent  # type: ignore[import-untyped]
import gevent.event  # type: ignore[import-untyped]
import gevent.lock  # type: ignore[import-untyped]
import gevent.socket  # type: ignore[import-untyped]

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


class _Greenlet:
    """A greenlet seen as a :class:`~._sync_io.Worker`."""

    def __init__(self, greenlet: Any) -> None:
        self._greenlet = greenlet

    def join(self, timeout: float | None = None) -> None:
        self._greenlet.join(timeout)

    def is_alive(self) -> bool:
        return not self._greenlet.ready()


class _Greenlets:
    """The blocking transport's backend for gevent's greenlets."""

    logger = logging.getLogger("hyco.transports.gevent")

    def spawn(self, function: Callable[[], None], name: str) -> Worker:
        greenlet = gevent.spawn(function)
        greenlet.name = name
        return _Greenlet(greenlet)

    def lock(self) -> Lock:
        semaphore: Lock = gevent.lock.Semaphore()
        return semaphore

    def signal(self) -> Signal:
        event: Signal = gevent.event.Event()
        return event

    def connect_tcp(self, host: str, port: int, timeout: float) -> RawSocket:
        sock: RawSocket = gevent.socket.create_connection((host, port), timeout)
        try:
            gevent_socket: Any = sock
            gevent_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Timeouts apply to the whole socket, and one greenlet writes while another reads:
            # reads wait in wait_readable instead.
            gevent_socket.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return sock

    def wait_readable(self, sock: RawSocket, timeout: float | None) -> bool:
        try:
            gevent.socket.wait_read(sock.fileno(), timeout)
        except TimeoutError:
            return False
        return True

    def run_blocking(self, function: Callable[[], T]) -> T:
        result: T = gevent.get_hub().threadpool.apply(function)
        return result


_BACKEND = _Greenlets()

connect = Connector(_BACKEND).connect


class Listener(_Listener):
    __doc__ = _Listener.__doc__
    _backend = _BACKEND

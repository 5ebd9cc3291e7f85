"""hyco_transports.gevent needs nothing monkey-patched: the shared scenarios (``test_scenarios``)
run on gevent's hub in the test's thread, the relay in a real thread."""

from __future__ import annotations

import socket
import threading


def test_nothing_is_monkey_patched() -> None:
    import gevent.monkey  # type: ignore[import-untyped]

    assert not gevent.monkey.is_anything_patched()
    assert socket.socket.__module__ == "socket"
    assert threading.Lock.__module__ == "_thread"

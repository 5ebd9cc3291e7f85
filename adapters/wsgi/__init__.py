"""WSGI hosting behind a hybrid connection: any PEP 3333 app (Flask, Django, Bottle) serves the
HTTP requests that senders make through Azure Relay, over the blocking transports.

::

    from hyco_adapters.wsgi import load_app, serve

    serve(load_app("myproject.wsgi:application"), connection_string)  # until Ctrl+C or SIGTERM

Routes match as if the app were mounted at ``/{hybrid connection}``: a request to
``https://{namespace}/{entity}/items/7`` has ``SCRIPT_NAME`` ``/{entity}`` and ``PATH_INFO``
``/items/7``, so frameworks route on ``/items/7`` and build URLs that work for the sender.

Concurrency: ``transport="sync"`` answers each request in a thread of its own, ``"gevent"`` in a
greenlet (gevent's sockets, nothing monkey-patched: the app should not block the OS thread). At
most ``workers`` requests are in the app at once, counted until the response body is out;
further requests wait for a slot (backpressure), and one still waiting when the relay's 60 s
deadline passes is answered 503.

What the relay's protocol cannot carry, and what this module does about it (as the ASGI
adapter does):

- Response bodies are framed by the relay, so ``Content-Length``, ``Transfer-Encoding`` and the
  other hop-by-hop headers are dropped. A body the app declares to be at most 64 KiB is
  collected and sent inline; any other body is streamed over a rendezvous as the app's iterable
  produces it. If the app fails once its body has started, the response is cut off (the sender
  sees an incomplete response, never a truncated one passing as whole).
- Only the *last* ``Set-Cookie`` of a response is sent (headers travel as one JSON object).
- The relay drops ``Host``; it is restored as the namespace the sender addressed. Request
  headers whose names hold ``_`` are dropped: in the environ they would be indistinguishable
  from the same name with ``-``.
- The request body's length is known (``CONTENT_LENGTH``) only when the relay sends it whole;
  a streamed body has no ``CONTENT_LENGTH`` and ends where ``wsgi.input`` says so
  (``wsgi.input_terminated`` is set, as Werkzeug expects).
- ``write()`` is supported, but what it is given is sent once the app returns (or when the
  iterable yields next), not before.
- WSGI has no WebSockets: senders' WebSocket connections are refused with 501.

The package's modules: ``interface`` (the WSGI types), ``request`` (``wsgi.input``),
``response`` (one exchange through the app) and ``server`` (the app behind a listener, and
:func:`serve`). What ASGI hosting shares with it is in :mod:`hyco_adapters.hosting`.
"""

from __future__ import annotations

from hyco_adapters.hosting import AppImportError

from .interface import Environ, ExcInfo, StartResponse, Transport, WriteCallable, WSGIApp
from .server import Server, load_app, serve

__all__ = [
    "AppImportError",
    "Environ",
    "ExcInfo",
    "Server",
    "StartResponse",
    "Transport",
    "WSGIApp",
    "WriteCallable",
    "load_app",
    "serve",
]

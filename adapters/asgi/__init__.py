"""ASGI hosting behind a hybrid connection: any ASGI 3 app (FastAPI, Starlette, Django) serves the
HTTP requests and WebSockets that senders make through Azure Relay, with outbound connections only.

::

    from hyco_adapters.asgi import run

    run("myproject.main:app", connection_string)  # or: await serve(app, connection_string)

Routes match as if the app were mounted at ``/{hybrid connection}``: a request to
``https://{namespace}/{entity}/items/7`` has ``root_path`` ``/{entity}`` and ``path``
``/{entity}/items/7``, as the ASGI specification has it (``path`` includes ``root_path``), so
Starlette, FastAPI and Django route on ``/items/7`` and build URLs that work for the sender.

The scopes declare ASGI spec version 2.4: ``send`` raises :class:`ClientDisconnected` (an
``OSError``) once the sender is gone. Before 2.4, Starlette's ``StreamingResponse`` watches for
the disconnect by calling ``receive`` itself, and so takes request body messages away from an
app that streams its request body into its response.

What the relay's protocol cannot carry, and what this package does about it:

- Response bodies are framed by the relay, so ``Content-Length``, ``Transfer-Encoding``,
  ``Connection`` and the other hop-by-hop headers are dropped. A body the app declares to be at
  most 64 KiB is collected and sent inline on the control channel; any other body is streamed over
  a rendezvous as the app produces it, with backpressure.
- Response headers travel as one JSON object: repeated headers are joined with ``", "``. That
  cannot be done for ``Set-Cookie`` (cookie values and ``Expires`` contain commas, and clients
  read one joined header as one cookie), so only the *last* ``Set-Cookie`` is sent, and the
  dropped ones are logged. Put one cookie per response, or carry state in one cookie.
- The relay drops ``Host``; it is restored as the namespace the sender addressed.
- A WebSocket accept cannot carry headers (``websocket.accept`` ``headers`` are ignored), and a
  refusal carries a status and a reason phrase but no body (the ``websocket.http.response``
  extension sets the status; its body is discarded).

The package's modules: ``interface`` (the ASGI types), ``http``, ``websocket`` and ``lifespan``
(one exchange of each kind through the app) and ``server`` (the app behind a listener, and the
entry points). What WSGI hosting shares with it is in :mod:`hyco_adapters.hosting`.
"""

from __future__ import annotations

from hyco_adapters.hosting import AppImportError

from .interface import (
    ASGIApp,
    ClientDisconnected,
    LifespanMode,
    Message,
    Receive,
    Scope,
    Send,
)
from .server import load_app, run, serve, serve_workers

__all__ = [
    "ASGIApp",
    "AppImportError",
    "ClientDisconnected",
    "LifespanMode",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "load_app",
    "run",
    "serve",
    "serve_workers",
]

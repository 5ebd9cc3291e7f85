"""One relayed WebSocket through an ASGI app, from ``websocket.connect`` to the disconnect."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from hyco_core import ConnectionClosed, LocalProtocolError, reason_phrase
from hyco_transports.anyio import AcceptContext, WebSocket

from .interface import ASGIApp, ClientDisconnected, Message, Scope, status_code

__all__ = ["RENDEZVOUS_WAIT", "WebSocketSession"]

logger = logging.getLogger("hyco.adapters.asgi")

# How long an accepted WebSocket may wait for its rendezvous (the transport gives up after 20 s).
RENDEZVOUS_WAIT = 30.0


class WebSocketSession:
    """One relayed WebSocket through the app, from ``websocket.connect`` to the disconnect.

    The app decides while the accept handler waits (``decided``); the WebSocket itself arrives
    later, once the transport has completed the rendezvous (``attach``).
    """

    def __init__(
        self, app: ASGIApp, scope: Scope, context: AcceptContext, on_abandon: Callable[[], object]
    ) -> None:
        self._app = app
        self._scope = scope
        self._offered = context.subprotocols
        self._on_abandon = on_abandon
        self._connect_delivered = False
        self.decided = anyio.Event()
        self.rejection: tuple[int, str] | None = None
        self.subprotocol: str | None = None
        self._denial_status: int | None = None
        self._attached = anyio.Event()
        self._websocket: WebSocket | None = None
        self._closed: tuple[int, str] | None = None
        self.finished = anyio.Event()
        self.failed = False

    async def run(self) -> None:
        try:
            await self._app(self._scope, self.receive, self.send)
        except ClientDisconnected:
            logger.debug("WebSocket %s: the sender went away", self._scope["path"])
        except Exception:
            self.failed = True
            logger.exception("the application failed on WebSocket %s", self._scope["path"])
        else:
            if not self.decided.is_set():
                logger.error(
                    "the application returned without accepting or refusing WebSocket %s",
                    self._scope["path"],
                )
        finally:
            if not self.decided.is_set():
                self.refuse(500, "Internal Server Error")
            self.finished.set()

    def refuse(self, status: int, description: str) -> None:
        self.rejection = (status, description)
        self.decided.set()

    def attach(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._attached.set()

    def abandon(self, code: int, reason: str = "") -> None:
        """The WebSocket will never be usable: the app's next ``receive`` says disconnect."""
        if self._closed is None:
            self._closed = (code, reason)
        self._attached.set()
        self._on_abandon()

    async def shut_down(self) -> None:
        websocket = self._websocket
        if websocket is None:
            self.abandon(1001, "The server is shutting down")
        else:
            await websocket.close(1001, "The server is shutting down")

    async def _connection(self) -> WebSocket | None:
        """The relayed WebSocket, or ``None`` once it is closed or never came."""
        with anyio.move_on_after(RENDEZVOUS_WAIT):
            await self._attached.wait()
        if self._websocket is None:
            self.abandon(1006)
        return self._websocket if self._closed is None else None

    # -- receive -----------------------------------------------------------------------------

    async def receive(self) -> Message:
        if not self._connect_delivered:
            self._connect_delivered = True
            return {"type": "websocket.connect"}
        await self.decided.wait()
        if self.rejection is None:
            websocket = await self._connection()
            if websocket is not None:
                try:
                    data = await websocket.recv()
                except ConnectionClosed as closed:
                    self._closed = (closed.code, closed.reason)
                else:
                    key = "text" if isinstance(data, str) else "bytes"
                    return {"type": "websocket.receive", key: data}
        code, reason = self._closed or (1006, "")
        return {"type": "websocket.disconnect", "code": code, "reason": reason}

    # -- send --------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.send":
            await self._send(message)
        elif kind == "websocket.close":
            await self._close(message)
        elif kind == "websocket.http.response.start":
            if self.decided.is_set() or self._denial_status is not None:
                raise LocalProtocolError("a denial response must come before any decision")
            self._denial_status = status_code(message.get("status"))
        elif kind == "websocket.http.response.body":
            if self._denial_status is None or self.decided.is_set():
                raise LocalProtocolError("websocket.http.response.body without a response start")
            if not message.get("more_body", False):
                # The relay's refusal carries a status and a reason phrase, but no body.
                self.refuse(self._denial_status, reason_phrase(self._denial_status))
        else:
            raise LocalProtocolError(f"{kind!r} is not a message for a WebSocket")

    def _accept(self, message: Message) -> None:
        if self.decided.is_set() or self._denial_status is not None:
            raise LocalProtocolError("websocket.accept after the connection was decided")
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and subprotocol not in self._offered:
            raise LocalProtocolError(f"the sender did not offer subprotocol {subprotocol!r}")
        self.subprotocol = subprotocol
        self.decided.set()

    async def _send(self, message: Message) -> None:
        if not self.decided.is_set() or self.rejection is not None:
            raise LocalProtocolError("websocket.send needs an accepted connection")
        data = message.get("bytes")
        payload = message.get("text") if data is None else bytes(data)
        if not isinstance(payload, (str, bytes)):
            raise LocalProtocolError("websocket.send needs 'bytes' or 'text'")
        websocket = await self._connection()
        if websocket is None:
            raise ClientDisconnected(*(self._closed or (1006, "")))
        try:
            await websocket.send(payload)
        except ConnectionClosed as closed:
            self._closed = (closed.code, closed.reason)
            raise ClientDisconnected(closed.code, closed.reason) from None

    async def _close(self, message: Message) -> None:
        reason = message.get("reason") or ""
        if not self.decided.is_set():
            if self._denial_status is not None:
                raise LocalProtocolError("websocket.close in the middle of a denial response")
            self.refuse(403, reason or "The application closed the WebSocket before accepting it")
            return
        if self.rejection is not None:
            return
        websocket = await self._connection()
        if websocket is None:
            return
        code = message.get("code") or 1000
        await websocket.close(code, reason)
        self._closed = (websocket.close_code or code, websocket.close_reason or reason)

"""A scripted relay: the server end of one WebSocket, driven step by step by a test.

It lets a test play the relay's part exactly (status lines, reason phrases, frame boundaries)
against a kernel channel over a fake wire of byte strings, with no sockets and no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hyco_core._wire import (
    FrameClose,
    FrameEvent,
    FrameMessage,
    Frames,
    FrameViolation,
    HttpServer,
    IncomingRequest,
)
from hyco_core.channel import WebSocketChannel

NONCE = bytes(range(16))


@dataclass
class ScriptedRelay:
    server: HttpServer = field(default_factory=HttpServer)
    request: IncomingRequest | None = None
    frames: Frames | None = None
    received: list[FrameEvent] = field(default_factory=list)

    def feed(self, data: bytes) -> None:
        """Take bytes the channel wrote."""
        if not data:
            return
        if self.frames is None:
            self.server.receive_data(data)
            event = self.server.next_event()
            if isinstance(event, IncomingRequest):
                self.request = event
            return
        self.frames.receive_data(data)
        self.received.extend(self.frames.events())

    def accept(self, subprotocol: str | None = None) -> bytes:
        answer, trailing = self.server.accept_websocket(subprotocol=subprotocol)
        self.frames = Frames(client=False)
        if trailing:
            self.feed(trailing)
        return answer

    def refuse(self, status_code: int, reason: str, body: bytes = b"") -> bytes:
        return self.server.refuse(status_code, reason, body=body)

    def send(self, data: str | bytes, *, final: bool = True) -> bytes:
        assert self.frames is not None
        return self.frames.send_message(data, final=final)

    def ping(self, payload: bytes = b"") -> bytes:
        assert self.frames is not None
        return self.frames.ping(payload)

    def close(self, code: int = 1000, reason: str = "") -> bytes:
        assert self.frames is not None
        return self.frames.close(code, reason)

    def outgoing(self) -> bytes:
        """Automatic answers (pongs) the relay's frame layer queued."""
        assert self.frames is not None
        return self.frames.take_outgoing()

    def messages(self) -> list[str | bytes]:
        """Whole messages received so far, fragments joined; clears them."""
        whole: list[str | bytes] = []
        parts: list[str | bytes] = []
        rest: list[FrameEvent] = []
        for event in self.received:
            if isinstance(event, FrameMessage):
                parts.append(event.data)
                if event.final:
                    whole.append(
                        "".join(p for p in parts if isinstance(p, str))
                        if isinstance(parts[0], str)
                        else b"".join(p for p in parts if isinstance(p, bytes))
                    )
                    parts = []
            else:
                rest.append(event)
        self.received = rest
        return whole

    def closes(self) -> list[FrameClose | FrameViolation]:
        return [e for e in self.received if isinstance(e, FrameClose | FrameViolation)]


def connect(
    channel: WebSocketChannel, relay: ScriptedRelay, *, subprotocol: str | None = None
) -> None:
    """Run the handshake to completion: the relay accepts."""
    relay.feed(channel.data_to_send())
    assert relay.request is not None
    channel.receive_data(relay.accept(subprotocol), 0.0)


def flush(channel: WebSocketChannel, relay: ScriptedRelay) -> None:
    """Deliver what the channel has written to the relay."""
    relay.feed(channel.data_to_send())

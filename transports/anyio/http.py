"""HTTP through an anyio listener: the request a handler reads, the response it returns, and
sending that response over a rendezvous."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field

from anyio.streams.memory import MemoryObjectReceiveStream

from hyco_core import (
    ConnectionLostError,
    HttpRendezvous,
    ListenerObserver,
    ListenerSupervisor,
    LocalProtocolError,
    Response,
    body_pieces,
)
from hyco_transports._listening import RequestInfo
from hyco_transports.pump import ChannelSocket

__all__ = ["HttpRequest", "HttpResponse", "send_response"]

logger = logging.getLogger("hyco.transports.anyio")


@dataclass
class HttpRequest(RequestInfo):
    """An HTTP request a sender made through the relay.

    ``path`` is the part after the hybrid connection's name (``/`` at least); ``deadline`` is the
    monotonic time by which the relay wants the answer (60 s after arrival).
    """

    _pieces: MemoryObjectReceiveStream[bytes] | None = field(default=None, repr=False)
    _complete: bool = field(default=False, repr=False)  # the streamed body's end arrived

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, piece by piece, as it arrives.

        Raises :class:`~hyco_core.ConnectionLostError` when the sender's body was cut off.
        """
        if self._body is not None:
            if self._body:
                yield self._body
            return
        if self._pieces is not None:
            async for piece in self._pieces:
                yield piece
            if not self._complete:
                raise ConnectionLostError("the request body was cut off")

    async def body(self) -> bytes:
        return b"".join([piece async for piece in self.stream()])


@dataclass
class HttpResponse:
    """A handler's answer. ``body`` may be bytes or an async iterable of bytes (streamed)."""

    status: int = 200
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()
    body: bytes | AsyncIterable[bytes] = b""
    reason: str | None = None


async def send_response(
    socket: ChannelSocket,
    channel: HttpRendezvous,
    head: Response,
    body: bytes | AsyncIterable[bytes],
    observer: ListenerObserver | None = None,
) -> bool:
    """Send a response over a rendezvous; ``True`` once it is all out, its body told to
    ``observer`` piece by piece. If the sender is gone or a streamed body fails, the rendezvous
    is closed without the final frame, so the sender sees a cut, never a truncated body that
    looks complete."""
    try:
        channel.send_response(head)
        await socket.flush()
        if not head.body:
            return True
        if isinstance(body, bytes):
            for piece, final in body_pieces(body):
                channel.send_body(piece, final=final)
                await socket.flush()
                if observer is not None and piece:
                    observer.sent("http", len(piece))
            return True
        pieces = aiter(body)
        try:
            async for piece in pieces:
                if piece:
                    channel.send_body(piece, final=False)
                    await socket.flush()
                    if observer is not None:
                        observer.sent("http", len(piece))
        finally:
            # Closed here, not left to the garbage collector: a producer blocked on a full
            # body learns at once that nobody reads it any more.
            close = getattr(pieces, "aclose", None)
            if close is not None:
                await close()
        channel.send_body(b"", final=True)
        await socket.flush()
    except LocalProtocolError:
        logger.info("the HTTP rendezvous closed before the response was sent")
        return False
    except Exception:
        logger.exception("the response body failed; cutting the response")
        await socket.release(*ListenerSupervisor.RESPONSE_FAILED)
        return False
    return True

"""HTTP through a blocking listener: the request a handler reads, the response it returns, and
sending that response over a rendezvous."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from hyco_core import (
    ConnectionLostError,
    HttpRendezvous,
    ListenerObserver,
    ListenerSupervisor,
    LocalProtocolError,
    Response,
    body_pieces,
)

from ._listening import RequestInfo
from ._sync_io import Mailbox, Pump
from ._sync_websocket import closer

__all__ = ["HttpRequest", "HttpResponse", "send_response"]


@dataclass
class HttpRequest(RequestInfo):
    """An HTTP request a sender made through the relay.

    ``path`` is the part after the hybrid connection's name (``/`` at least); ``deadline`` is the
    monotonic time by which the relay wants the answer (60 s after arrival).
    """

    _pieces: Mailbox[bytes] | None = field(default=None, repr=False)

    def stream(self) -> Iterator[bytes]:
        """The body, piece by piece, as it arrives.

        Raises :class:`~hyco_core.ConnectionLostError` when the sender's body was cut off.
        """
        if self._body is not None:
            if self._body:
                yield self._body
            return
        pieces = self._pieces
        if pieces is None:
            return
        while (piece := pieces.get()) is not None:
            yield piece
        if not pieces.complete:
            raise ConnectionLostError("the request body was cut off")

    def body(self) -> bytes:
        return b"".join(self.stream())


@dataclass
class HttpResponse:
    """A handler's answer. ``body`` may be bytes or an iterable of bytes (streamed)."""

    status: int = 200
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()
    body: bytes | Iterable[bytes] = b""
    reason: str | None = None


def send_response(
    rendezvous: Pump[HttpRendezvous],
    head: Response,
    body: bytes | Iterable[bytes],
    logger: logging.Logger,
    observer: ListenerObserver | None = None,
) -> bool:
    """Send a response over a rendezvous; ``True`` once it is all out, its body told to
    ``observer`` piece by piece. If the sender is gone or a streamed body fails, the rendezvous
    is closed without the final frame, so the sender sees a cut, never a truncated body that
    looks complete."""
    try:
        rendezvous.call(lambda channel: channel.send_response(head))
        if not head.body:
            return True
        if isinstance(body, bytes):
            for piece, final in body_pieces(body):
                rendezvous.call(_body_piece(piece, final))
                if observer is not None and piece:
                    observer.sent("http", len(piece))
            return True
        pieces = iter(body)
        try:
            for piece in pieces:
                if piece:
                    rendezvous.call(_body_piece(piece, False))
                    if observer is not None:
                        observer.sent("http", len(piece))
        finally:
            # Closed here, not left to the garbage collector: a producer learns at once that
            # nobody reads it any more.
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        rendezvous.call(_body_piece(b"", True))
    except LocalProtocolError:
        logger.info("the HTTP rendezvous closed before the response was sent")
        return False
    except Exception:
        logger.exception("the response body failed; cutting the response")
        rendezvous.call(closer(*ListenerSupervisor.RESPONSE_FAILED))
        return False
    return True


def _body_piece(piece: bytes, final: bool) -> Callable[[HttpRendezvous], None]:
    def send(channel: HttpRendezvous) -> None:
        channel.send_body(piece, final=final)

    return send

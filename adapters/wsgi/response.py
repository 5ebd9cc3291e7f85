"""One request through a WSGI app: ``start_response``, ``write`` and the app's iterable, turned
into a response the relay carries inline or streamed."""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Callable, Iterable, Iterator

from hyco_adapters.hosting import relayed_response_headers
from hyco_core import INLINE_BODY_LIMIT, LocalProtocolError
from hyco_transports.sync import HttpResponse

from .interface import Environ, ExcInfo, WriteCallable, WSGIApp

__all__ = ["Exchange"]

logger = logging.getLogger("hyco.adapters.wsgi")

_STATUS_LINE = re.compile(r"([1-9][0-9]{2})(?: ([^\r\n\x00]*))?")
_INTERNAL_ERROR_BODY = b"Internal Server Error"


def _parse_status(status: object) -> tuple[int, str]:
    match = _STATUS_LINE.fullmatch(status) if isinstance(status, str) else None
    if match is None:
        raise LocalProtocolError(f"the status must look like '200 OK', not {status!r}")
    return int(match[1]), match[2] or ""


def _response_headers(raw: object) -> tuple[list[tuple[str, str]], int | None]:
    """The app's headers as the relay can carry them, and the Content-Length it declared."""
    if not isinstance(raw, list):
        raise LocalProtocolError("the response headers must be a list of (name, value) tuples")
    for pair in raw:
        if not (
            isinstance(pair, tuple)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], str)
        ):
            raise LocalProtocolError("the response headers must be (str, str) tuples")
    return relayed_response_headers(raw, logger)


class Exchange:
    """One request through the app: ``start_response``, ``write`` and the app's iterable."""

    def __init__(
        self, app: WSGIApp, environ: Environ, description: str, release: Callable[[], None]
    ) -> None:
        self._app = app
        self._environ = environ
        self.description = description
        self._release: Callable[[], None] | None = release
        self._status: tuple[int, str] | None = None
        self._headers: list[tuple[str, str]] = []
        self._length: int | None = None
        self._committed = False
        self._pending: collections.deque[bytes] = collections.deque()
        self._iterable: Iterable[bytes] | None = None
        self._iterator: Iterator[bytes] | None = None

    # -- what the app calls ------------------------------------------------------------------

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None, /
    ) -> WriteCallable:
        error = exc_info[1] if exc_info is not None else None
        if error is not None:
            if self._committed:
                # PEP 3333: too late to change the response, so the app's error goes on.
                raise error
        elif self._status is not None:
            raise LocalProtocolError("start_response was called twice without exc_info")
        self._status = _parse_status(status)
        self._headers, self._length = _response_headers(headers)
        return self._write

    def _write(self, data: bytes) -> None:
        self._pending.append(_checked(data))

    # -- what the transport gets -------------------------------------------------------------

    def respond(self) -> HttpResponse:
        try:
            self._iterable = self._app(self._environ, self.start_response)
            self._iterator = iter(self._iterable)
            first, exhausted = self._prefetch()
        except Exception:
            logger.exception("the application failed on %s", self.description)
            self.close()
            return HttpResponse(
                500, headers=[("Content-Type", "text/plain")], body=_INTERNAL_ERROR_BODY
            )
        except BaseException:
            self.close()
            raise
        assert self._status is not None
        status, reason = self._status
        self._committed = True
        if exhausted or self._bodyless():
            self.close()
            body: bytes | Iterable[bytes] = b"" if self._bodyless() else first
        else:
            body = _ResponseBody(self, first)
        return HttpResponse(status, headers=self._headers, body=body, reason=reason or None)

    def _bodyless(self) -> bool:
        assert self._status is not None
        status = self._status[0]
        return self._environ["REQUEST_METHOD"] == "HEAD" or status in (204, 304) or status < 200

    def _prefetch(self) -> tuple[bytes, bool]:
        """Read up to the first non-empty piece (or, for a small declared body, all of it):
        until then the app may still change its status with ``exc_info``."""
        collected = bytearray()
        exhausted = False
        while self._status is None or not self._bodyless():
            piece = self.next_piece()
            if piece is None:
                exhausted = True
                break
            if not piece:
                continue
            if self._status is None:
                raise LocalProtocolError("the application produced a body before start_response")
            collected += piece
            small = self._length is not None and self._length <= INLINE_BODY_LIMIT
            if not small or len(collected) > INLINE_BODY_LIMIT:
                break
        if self._status is None:
            raise LocalProtocolError("the application returned without calling start_response")
        return bytes(collected), exhausted

    def next_piece(self) -> bytes | None:
        """The next piece of the body (``write()`` output first); ``None`` at its end."""
        assert self._iterator is not None
        while not self._pending:
            piece = next(self._iterator, None)
            if piece is None:
                return None
            self._pending.append(_checked(piece))
        return self._pending.popleft()

    def close(self) -> None:
        """Close the app's iterable (PEP 3333 wants it always closed) and free the slot."""
        release, self._release = self._release, None
        if release is None:
            return
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        except Exception:
            logger.exception("closing the application's response failed on %s", self.description)
        finally:
            release()


def _checked(piece: object) -> bytes:
    if not isinstance(piece, bytes):
        raise LocalProtocolError(f"a WSGI body piece must be bytes, not {type(piece).__name__}")
    return piece


class _ResponseBody:
    """A streamed response body: pulls the app's iterable as the transport sends.

    Whoever drops it unfinished (the sender went away, the rendezvous never opened) closes the
    app's iterable with it.
    """

    def __init__(self, exchange: Exchange, first: bytes) -> None:
        self._exchange = exchange
        self._first = first

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            return first
        try:
            while (piece := self._exchange.next_piece()) == b"":
                pass
        except Exception as error:
            # The transport logs the traceback as it cuts the response.
            logger.error(
                "the application failed on %s after its response started (%s): cutting it",
                self._exchange.description,
                type(error).__name__,
            )
            self._exchange.close()
            raise
        if piece is None:
            self._exchange.close()
            raise StopIteration
        return piece

    def close(self) -> None:
        """The transport is done with the body: close the app's iterable with it."""
        self._exchange.close()

    def __del__(self) -> None:
        self.close()

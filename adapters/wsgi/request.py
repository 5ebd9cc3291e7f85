"""The request as PEP 3333 has it: ``wsgi.input`` and native strings."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["Input", "native_string"]


class Input:
    """``wsgi.input``: the request body as a binary file, pulled from the relay as it is read."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buffer = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        """Append the next piece to the buffer; ``False`` once the body has ended."""
        if not self._eof:
            piece = next(self._pieces, None)
            if piece is None:
                self._eof = True
            else:
                self._buffer += piece
        return not self._eof

    def _take(self, size: int) -> bytes:
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                length = end + 1
                break
            if 0 <= limit <= len(self._buffer) or not self._fill():
                length = len(self._buffer)
                break
        return self._take(length if limit < 0 else min(length, limit))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


def native_string(raw: bytes) -> str:
    """Bytes as a PEP 3333 "native string": each byte one latin-1 character."""
    return raw.decode("latin-1")

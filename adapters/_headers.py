"""How a hosted app's response headers travel through the relay, for the ASGI and WSGI adapters.

The protocol's header object cannot carry framing headers (the relay frames the body) or a name
twice: hop-by-hop headers are dropped, and of several ``Set-Cookie`` headers only the last is
sent (joining them would break every cookie whose ``Expires`` holds a comma).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from hyco_core import HOP_BY_HOP_HEADERS, Headers, LocalProtocolError

__all__ = ["relayed_response_headers"]

_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")
_DIGITS = re.compile(r"[0-9]+")


def relayed_response_headers(
    headers: Iterable[tuple[str, str]], logger: logging.Logger
) -> tuple[list[tuple[str, str]], int | None]:
    """The headers as the relay can carry them, and the Content-Length the app declared."""
    pairs: list[tuple[str, str]] = []
    cookies: list[tuple[str, str]] = []
    length: int | None = None
    for name, value in headers:
        if _FORBIDDEN_IN_VALUE.search(value):
            raise LocalProtocolError(f"the value of response header {name!r} has CR, LF or NUL")
        lowered = name.lower()
        if lowered == "content-length":
            length = int(value) if _DIGITS.fullmatch(value.strip()) else None
        if lowered in HOP_BY_HOP_HEADERS:
            continue
        (cookies if lowered == "set-cookie" else pairs).append((name, value))
    if len(cookies) > 1:
        logger.warning(
            "a relayed response carries one Set-Cookie header: %d were set, the last one is sent",
            len(cookies),
        )
    pairs.extend(cookies[-1:])
    try:
        Headers(pairs)
    except ValueError as error:
        raise LocalProtocolError(f"invalid response header: {error}") from None
    return pairs, length

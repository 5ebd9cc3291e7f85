"""The WSGI interface (PEP 3333) as this package uses it: the types of apps and their callables."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal, Protocol

__all__ = ["Environ", "ExcInfo", "StartResponse", "Transport", "WSGIApp", "WriteCallable"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
WriteCallable = Callable[[bytes], object]
Transport = Literal["sync", "gevent"]


class StartResponse(Protocol):
    """PEP 3333's ``start_response``."""

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = ..., /
    ) -> WriteCallable: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

"""What the listeners of every transport share beside the kernel's supervisor: what a listener
holds, the request a handler sees, the head of the answer it gives, telling the program of
status changes, and what its observer hears of HTTP exchanges."""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from hyco_core import (
    Backoff,
    ConnectionClosed,
    Headers,
    HycoError,
    KeepAlive,
    ListenerObserver,
    ListenerStatus,
    ListenerStatusChanged,
    ListenerSupervisor,
    RemoteEndpoint,
    Request,
    Response,
    response_head,
    split_request_target,
    tracking_id_from,
)

from .auth import RelayEndpoint

__all__ = [
    "AnyResponse",
    "ListenerBase",
    "RequestInfo",
    "head_of",
    "payload_size",
    "tell_status",
]

_CLOSED = (1001, "the listener is closed")

R = TypeVar("R", bound="RequestInfo")
L = TypeVar("L", bound="ListenerBase")


class ListenerBase:
    """What every transport's listener holds: its endpoint, the supervisor that decides for it,
    and the options its I/O uses."""

    def __init__(
        self,
        endpoint: RelayEndpoint,
        *,
        serves_http: bool,
        on_status: Callable[[ListenerStatusChanged], object] | None,
        ssl_context: ssl.SSLContext | None,
        backoff: Backoff | None,
        keepalive: KeepAlive | None,
        tracking_id: str | None,
        max_message_size: int,
        observer: ListenerObserver | None,
    ) -> None:
        self.endpoint = endpoint
        self._on_status = on_status
        # None unless given: the sockets check it on every message, which costs nothing then.
        self._observer = observer
        self._ssl_context = ssl_context
        self._max_message_size = max_message_size
        self._supervisor = ListenerSupervisor(
            namespace=endpoint.namespace,
            path=endpoint.path,
            secure=endpoint.secure,
            tracking_id=tracking_id or tracking_id_from(os.urandom(16)),
            serves_http=serves_http,
            keepalive=keepalive,
            backoff=backoff,
            observer=observer,
        )
        self.tracking_id = self._supervisor.tracking_id

    @classmethod
    def from_connection_string(
        cls: type[L], connection_string: str, *, path: str | None = None, **options: Any
    ) -> L:
        endpoint = RelayEndpoint.from_connection_string(connection_string, path=path)
        return cls(endpoint, **options)

    def __repr__(self) -> str:
        return f"<Listener {self.endpoint.namespace}/{self.endpoint.path} {self.status.value}>"

    @property
    def status(self) -> ListenerStatus:
        return self._supervisor.status

    @property
    def last_error(self) -> HycoError | None:
        return self._supervisor.last_error

    def _request_arrived(self, body: bytes | None) -> None:
        """Tell the observer of a request body that came whole."""
        if self._observer is not None and body:
            self._observer.received("http", len(body))

    def _body_piece_arrived(self, piece: bytes) -> None:
        if self._observer is not None and piece:
            self._observer.received("http", len(piece))

    def _answered(self, request: RequestInfo, head: Response) -> None:
        """Tell the observer that ``request`` is answered in full with ``head``'s status."""
        if self._observer is not None:
            took = time.monotonic() - request.arrived_at
            self._observer.request_answered(head.status_code, took)

    def _closed_error(self) -> ConnectionClosed:
        """What waiting for a connection raises once the listener is closed: 1001, caused by
        what closed it when that was a failure."""
        error = ConnectionClosed(*_CLOSED)
        error.__cause__ = self.last_error
        return error


@dataclass
class RequestInfo:
    """An HTTP request a sender made through the relay.

    ``path`` is the part after the hybrid connection's name (``/`` at least); ``deadline`` is the
    monotonic time by which the relay wants the answer (60 s after ``arrived_at``).
    """

    method: str
    target: str
    path: str
    query: str
    headers: Headers
    remote_endpoint: RemoteEndpoint | None
    deadline: float
    _body: bytes | None = field(default=None, repr=False)
    arrived_at: float = field(default=0.0, repr=False)

    @classmethod
    def arrived(cls: type[R], request: Request, *, entity: str, body: bytes | None) -> R:
        """The request as it arrives now for the hybrid connection ``entity`` (``body``
        ``None``: it is streamed over the rendezvous)."""
        path, query = split_request_target(request.request_target, entity)
        now = time.monotonic()
        return cls(
            method=request.method or "GET",
            target=request.request_target or "/",
            path=path,
            query=query,
            headers=request.request_headers,
            remote_endpoint=request.remote_endpoint,
            deadline=ListenerSupervisor.request_deadline(now),
            _body=body,
            arrived_at=now,
        )

    def time_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


class AnyResponse(Protocol):
    """A handler's answer, whatever the transport (its body bytes or an iterable)."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str] | Iterable[tuple[str, str]]: ...
    @property
    def body(self) -> object: ...
    @property
    def reason(self) -> str | None: ...


def head_of(request: Request, response: AnyResponse) -> Response:
    """The ``response`` message that answers ``request``; an empty ``bytes`` body is none."""
    has_body = not (isinstance(response.body, bytes) and not response.body)
    return response_head(
        request,
        status=response.status,
        headers=response.headers,
        reason=response.reason,
        has_body=has_body,
    )


def payload_size(data: str | bytes) -> int:
    """The bytes a message carries on the wire: text counts as its UTF-8."""
    return len(data) if isinstance(data, bytes) else len(data.encode())


def tell_status(
    changes: Iterable[ListenerStatusChanged],
    on_status: Callable[[ListenerStatusChanged], object] | None,
    *,
    path: str,
    logger: logging.Logger,
) -> None:
    """Log each status change of the listener on ``path`` and hand it to ``on_status``, whose
    failure is logged: it must not take the listener down."""
    for change in changes:
        logger.info("listener %s: %s", path, change.status.value)
        if on_status is not None:
            try:
                on_status(change)
            except Exception:
                logger.exception("the on_status handler failed")

"""What a listener decides about a sender and how it phrases an HTTP answer, for every transport.

Transports hand an :class:`AcceptContext` to the application's accept handler and turn its
decision into :func:`~hyco_core.channel.accept_connection` or
:func:`~hyco_core.channel.reject_connection`; they build the ``response`` message of an HTTP
answer with :func:`response_head` and show the application the request's path with
:func:`split_request_target`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import LocalProtocolError
from .messages import HOP_BY_HOP_HEADERS, Accept, Headers, RemoteEndpoint, Request, Response
from .messages import reason_phrase as standard_reason
from .names import ascii_lower
from .uris import parse_relay_url

__all__ = ["AcceptContext", "offered_subprotocols", "response_head", "split_request_target"]


def offered_subprotocols(accept: Accept) -> tuple[str, ...]:
    """The subprotocols the sender offered, in its order of preference."""
    offered = accept.connect_headers.get("sec-websocket-protocol", "")
    return tuple(item.strip() for item in offered.split(",") if item.strip())


class AcceptContext:
    """A sender waiting to be accepted: look at it, then :meth:`accept` or :meth:`reject`.

    An accept handler that returns without deciding accepts; one that raises rejects with 502.
    """

    def __init__(self, accept: Accept) -> None:
        self.accept_message = accept
        url = parse_relay_url(accept.address)
        self.headers: Headers = accept.connect_headers
        self.suffix = url.suffix
        self.query = url.query
        self.remote_endpoint: RemoteEndpoint | None = accept.remote_endpoint
        self.subprotocols = offered_subprotocols(accept)
        self.subprotocol: str | None = None
        self.rejection: tuple[int, str] | None = None

    def __repr__(self) -> str:
        return f"<AcceptContext suffix={self.suffix!r} query={self.query!r}>"

    def accept(self, subprotocol: str | None = None) -> None:
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise LocalProtocolError(f"the sender did not offer subprotocol {subprotocol!r}")
        self.subprotocol = subprotocol
        self.rejection = None

    def reject(self, status_code: int = 400, description: str = "Rejected by user code") -> None:
        self.rejection = (status_code, description)


def response_head(
    request: Request,
    *,
    status: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    reason: str | None = None,
    has_body: bool,
) -> Response:
    """The ``response`` message answering ``request``; hop-by-hop headers are left out."""
    return Response(
        request_id=request.id or "",
        status_code=status,
        status_description=reason or standard_reason(status),
        response_headers=Headers(headers).without(HOP_BY_HOP_HEADERS),
        body=has_body,
    )


def split_request_target(target: str | None, entity: str) -> tuple[str, str]:
    """A request's path after the hybrid connection's name (``/`` at least), and its query."""
    path, _, query = (target or "/").partition("?")
    prefix = "/" + entity
    folded_path, folded_prefix = ascii_lower(path), ascii_lower(prefix)
    if folded_path == folded_prefix or folded_path.startswith(folded_prefix + "/"):
        path = path[len(prefix) :]
    return path or "/", query

"""Refusals: the errors the relay answers clients with, how it answers them, and how it logs
what clients sent.

Every part of the relay refuses a client by raising :class:`Refusal`; the connection's task
answers it in one place (:func:`refuse`), so every refusal looks the same on the wire.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextlib import suppress
from datetime import datetime, timezone

import anyio
import anyio.abc

from hyco_core import (
    InvalidUrlError,
    LocalProtocolError,
    RemoteProtocolError,
    reason_phrase,
    redact_url,
)
from hyco_core.service import (
    HttpServer,
    IncomingRequest,
    InvalidRequestError,
    ListenerResponseError,
    normalize_namespace,
)
from hyco_transports.pump import READ_SIZE, STREAM_ERRORS

from .config import EntityConfig, NamespaceConfig
from .hooks import ConnectionInfo, Hook, Refused

logger = logging.getLogger("hyco.relay")

_DRAIN_TIME = 1.0
_DRAIN_LIMIT = 1024 * 1024
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LOGGED_LIMIT = 200


class Refusal(Exception):
    """A request the relay answers with an error status (and, for HTTP senders, a JSON body)."""

    def __init__(self, status: int, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or reason_phrase(status).replace(" ", "")


class Abort(Exception):
    """A response already under way cannot be completed: drop the connection."""


async def write(stream: anyio.abc.ByteStream, data: bytes, timeout: float) -> None:
    """Write a short answer; a peer leaving it unread past ``timeout`` makes this raise
    :class:`TimeoutError`, which ends its connection as the peer's doing."""
    with anyio.fail_after(timeout):
        await stream.send(data)


async def send_json(
    stream: anyio.abc.ByteStream, http: HttpServer, status: int, document: object, timeout: float
) -> None:
    body = json.dumps(document, indent=2).encode()
    headers = [("Content-Type", "application/json")]
    await write(
        stream,
        http.start_response(status, reason_phrase(status), headers, content_length=len(body))
        + http.send_body(body)
        + http.end_response(),
        timeout,
    )


async def refuse(
    stream: anyio.abc.ByteStream,
    http: HttpServer,
    request: IncomingRequest | None,
    refusal: Refusal,
    timeout: float,
) -> None:
    """Answer with ``refusal``'s status and a reason carrying a tracking id (and, to HTTP
    senders, as JSON); ``request`` is ``None`` for a request that could not be read."""
    host = request.headers.get("host", "") if request is not None else ""
    websocket = request is not None and request.is_websocket
    logger.info(
        "refused %s: %s %s",
        "a malformed request"
        if request is None
        else f"{loggable(request.method)} {loggable(request.target)}",
        refusal.status,
        loggable(refusal.message),
    )
    try:
        await write(stream, refusal_answer(http, refusal, host, websocket=websocket), timeout)
    except (LocalProtocolError, TimeoutError, *STREAM_ERRORS):
        # A response already under way cannot be replaced: the connection just ends.
        return
    await _drain(stream)


def refusal_answer(http: HttpServer, refusal: Refusal, host: str, *, websocket: bool) -> bytes:
    """The whole answer to a refused client: the status, a reason phrase carrying a tracking
    id (as the service's do) and, but for WebSocket handshakes and a delivered rejection, the
    same as a JSON error body."""
    try:
        tracker = normalize_namespace(host)
    except InvalidUrlError:
        tracker = "-"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    message = refusal.message.rstrip(". ")
    reason = f"{message}. TrackingId:{uuid.uuid4()}, SystemTracker:{tracker}, Timestamp:{stamp}"
    reason = reason.replace("\r", " ").replace("\n", " ")
    body = b""
    headers: list[tuple[str, str]] = []
    if not websocket and refusal.status != 410:
        body = json.dumps({"error": {"code": refusal.code, "message": reason}}).encode()
        headers.append(("Content-Type", "application/json"))
    return http.refuse(refusal.status, reason, headers=headers, body=body)


async def _drain(stream: anyio.abc.ByteStream) -> None:
    """Read and drop what a refused client still sends, for a moment, before its connection
    closes: closing with bytes unread resets the connection, and the client would lose the
    answer it was just sent (a body the relay never read, the rest of a head too large)."""
    with anyio.move_on_after(_DRAIN_TIME), suppress(*STREAM_ERRORS):
        drained = 0
        while drained < _DRAIN_LIMIT:
            drained += len(await stream.receive(READ_SIZE))


async def run_hook(hook: Hook | None, info: ConnectionInfo) -> None:
    """Run a hook: :class:`Refused` becomes that refusal, any other failure a 500."""
    if hook is None:
        return
    try:
        await hook(info)
    except Refused as refused:
        raise Refusal(refused.status, refused.description) from None
    except Exception:
        logger.exception("the %s hook failed", info.kind)
        raise Refusal(500, "The relay failed to process the request") from None


def listeners_fault(
    error: ListenerResponseError, namespace: NamespaceConfig, entity: EntityConfig | None
) -> Refusal:
    """The 502 a sender gets for a listener's answer that HTTP cannot carry; the listener's
    mistake is logged once, as a warning (it is not the relay's)."""
    where = namespace.name if entity is None else f"{namespace.name}/{entity.name}"
    logger.warning("a listener on %s answered what cannot be passed on: %s", where, error)
    return Refusal(502, f"The listener's answer cannot be passed on: {error}", code="BadGateway")


def unreadable(error: InvalidRequestError) -> Refusal:
    message = str(error)
    return Refusal(error.status_code, message[:1].upper() + message[1:])


def ended_by_peer(error: BaseException) -> bool:
    """Whether ``error`` only says that a peer went away, stalled or broke HTTP (also when a
    task group gathered several such errors)."""
    gathered = getattr(error, "exceptions", None)  # an exception group, on every Python
    if isinstance(gathered, tuple):
        return all(ended_by_peer(inner) for inner in gathered)
    return isinstance(error, (Abort, RemoteProtocolError, TimeoutError, *STREAM_ERRORS))


def loggable(text: str) -> str:
    """Client-supplied text fit for one log line: tokens redacted, control characters (which
    could forge log lines) escaped, cut short."""
    shown = _UNPRINTABLE.sub(lambda match: f"\\x{ord(match[0]):02x}", redact_url(text))
    return shown if len(shown) <= _LOGGED_LIMIT else shown[:_LOGGED_LIMIT] + "..."

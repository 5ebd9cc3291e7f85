"""The one error hierarchy of hyco, and the mapping from relay statuses and close codes to it.

Every error says what happened and what to do about it, carries what a program needs to react
(HTTP status, WebSocket close code, the relay's tracking id) and never contains a secret: relay
reason phrases are kept, tokens and keys are not.
"""

from __future__ import annotations

import re

__all__ = [
    "AuthorizationError",
    "CertificateError",
    "ConnectionClosed",
    "ConnectionLostError",
    "ConnectionStringError",
    "EndpointNotFoundError",
    "HycoError",
    "InvalidRequestError",
    "InvalidTokenError",
    "InvalidUrlError",
    "ListenerResponseError",
    "ListenerUnavailableError",
    "LocalProtocolError",
    "QuotaExceededError",
    "RejectedError",
    "RelayError",
    "RelayServerError",
    "RelayTimeoutError",
    "RemoteProtocolError",
    "TooManyRequestsError",
    "error_from_close",
    "error_from_status",
    "tracking_id_of",
]

_TRACKING_ID = re.compile(r"TrackingId:\s*([^,;\s]+)", re.IGNORECASE)


def tracking_id_of(text: str | None) -> str | None:
    """Return the ``TrackingId:...`` value the relay puts in reason phrases, if any."""
    if not text:
        return None
    match = _TRACKING_ID.search(text)
    return match.group(1) if match else None


class HycoError(Exception):
    """Root of every error hyco raises on purpose."""


class LocalProtocolError(HycoError):
    """The program used the API in a way the protocol does not allow; raised at once."""


class RemoteProtocolError(HycoError):
    """The peer broke the protocol. The kernel closes with ``close_code`` and reports this."""

    def __init__(self, message: str, *, close_code: int = 1002) -> None:
        super().__init__(message)
        self.close_code = close_code


class InvalidRequestError(RemoteProtocolError):
    """An HTTP client sent a request head a server must refuse; answer ``status_code``, then
    close the connection.

    400: malformed, folded (obs-fold) or ambiguously framed (``Content-Length`` with
    ``Transfer-Encoding``); 414: request target too long; 431: head too large; 501: a transfer
    coding other than chunked. The message never quotes the request.
    """

    def __init__(self, message: str, *, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class ListenerResponseError(RemoteProtocolError):
    """A listener answered with something a relay cannot pass on to the HTTP sender: a status
    that is not final (1xx), or text with control characters. A relay answers the sender 502.
    """


class ConnectionClosed(HycoError):
    """The WebSocket is closed; ``code`` and ``reason`` are its close frame's (1006: dropped).

    When the close means a failure, the failure is the ``__cause__``.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        detail = f": {reason}" if reason else ""
        super().__init__(f"the connection is closed (code {code}{detail})")

    @property
    def ends_normally(self) -> bool:
        """Whether it ends a stream of messages as planned (1000 or 1001, no failure behind
        it): iterating over a WebSocket then stops quietly instead of raising."""
        return self.code in (1000, 1001) and self.__cause__ is None


class CertificateError(HycoError):
    """The relay's TLS certificate is not trusted (or not for this host name)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"the relay's TLS certificate was refused: {detail}. Trust the relay's CA (pass an "
            "ssl_context that trusts it), or connect to the name the certificate was issued for."
        )


class InvalidTokenError(HycoError, ValueError):
    """A string is not a well-formed shared access signature token."""


class ConnectionStringError(HycoError, ValueError):
    """A connection string is malformed or inconsistent. The message never contains the key."""


class InvalidUrlError(HycoError, ValueError):
    """A URL is not a relay address of the expected form."""


class RelayError(HycoError):
    """The relay refused a handshake, or ended a channel, with a status or close code.

    ``reason`` is the relay's own text (it usually ends in a tracking id, which support needs
    to trace the request); ``tracking_id`` is extracted from it when present.
    """

    advice = "See the relay's reason above."
    speaker = "the relay"

    def __init__(
        self,
        reason: str,
        *,
        status_code: int | None = None,
        close_code: int | None = None,
        tracking_id: str | None = None,
    ) -> None:
        self.reason = reason
        self.status_code = status_code
        self.close_code = close_code
        self.tracking_id = tracking_id if tracking_id is not None else tracking_id_of(reason)
        super().__init__(self._describe())

    def _describe(self) -> str:
        if self.status_code is not None:
            what = f"{self.speaker} answered {self.status_code}"
        elif self.close_code is not None:
            what = f"{self.speaker} closed the connection with code {self.close_code}"
        else:
            what = f"{self.speaker} ended the connection"
        parts = [f"{what}: {self.reason or 'no reason given'}.", self.advice]
        if self.tracking_id and self.tracking_id not in self.reason:
            parts.append(f"TrackingId: {self.tracking_id}")
        return " ".join(parts)


class AuthorizationError(RelayError):
    """The token is missing, malformed, expired, wrongly signed, or lacks the right needed."""

    advice = (
        "Check the key name and key, that the token's resource is this namespace or entity, "
        "that it is not expired, and that the rule grants Listen (listeners) or Send (senders)."
    )


class QuotaExceededError(RelayError):
    """A relay limit was reached, such as 25 listeners on one hybrid connection."""

    advice = "Close another listener or spread the load over more hybrid connections."


class EndpointNotFoundError(RelayError):
    """The namespace or hybrid connection does not exist, or is disabled."""

    advice = "Check the namespace host and the hybrid connection's name (EntityPath)."


class TooManyRequestsError(RelayError):
    """The relay (or the listener) is limiting how fast, or how often at once, this client may
    connect (429)."""

    advice = "Too many connections from this address: wait a moment, then retry more slowly."


class ListenerUnavailableError(EndpointNotFoundError):
    """The hybrid connection exists, but no listener (or none allowed) is connected to it."""

    advice = "Start a listener on this hybrid connection, then connect again."


class RejectedError(RelayError):
    """The listener rejected the connection; ``status_code`` and ``reason`` are its own."""

    advice = (
        "The listening application refused this connection: check what it expects "
        "(path, query, headers, subprotocol)."
    )
    speaker = "the listener"


class RelayServerError(RelayError):
    """The relay failed (5xx, close 1011); the operation may succeed if retried."""

    advice = "This is usually transient: retry with backoff."


class RelayTimeoutError(RelayError, TimeoutError):
    """Something did not happen in time: a handshake, a pong, a response from the listener."""

    advice = "The peer or the network is slow or gone; retry, or raise the timeout."


class ConnectionLostError(RelayError):
    """The connection ended without the close the protocol expects, or with an unmapped code."""

    advice = "Reconnect; listeners do so by themselves."


_AUTHORIZATION_WORDS = ("token", "claim", "unauthori", "grant", "signature")
"""A 403 whose reason names none of these is the listener's own refusal, not the relay's verdict
on the token: relays word their authorization refusals in such terms ("Unauthorized access.
'Send' claim(s) are required", "The token's rule does not grant Send here")."""


def error_from_status(
    status_code: int, reason: str, *, tracking_id: str | None = None
) -> RelayError:
    """Map the status of a failed WebSocket or HTTP handshake to the matching error."""
    lowered = reason.lower()
    error_type: type[RelayError] = RejectedError
    if status_code == 401:
        error_type = AuthorizationError
    elif status_code == 403:
        if "quota" in lowered or "limit" in lowered:
            error_type = QuotaExceededError
        elif any(word in lowered for word in _AUTHORIZATION_WORDS):
            error_type = AuthorizationError
    elif status_code == 429:
        error_type = TooManyRequestsError
    elif status_code == 404:
        error_type = ListenerUnavailableError if "listener" in lowered else EndpointNotFoundError
    elif status_code in (408, 504):
        error_type = RelayTimeoutError
    elif status_code in (500, 502, 503):
        error_type = RelayServerError
    return error_type(reason, status_code=status_code, tracking_id=tracking_id)


def error_from_close(code: int, reason: str) -> RelayError | None:
    """Map a close code received from the relay to an error, or ``None`` for a normal close."""
    if code == 1000:
        return None
    if code == 1008:
        return AuthorizationError(reason or "token expired or invalid", close_code=code)
    if code == 1011:
        return RelayServerError(reason or "internal relay error", close_code=code)
    return ConnectionLostError(reason or _CLOSE_MEANINGS.get(code, "closed"), close_code=code)


_CLOSE_MEANINGS = {
    1001: "going away (relay maintenance, restart, or the hybrid connection was removed)",
    1002: "protocol error",
    1005: "closed without a status code",
    1006: "the connection dropped without a close handshake",
}

"""The error hierarchy: mapping of statuses and close codes, messages, tracking ids."""

from __future__ import annotations

import pytest

from hyco_core.errors import (
    AuthorizationError,
    ConnectionLostError,
    EndpointNotFoundError,
    HycoError,
    ListenerUnavailableError,
    QuotaExceededError,
    RejectedError,
    RelayError,
    RelayServerError,
    RelayTimeoutError,
    TooManyRequestsError,
    error_from_close,
    error_from_status,
    tracking_id_of,
)

REASON = (
    "Endpoint does not exist. TrackingId:a1b2c3d4-0000-4000-8000-000000000001_G7, "
    "SystemTracker:contoso.servicebus.windows.net:hc1, Timestamp:2026-11-22T10:00:00"
)


def test_tracking_id_is_extracted_from_the_reason_phrase() -> None:
    assert tracking_id_of(REASON) == "a1b2c3d4-0000-4000-8000-000000000001_G7"
    assert tracking_id_of("trackingid: x1;") == "x1"
    assert tracking_id_of("nothing here") is None
    assert tracking_id_of(None) is None


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (401, "Unauthorized", AuthorizationError),
        (403, "Unauthorized access. 'Send' claim(s) are required", AuthorizationError),
        (403, "The token's rule does not grant Send here", AuthorizationError),
        (403, "Forbidden", RejectedError),
        (403, "The application closed the WebSocket before accepting it", RejectedError),
        (429, "Too many connections from this address", TooManyRequestsError),
        (403, "Listener quota exceeded", QuotaExceededError),
        (403, "limit of 25 listeners reached", QuotaExceededError),
        (404, REASON, EndpointNotFoundError),
        (404, "No listener connected", ListenerUnavailableError),
        (408, "Request timeout", RelayTimeoutError),
        (504, "Gateway timeout", RelayTimeoutError),
        (500, "Internal", RelayServerError),
        (502, "Bad gateway", RelayServerError),
        (503, "Unavailable", RelayServerError),
        (400, "Rejected by user code", RejectedError),
        (418, "Teapot", RejectedError),
    ],
)
def test_statuses_map_to_typed_errors(status: int, reason: str, expected: type[RelayError]) -> None:
    error = error_from_status(status, reason)
    assert type(error) is expected
    assert isinstance(error, HycoError)
    assert error.status_code == status
    assert error.reason == reason
    assert str(status) in str(error)
    assert error.advice in str(error)


def test_explicit_tracking_id_is_shown_when_the_reason_lacks_it() -> None:
    error = error_from_status(404, "Not found", tracking_id="T-9")
    assert error.tracking_id == "T-9"
    assert str(error).endswith("TrackingId: T-9")
    inline = error_from_status(404, REASON)
    assert str(inline).count("a1b2c3d4") == 1


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1008, AuthorizationError),
        (1011, RelayServerError),
        (1001, ConnectionLostError),
        (1006, ConnectionLostError),
        (4000, ConnectionLostError),
    ],
)
def test_close_codes_map_to_typed_errors(code: int, expected: type[RelayError]) -> None:
    error = error_from_close(code, "")
    assert type(error) is expected
    assert error is not None
    assert error.close_code == code
    assert f"code {code}" in str(error)
    assert "no reason given" not in str(error)


def test_normal_close_is_no_error() -> None:
    assert error_from_close(1000, "bye") is None


def test_error_without_status_or_code() -> None:
    assert "ended the connection: gone." in str(ConnectionLostError("gone"))
    assert "no reason given" in str(RelayError(""))


def test_certificate_error_says_what_to_do() -> None:
    from hyco_core.errors import CertificateError

    message = str(CertificateError("self-signed certificate"))
    assert "self-signed certificate" in message
    assert "Trust the relay's CA" in message


def test_connection_closed_states_code_and_reason() -> None:
    from hyco_core.errors import ConnectionClosed

    assert str(ConnectionClosed(4001, "bye")) == "the connection is closed (code 4001: bye)"
    closed = ConnectionClosed(1006)
    assert (closed.code, closed.reason, str(closed)) == (
        1006,
        "",
        "the connection is closed (code 1006)",
    )

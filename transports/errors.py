"""What a failure to reach the relay means: one table, shared by every transport, from the I/O
error of opening a TCP (and TLS) connection to the hyco error a user can act on."""

from __future__ import annotations

import os
import socket
import ssl

from hyco_core import CertificateError, ConnectionLostError, HycoError, RelayTimeoutError

__all__ = ["RelayUnreachableError", "connect_failure"]

_NOT_TLS = (
    "the endpoint may not speak TLS: a local relay started without --tls needs "
    "UseDevelopmentEmulator=true in the connection string"
)


class RelayUnreachableError(ConnectionLostError):
    """No connection to the relay could be opened: nothing refused it, so the cause is the
    address, the network, or TLS, and the message says which."""

    def __init__(self, host: str, port: int, detail: str, advice: str) -> None:
        super().__init__(detail)
        self.host = host
        self.port = port
        self._message = f"could not connect to {host}:{port} ({detail}): {advice}"

    def __str__(self) -> str:
        return self._message


def connect_failure(
    error: BaseException, host: str, port: int, *, secure: bool, timeout: float
) -> HycoError:
    """The error to raise for ``error``, met while opening a connection to ``host:port``.

    Anything but an ``OSError`` met on a secure connection is the TLS layer finding no TLS on
    the other side (anyio reports that as an end of stream).
    """
    cause = error.__cause__
    if isinstance(error, OSError) and error.errno is None and isinstance(cause, OSError):
        # anyio's "All connection attempts failed" carries the last attempt's error as its cause.
        error = cause
    if isinstance(error, TimeoutError):
        return RelayTimeoutError(f"could not connect to {host}:{port} in {timeout:g} s")
    if isinstance(error, ssl.SSLCertVerificationError):
        return CertificateError(f"{host}:{port}: {error.verify_message}")
    if isinstance(error, ssl.SSLError) or (secure and not isinstance(error, OSError)):
        detail = f"the TLS handshake failed: {getattr(error, 'reason', None) or 'no TLS answer'}"
        return RelayUnreachableError(host, port, detail, _NOT_TLS)
    if isinstance(error, socket.gaierror):
        return RelayUnreachableError(
            host, port, "no such host", "check the namespace in the connection string's Endpoint"
        )
    if isinstance(error, OSError):
        # The standard text of the errno: asyncio's own strerror repeats the address.
        detail = os.strerror(error.errno) if error.errno else str(error) or type(error).__name__
        return RelayUnreachableError(
            host, port, detail.lower(), "is the relay running, and is this its address and port?"
        )
    return ConnectionLostError(f"could not connect to {host}:{port}: {error!r}")

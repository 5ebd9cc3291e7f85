"""How the ``hyco`` subcommands word the failures a user causes and can fix: one line each."""

from __future__ import annotations

import errno
import os

__all__ = ["bind_failure"]


def bind_failure(host: str, port: int, error: OSError, option: str) -> str:
    """Why ``host:port`` could not be bound, and the option that picks another address."""
    if error.errno == errno.EADDRINUSE:
        return (
            f"{host}:{port} is already in use: stop what uses it, or pass another {option} "
            "(port 0 picks a free one)"
        )
    reason = os.strerror(error.errno) if error.errno else str(error)
    return f"cannot listen on {host}:{port} ({reason.lower()}): pass another {option}"

"""How the ``hyco`` subcommands end: the failures a user causes and can fix, worded in one line
each, and the exit code after a signal."""

from __future__ import annotations

import errno
import os
import signal
import sys

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["alone", "bind_failure", "exit_code_after"]


def alone(error: BaseException) -> BaseException:
    """The one error inside task groups' wrappers: what a user needs to hear about."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def exit_code_after(stopped_by: signal.Signals | None) -> int:
    """130 after Ctrl-C, as in every command; 0 after a service manager's SIGTERM."""
    return 130 if stopped_by == signal.SIGINT else 0


def bind_failure(host: str, port: int, error: OSError, option: str) -> str:
    """Why ``host:port`` could not be bound, and the option that picks another address."""
    if error.errno == errno.EADDRINUSE:
        return (
            f"{host}:{port} is already in use: stop what uses it, or pass another {option} "
            "(port 0 picks a free one)"
        )
    # A name that does not resolve has a negative errno, which os.strerror cannot word.
    reason = error.strerror or (os.strerror(error.errno) if error.errno else str(error))
    return f"cannot listen on {host}:{port} ({reason.lower()}): pass another {option}"

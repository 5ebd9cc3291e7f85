"""What every long-running command (``relay``, ``serve``, ``expose``, ``forward``, ``listen``,
``agent``) runs beside its job, around the one :class:`~hyco_adapters.vitals.Vitals` its parts
report to."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from .systemd import tell_service_manager
from .vitals import Vitals

__all__ = ["running"]


@contextmanager
def running(arguments: argparse.Namespace) -> Iterator[Vitals]:
    """The command's vitals, for the duration of the block; the service manager hears them."""
    vitals = Vitals()
    with tell_service_manager(vitals):
        yield vitals

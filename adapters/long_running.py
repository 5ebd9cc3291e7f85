"""What every long-running command (``relay``, ``serve``, ``expose``, ``forward``, ``listen``,
``agent``) runs beside its job, around the one :class:`~hyco_adapters.vitals.Vitals` its parts
report to: the metrics server, when ``--metrics-addr`` asks for one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hyco_core import ListenerObserver

from .systemd import tell_service_manager
from .vitals import Vitals

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["Running", "running"]


@dataclass(frozen=True)
class Running:
    """A command while it runs: the vitals its parts report to, and its metrics (``None``
    without ``--metrics-addr``)."""

    vitals: Vitals
    metrics: Metrics | None

    def observe(self, hybrid_connection: str) -> ListenerObserver | None:
        """The observer for the listener on ``hybrid_connection``: none without metrics, so
        that a listener then counts nothing at all."""
        return None if self.metrics is None else self.metrics.observe(hybrid_connection)


@contextmanager
def running(arguments: argparse.Namespace) -> Iterator[Running]:
    """The command's vitals (and metrics), for the duration of the block; the service manager
    hears them."""
    vitals = Vitals()
    with ExitStack() as extras:
        extras.enter_context(tell_service_manager(vitals))
        metrics = _serve_metrics(arguments, vitals, extras)
        yield Running(vitals, metrics)


def _serve_metrics(
    arguments: argparse.Namespace, vitals: Vitals, extras: ExitStack
) -> Metrics | None:
    address = getattr(arguments, "metrics_addr", None)
    if address is None:
        return None
    from .metrics import Metrics, serve_metrics

    metrics = Metrics(vitals)
    host, port = extras.enter_context(serve_metrics(metrics, *address))
    shown = f"[{host}]" if ":" in host else host
    print(
        f"hyco {arguments.command}: metrics on http://{shown}:{port}/metrics "
        "(and /healthz, /readyz)",
        file=sys.stderr,
        flush=True,
    )
    return metrics

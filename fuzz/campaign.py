"""A fuzzing campaign: hypothesis drives one target for a number of inputs or minutes.

Hypothesis stops at the first failure it finds and shrinks it to a small input; the campaign
records it, then carries on with fresh batches in which that crash (same exception type, same
place) no longer counts as a failure, so one bug does not hide the next.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed

from .corpus import seeds
from .inputs import input_strategy
from .targets import Target, check

__all__ = ["Failure", "Report", "fuzz_target", "replay_seeds", "signature"]

_BATCH = 400
_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Failure:
    """A crash: where it happened, what it said and the smallest input found to cause it."""

    signature: str
    error: str
    data: bytes


@dataclass
class Report:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)


def signature(error: BaseException) -> str:
    """The exception type and the innermost place in hyco (or the fuzz targets) it came
    through: one bug, one signature, however deep a library recursed below it."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [frame for frame in frames if _is_ours(frame.filename)]
    where = ""
    if ours or frames:
        last = (ours or frames)[-1]
        path = Path(last.filename)
        where = f" at {path.parent.name}/{path.name}:{last.lineno}"
    return f"{type(error).__name__}{where}"


def _is_ours(filename: str) -> bool:
    path = Path(filename).resolve()
    return path.is_relative_to(_ROOT) and "site-packages" not in path.parts


def replay_seeds(target: Target) -> Report:
    """Run every seed file of ``target`` once."""
    report = Report(target.name)
    started = time.monotonic()
    for data in seeds(target.name):
        report.inputs += 1
        try:
            check(target, data)
        except Exception as error:
            report.failures.append(Failure(signature(error), _describe(error), data))
    report.seconds = time.monotonic() - started
    return report


def fuzz_target(
    target: Target,
    *,
    examples: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
) -> Report:
    """Fuzz ``target`` with ``examples`` generated inputs, or for ``seconds``, or both limits."""
    if examples is None and seconds is None:
        raise ValueError("give a number of examples, a time limit, or both")
    strategy = input_strategy(target.name, seeds(target.name))
    report = Report(target.name)
    known: set[str] = set()
    last: list[tuple[bytes, BaseException]] = []

    def test(data: bytes) -> None:
        report.inputs += 1
        try:
            check(target, data)
        except Exception as error:
            if signature(error) in known:
                return
            last[:] = [(data, error)]
            raise

    started = time.monotonic()
    generated = 0
    batch = 0
    while True:
        if examples is not None and generated >= examples:
            break
        if seconds is not None and time.monotonic() - started >= seconds:
            break
        size = _BATCH if examples is None else min(_BATCH, examples - generated)
        run = settings(
            max_examples=size,
            deadline=None,
            database=None,
            derandomize=False,
            report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate, Phase.shrink],
            verbosity=Verbosity.quiet,
        )(given(strategy)(test))
        try:
            hypothesis_seed(seed * 1_000_003 + batch)(run)()
        except Exception:
            if not last:
                raise
            data, error = last[0]
            found = Failure(signature(error), _describe(error), data)
            known.add(found.signature)
            report.failures.append(found)
            last.clear()
        generated += size
        batch += 1
    report.seconds = time.monotonic() - started
    return report


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 300 else text[:300] + "..."

"""Figures (median, min and max of the rounds) and target verdicts, as the report holds them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

__all__ = ["Figure", "Results", "Target"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Figure:
    """One measured quantity over several rounds; ``higher_is_better`` orients ratios."""

    name: str
    unit: str
    samples: tuple[float, ...]
    higher_is_better: bool = True

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.samples),
            "max": max(self.samples),
            "rounds": len(self.samples),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """``figure`` against ``baseline``: met when their ratio is at least (or at most) ``ratio``.

    Without a baseline, ``ratio`` is an absolute bound on the figure's median.
    """

    figure: str
    baseline: str | None
    ratio: float
    at_least: bool
    text: str

    def judge(self, figures: dict[str, Figure]) -> dict[str, object]:
        verdict: dict[str, object] = {"target": self.text, "figure": self.figure}
        measured = figures.get(self.figure)
        base = figures.get(self.baseline) if self.baseline else None
        if measured is None or (self.baseline is not None and base is None):
            verdict |= {"verdict": "not measured", "value": None}
            return verdict
        value = measured.median / base.median if base is not None else measured.median
        met = value >= self.ratio if self.at_least else value <= self.ratio
        verdict |= {
            "baseline": self.baseline,
            "value": value,
            "verdict": "met" if met else "missed",
        }
        return verdict


@dataclass(kw_only=True, slots=True)
class Results:
    """Everything one run measured, plus notes on what it skipped and why."""

    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(
        self, name: str, unit: str, samples: list[float], *, higher_is_better: bool = True
    ) -> None:
        self.figures[name] = Figure(
            name=name, unit=unit, samples=tuple(samples), higher_is_better=higher_is_better
        )

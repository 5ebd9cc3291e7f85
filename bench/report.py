"""The targets a run is judged against, the stdout table, and the PNG chart of target margins."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from .stats import Results, Target

__all__ = ["TARGETS", "print_table", "write_chart"]


def _targets() -> list[Target]:
    targets = []
    for size in ("64 KiB", "1 MiB"):
        relayed = f"throughput {size}: relayed (hyco anyio)"
        targets += [
            Target(
                figure=relayed,
                baseline=f"throughput {size}: direct WebSocket (hyco anyio)",
                ratio=0.5,
                at_least=True,
                text=f"relayed throughput {size} >= 0.5x direct WebSocket",
            ),
            Target(
                figure=relayed,
                baseline=f"throughput {size}: hyco-ws via relay",
                ratio=1.0,
                at_least=True,
                text=f"relayed throughput {size} >= 1.0x hyco-ws via relay",
            ),
        ]
    relayed = "connect p50: relayed (hyco anyio)"
    targets += [
        Target(
            figure=relayed,
            baseline="connect p50: direct WebSocket (hyco anyio)",
            ratio=3.0,
            at_least=False,
            text="connect p50 <= 3x direct WebSocket",
        ),
        Target(
            figure=relayed,
            baseline="connect p50: hyco-ws via relay",
            ratio=1.0,
            at_least=False,
            text="connect p50 <= hyco-ws via relay",
        ),
    ]
    for case in ("GET small", "POST 64 KiB", "GET 1 MiB"):
        targets.append(
            Target(
                figure=f"HTTP {case}: relayed (hyco ASGI)",
                baseline=f"HTTP {case}: direct (uvicorn)",
                ratio=0.4,
                at_least=True,
                text=f"relayed HTTP {case} req/s >= 0.4x direct uvicorn",
            )
        )
    for case in ("GET small", "POST 64 KiB", "GET 1 MiB"):
        targets.append(
            Target(
                figure=f"proxy {case}: through the relay (expose_http)",
                baseline=f"proxy {case}: direct (uvicorn)",
                ratio=0.4,
                at_least=True,
                text=f"proxied HTTP {case} req/s >= 0.4x the upstream asked directly",
            )
        )
    targets += [
        Target(
            figure="idle: relay RSS per connection",
            baseline=None,
            ratio=30.0,
            at_least=False,
            text="relay RSS per idle connection <= 30 KiB",
        ),
        Target(
            figure="idle: listener RSS per connection",
            baseline=None,
            ratio=20.0,
            at_least=False,
            text="listener RSS per idle connection <= 20 KiB",
        ),
        Target(
            figure="idle: connections still echoing",
            baseline=None,
            ratio=100.0,
            at_least=True,
            text="every idle connection still echoes",
        ),
        Target(
            figure="kernel: SAS create/s",
            baseline="hyco-ws: createRelayToken/s",
            ratio=1.0,
            at_least=True,
            text="SAS creation faster than hyco-ws createRelayToken",
        ),
    ]
    return targets


TARGETS = _targets()


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def print_table(results: Results, verdicts: list[dict[str, object]], *, out: TextIO) -> None:
    width = max((len(name) for name in results.figures), default=10)
    print(f"{'figure':<{width}}  {'median':>12}  {'min':>12}  {'max':>12}  unit", file=out)
    for figure in results.figures.values():
        low, high = min(figure.samples), max(figure.samples)
        print(
            f"{figure.name:<{width}}  {_number(figure.median):>12}  {_number(low):>12}  "
            f"{_number(high):>12}  {figure.unit}",
            file=out,
        )
    print(file=out)
    for verdict in verdicts:
        value = verdict["value"]
        shown = f"{value:.2f}" if isinstance(value, float) else "-"
        unit = "x" if verdict.get("baseline") else ""
        print(f"{verdict['verdict']:>12}  {shown + unit:>9}  {verdict['target']}", file=out)
    for note in results.notes:
        print(f"note: {note}", file=out)


def _margin(verdict: dict[str, object], target: Target) -> float | None:
    """How far past its threshold a figure is: above 1 means the target is met."""
    value = verdict["value"]
    if not isinstance(value, float):
        return None
    if target.at_least:
        return value / target.ratio
    return target.ratio / value if value > 0 else float("inf")


def write_chart(verdicts: list[dict[str, object]], results: Results, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        results.notes.append("matplotlib missing: no chart")
        return None
    rows = [
        (str(verdict["target"]), margin)
        for verdict, target in zip(verdicts, TARGETS, strict=True)
        if (margin := _margin(verdict, target)) is not None
    ]
    figure, axes = plt.subplots(figsize=(10, 0.4 * len(rows) + 1.5))
    labels = [label for label, _ in rows]
    margins = [min(margin, 10.0) for _, margin in rows]
    colours = ["tab:green" if margin >= 1 else "tab:red" for margin in margins]
    axes.barh(labels, margins, color=colours)
    axes.axvline(1.0, color="black", linewidth=1)
    axes.invert_yaxis()
    axes.set_xlabel("margin against the target (>= 1 is met; capped at 10)")
    axes.set_title("hyco bench: medians, ratios against baselines from the same run")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

"""``python -m bench``: run the measurements, print a table, write JSON and a chart.

The default run takes about a minute on 2 cores (67 s); ``--quick`` about 10 s; ``--full``
uses the large sizes (1,000 connects, 10,000 idle connections). Sections run in priority order
and can be chosen with ``--only``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .http import measure_http
from .idle import measure_idle
from .kernel import measure_kernel
from .proxy import measure_proxy
from .report import TARGETS, print_table, write_chart
from .stats import Results
from .wire import MIB, measure_connects, measure_throughput

__all__ = ["Sizes", "main"]

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("kernel", "throughput", "connect", "http", "proxy", "idle")


@dataclass(frozen=True, kw_only=True, slots=True)
class Sizes:
    """How much each section does; the presets are ``--quick``, default and ``--full``."""

    rounds: int
    kernel_count: int
    volume_mib: int
    connects: int
    requests: int
    idle: int


PRESETS = {
    "quick": Sizes(rounds=3, kernel_count=5000, volume_mib=16, connects=60, requests=60, idle=200),
    "default": Sizes(
        rounds=5, kernel_count=20000, volume_mib=64, connects=300, requests=300, idle=1000
    ),
    "full": Sizes(
        rounds=5, kernel_count=50000, volume_mib=128, connects=1000, requests=1000, idle=10000
    ),
}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="about 10 s")
    preset.add_argument("--full", action="store_true", help="1,000 connects, 10,000 idle")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run just these sections")
    for name in ("rounds", "kernel-count", "volume-mib", "connects", "requests", "idle"):
        parser.add_argument(f"--{name}", type=int, help="override the preset")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="a directory for latest.json and latest.png, or a .json file (the chart beside it)",
    )
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    return parser.parse_args(argv)


def _sizes(arguments: argparse.Namespace) -> Sizes:
    base = PRESETS["quick" if arguments.quick else "full" if arguments.full else "default"]
    chosen = {
        name: getattr(arguments, name) if getattr(arguments, name) is not None else value
        for name, value in (
            ("rounds", base.rounds),
            ("kernel_count", base.kernel_count),
            ("volume_mib", base.volume_mib),
            ("connects", base.connects),
            ("requests", base.requests),
            ("idle", base.idle),
        )
    }
    return Sizes(**chosen)


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    sizes = _sizes(arguments)
    sections = arguments.only or list(SECTIONS)
    results = Results()
    runs: dict[str, Callable[[], None]] = {
        "kernel": lambda: measure_kernel(results, rounds=sizes.rounds, count=sizes.kernel_count),
        "throughput": lambda: measure_throughput(
            results, rounds=sizes.rounds, volume=sizes.volume_mib * MIB
        ),
        "connect": lambda: measure_connects(results, rounds=sizes.rounds, count=sizes.connects),
        "http": lambda: measure_http(results, rounds=sizes.rounds, count=sizes.requests),
        "proxy": lambda: measure_proxy(results, rounds=sizes.rounds, count=sizes.requests),
        "idle": lambda: measure_idle(results, count=sizes.idle),
    }
    started = time.perf_counter()
    failed = []
    for section in SECTIONS:
        if section in sections:
            print(f"-- {section}", file=sys.stderr, flush=True)
            try:
                runs[section]()
            except Exception as error:  # one broken section must not lose the others
                failed.append(section)
                results.notes.append(f"section {section} failed: {type(error).__name__}: {error}")
    verdicts = [target.judge(results.figures) for target in TARGETS]
    print_table(results, verdicts, out=sys.stdout)
    # --out is a directory for latest.json and latest.png, or the JSON file itself.
    path = arguments.out if arguments.out.suffix == ".json" else arguments.out / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "version": 1,
        "sizes": asdict(sizes),
        "sections": sections,
        "seconds": time.perf_counter() - started,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "figures": [figure.as_json() for figure in results.figures.values()],
        "targets": verdicts,
        "failed_sections": failed,
        "notes": results.notes,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path}")
    if not arguments.no_chart:
        chart = write_chart(verdicts, results, path.with_suffix(".png"))
        print(f"wrote {chart}" if chart else "matplotlib missing: no chart")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

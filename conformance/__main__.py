"""``python -m hyco_conformance``: run the conformance suite against one or more transports.

    python -m hyco_conformance --transport anyio --transport sync
    python -m hyco_conformance --transport mypackage.driver:MyDriver --scenario echo_sizes
    python -m hyco_conformance --list

Exit status 0 when every scenario passed, 1 when one failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from hyco_transports.extras import missing_dependency

try:
    from .drivers import BUILTIN_DRIVERS, driver_for
    from .runner import Result, run_suite, select
    from .scenarios import SCENARIOS
except ModuleNotFoundError as missing:
    # The reference clients and the relay are optional dependencies of the distribution.
    advice = missing_dependency(missing)
    if advice is None:
        raise
    sys.exit(f"python -m hyco_conformance: {advice}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hyco_conformance",
        description="Run the hyco conformance scenarios against a local relay.",
    )
    parser.add_argument(
        "--transport",
        action="append",
        default=[],
        help=f"{', '.join(BUILTIN_DRIVERS)}, or module:Factory for your own driver "
        "(repeat for several; default: anyio)",
    )
    parser.add_argument("--scenario", action="append", default=[], help="run only these")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the transports")
    arguments = parser.parse_args(argv)
    if arguments.list:
        for scenario in SCENARIOS:
            print(f"{scenario.name:38} {scenario.description}")
        return 0
    logging.basicConfig(level=logging.INFO if arguments.verbose else logging.CRITICAL)
    try:
        scenarios = select(arguments.scenario)
        drivers = [driver_for(name) for name in arguments.transport or ["anyio"]]
    except (ValueError, TypeError, ImportError, AttributeError) as error:
        print(f"python -m hyco_conformance: {error}", file=sys.stderr)
        return 2
    results: list[Result] = []
    for driver in drivers:
        print(f"== {driver.name}: {len(scenarios)} scenarios")
        results += run_suite(driver, scenarios, on_result=_print)
    failed = [result for result in results if not result.passed]
    print(f"== {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _print(result: Result) -> None:
    verdict = "PASS" if result.passed else "FAIL"
    line = f"{verdict}  {result.driver:11} {result.scenario:38} {result.seconds:6.2f} s"
    if result.reason:
        line += f"\n      {result.reason}"
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())

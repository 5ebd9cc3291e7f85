"""``python -m fuzz``: fuzz hyco's parsers and print what was tried and what crashed.

Usage::

    python -m fuzz                          # every target, 2,000 generated inputs each
    python -m fuzz sas uris --examples 50000
    python -m fuzz --minutes 3              # every target, 3 minutes each
    python -m fuzz http_server --atheris --minutes 10   # coverage-guided, when atheris is installed
    python -m fuzz --list                   # the targets
    python -m fuzz --make-corpus            # write fuzz/corpus/ again

Every seed file is replayed first. The exit status is 1 when anything crashed; each crash is
printed with the smallest input found, and written to ``--crashes DIR`` when given.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .campaign import Failure, Report, fuzz_target, replay_seeds, signature
from .corpus import seed_files, write
from .targets import TARGETS, Target, check


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description="Fuzz hyco's parsers.")
    parser.add_argument("targets", nargs="*", metavar="target", help="default: every target")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--examples", type=int, help="generated inputs per target (2000)")
    budget.add_argument("--minutes", type=float, help="minutes per target")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (0)")
    parser.add_argument("--crashes", type=Path, help="write crashing inputs to this folder")
    parser.add_argument("--atheris", action="store_true", help="coverage-guided, with atheris")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--make-corpus", action="store_true", help="write fuzz/corpus/ and exit")
    args = parser.parse_args(argv)

    if args.list:
        for target in TARGETS.values():
            print(f"{target.name:18} {len(seed_files(target.name)):3} seeds  {target.summary}")
        return 0
    if args.make_corpus:
        print(f"wrote {write()} seed files")
        return 0
    unknown = [name for name in args.targets if name not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    chosen = [TARGETS[name] for name in args.targets or TARGETS]
    if args.atheris:
        return _run_atheris(chosen, args.minutes or 1.0, args.crashes)

    examples = args.examples if args.examples is not None or args.minutes else 2000
    seconds = args.minutes * 60 if args.minutes else None
    crashed = False
    total_inputs = 0
    for target in chosen:
        seeded = replay_seeds(target)
        report = fuzz_target(target, examples=examples, seconds=seconds, seed=args.seed)
        report.failures[:0] = seeded.failures
        report.inputs += seeded.inputs
        total_inputs += report.inputs
        _print_report(report, args.crashes)
        crashed = crashed or bool(report.failures)
    print(f"total: {total_inputs:,} inputs, {'crashes found' if crashed else 'no crash'}")
    return 1 if crashed else 0


def _print_report(report: Report, crashes: Path | None) -> None:
    rate = report.inputs / report.seconds if report.seconds else 0.0
    print(
        f"{report.target}: {report.inputs:,} inputs in {report.seconds:.1f} s "
        f"({rate:,.0f}/s), {len(report.failures)} failure(s)",
        flush=True,
    )
    for failure in report.failures:
        print(f"  {failure.signature}\n    {failure.error}\n    input: {failure.data[:400]!r}")
        if crashes is not None:
            _save(crashes / report.target, failure)


def _save(folder: Path, failure: Failure) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(failure.data).hexdigest()[:16]
    (folder / f"crash-{digest}").write_bytes(failure.data)


# -- atheris -----------------------------------------------------------------------------------


def _run_atheris(targets: list[Target], minutes: float, crashes: Path | None) -> int:
    """Each target in a child process: libFuzzer exits the process when it stops."""
    if importlib.util.find_spec("atheris") is None:
        print("atheris is not installed (pip install atheris); run without --atheris")
        return 2
    crashed = False
    for target in targets:
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{target.name}-") as work:
            seconds = str(max(1, round(minutes * 60)))
            command = [sys.executable, "-m", "fuzz._atheris", target.name, seconds, work]
            completed = subprocess.run(  # noqa: S603 - our own interpreter and module
                command, capture_output=True, text=True, check=False, env=_child_environment()
            )
            runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", completed.stderr)
            artifacts = sorted(Path(work).glob("crash-*"))
            print(
                f"{target.name}: {int(runs[-1]) if runs else 0:,} inputs (atheris), "
                f"{len(artifacts)} failure(s)",
                flush=True,
            )
            for artifact in artifacts:
                crashed = True
                data = artifact.read_bytes()
                try:
                    check(target, data)
                except Exception as error:
                    print(f"  {signature(error)}\n    {type(error).__name__}: {error}")
                print(f"    input: {data[:400]!r}")
                if crashes is not None:
                    (crashes / target.name).mkdir(parents=True, exist_ok=True)
                    shutil.copy(artifact, crashes / target.name / artifact.name)
            if completed.returncode not in (0, 1) and not artifacts:
                print(completed.stderr[-2000:])
                crashed = True
    return 1 if crashed else 0


def _child_environment() -> dict[str, str]:
    environment = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join(
        part for part in (root, environment.get("PYTHONPATH")) if part
    )
    return environment


if __name__ == "__main__":
    sys.exit(main())

"""One target under atheris (libFuzzer, coverage-guided), in a process of its own.

``python -m fuzz --atheris`` starts ``python -m fuzz._atheris TARGET SECONDS WORKDIR`` for each
target: libFuzzer ends the process when it stops, and only modules imported after
instrumentation starts get coverage feedback, so the targets are imported here, inside it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

#: What gets coverage feedback: hyco's parsers and the libraries under them.
INSTRUMENTED = ["hyco_core", "hyco_relay", "h11", "wsproto", "tomllib", "json", "urllib"]


def main() -> None:
    name, seconds, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    with atheris.instrument_imports(include=INSTRUMENTED):
        from fuzz.corpus import seed_files
        from fuzz.targets import TARGETS, check
    target = TARGETS[name]
    corpus = work / "corpus"
    corpus.mkdir(exist_ok=True)
    for path in seed_files(name):
        shutil.copy(path, corpus / path.name)
    arguments = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={max(1, seconds)}",
        f"-artifact_prefix={work}{os.sep}",
        "-max_len=8192",
        "-print_final_stats=1",
    ]
    atheris.Setup(arguments, lambda data: check(target, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""The Python versions CI runs the suite on are the ones the package declares."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).parents[1]


def test_check_runs_every_version_the_classifiers_and_requires_python_name() -> None:
    spec = importlib.util.spec_from_file_location("tools_check", ROOT / "tools" / "check.py")
    assert spec is not None
    assert spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = check  # its dataclasses look their module up there
    spec.loader.exec_module(check)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    prefix = "Programming Language :: Python :: "
    declared = [c[len(prefix) :] for c in project["classifiers"] if c[len(prefix) :][:2] == "3."]
    assert tuple(declared) == check.SUPPORTED_VERSIONS
    assert project["requires-python"] == f">={check.SUPPORTED_VERSIONS[0]}"

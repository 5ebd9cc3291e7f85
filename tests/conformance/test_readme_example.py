"""The driver in conformance/README.md works as written: a vendor can follow it."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from hyco_conformance.driver import Driver
from hyco_conformance.runner import run_suite, select
from hyco_conformance.scenarios import SCENARIOS

README = Path(__file__).parents[2] / "conformance" / "README.md"


def example_module() -> ModuleType:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), re.DOTALL)
    (source,) = [block for block in blocks if "class MyDriver" in block]
    module = ModuleType("readme_driver")
    exec(compile(source, str(README), "exec"), module.__dict__)  # noqa: S102 - our own README
    return module


def test_the_readme_driver_fails_exactly_the_scenario_the_readme_says() -> None:
    driver = example_module().MyDriver()
    assert isinstance(driver, Driver)
    results = run_suite(driver, select(None))
    failed = [result.scenario for result in results if not result.passed]
    assert failed == ["ping_timeout"], [(r.scenario, r.reason) for r in results if not r.passed]
    text = " ".join(README.read_text("utf-8").split())
    assert "Every scenario passes but one" in text
    assert "without them `ping_timeout` fails and says so" in text


def test_the_readme_pytest_module_collects_one_test_per_scenario(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ``tests/test_conformance.py`` the README shows, with its ``mypackage.testing`` being
    the README's own driver: pytest would collect the fixture and one test per scenario."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), re.DOTALL)
    (source,) = [block for block in blocks if "conformance_suite(" in block]
    package, testing = ModuleType("mypackage"), example_module()
    package.testing = testing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mypackage", package)
    monkeypatch.setitem(sys.modules, "mypackage.testing", testing)
    namespace: dict[str, object] = {}
    exec(compile(source, str(README), "exec"), namespace)  # noqa: S102 - our own README
    test = namespace["test_conformance"]
    (marks,) = [mark for mark in getattr(test, "pytestmark", []) if mark.name == "parametrize"]
    assert [scenario.name for scenario in marks.args[1]] == [s.name for s in SCENARIOS]
    assert callable(namespace["conformance_harness"])

"""The driver in conformance/README.md works as written: a vendor can follow it."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

from hyco_conformance.driver import Driver
from hyco_conformance.runner import run_suite, select

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

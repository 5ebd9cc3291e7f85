"""The kernel's public surface and its purity."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import hyco_core

FORBIDDEN = {
    "socket", "ssl", "select", "selectors", "asyncio", "anyio", "trio", "gevent",
    "threading", "time", "random", "os", "secrets", "subprocess",
}  # fmt: skip


def public_modules() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(hyco_core.__path__) if not m.name.startswith("_")]


def test_package_exports_exactly_the_public_names_of_its_modules() -> None:
    expected = {"__version__"}
    for name in public_modules():
        module = importlib.import_module(f"hyco_core.{name}")
        expected.update(module.__all__)
        for exported in module.__all__:
            assert getattr(hyco_core, exported) is getattr(module, exported)
    assert sorted(hyco_core.__all__) == sorted(expected)
    assert len(hyco_core.__all__) == len(set(hyco_core.__all__))


def test_kernel_imports_no_io_clock_or_randomness() -> None:
    root = Path(hyco_core.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_kernel_depends_only_on_wsproto_and_h11() -> None:
    import sys

    root = Path(hyco_core.__file__).parent
    allowed = {"wsproto", "h11", "__future__"} | set(sys.stdlib_module_names)
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert node.module.split(".")[0] in allowed, f"{path.name}: {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in allowed, f"{path.name}: {alias.name}"

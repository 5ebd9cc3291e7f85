"""The kernel's purity: no I/O, clock or randomness, and no dependency but wsproto and h11."""

from __future__ import annotations

import ast
from pathlib import Path

import hyco_core

FORBIDDEN = {
    "socket", "ssl", "select", "selectors", "asyncio", "anyio", "trio", "gevent",
    "threading", "time", "random", "os", "secrets", "subprocess",
}  # fmt: skip


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

"""Finding the app an import string such as ``"main:app"`` names, for ASGI and WSGI hosting alike.

A string that names nothing importable is the user's mistake and raises :class:`AppImportError`
with what to fix; an import that fails *inside* the app's own code is the app's, and propagates
unchanged with its traceback.
"""

from __future__ import annotations

import importlib

from hyco_core import HycoError

__all__ = ["AppImportError", "import_app"]


class AppImportError(HycoError, ImportError):
    """The import string names no importable, callable app."""


def import_app(import_string: str, kind: str) -> object:
    """Import ``"package.module:attribute"`` (the attribute may be dotted); ``kind`` ("ASGI",
    "WSGI") only words the errors."""
    module_name, _, attribute = import_string.partition(":")
    if not module_name or not attribute:
        raise AppImportError(
            f"{import_string!r} is not of the form 'module:attribute' (for example main:app)"
        )
    try:
        target: object = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not _names_part_of(module_name, error.name):
            raise
        raise AppImportError(
            f"no module named {error.name!r} on the import path: check the name, and run from "
            "the app's directory (hyco serve also takes --app-dir)"
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppImportError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise AppImportError(f"{import_string!r} is not callable, so not an {kind} application")
    return target


def _names_part_of(module_name: str, missing: str) -> bool:
    """Whether the module not found is ``module_name`` or one of its parent packages."""
    return module_name == missing or module_name.startswith(f"{missing}.")

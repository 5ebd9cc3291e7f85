"""Which extra of the ``hyco`` distribution installs a module, so that a missing optional
dependency is reported as the one command that fixes it, not as a traceback."""

from __future__ import annotations

__all__ = ["missing_dependency"]

# The top-level module of each optional dependency, and the extra that brings it.
_EXTRA_OF_MODULE = {
    "anyio": "cli",
    "httpx": "cli",
    "cryptography": "cli",
    "tomli": "cli",
    "sniffio": "cli",
    "gevent": "gevent",
    "azure": "entra",
    "websockets": "cli",
    "trio": "dev",
}


def missing_dependency(error: ModuleNotFoundError) -> str | None:
    """What to install for ``error``, or ``None`` when the module is none of hyco's extras."""
    top = (error.name or "").partition(".")[0]
    extra = _EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    return (
        f"this needs the {top!r} package, which the {extra!r} extra installs: "
        f"pip install 'hyco[{extra}]' (from a clone: pip install -e '.[{extra}]')"
    )

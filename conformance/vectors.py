"""Load the machine-readable protocol vectors shipped in ``hyco_conformance/vectors/*.json``.

Each file is a JSON object ``{"version": N, "description": "...", "vectors": [...]}``; the
vectors are the contract a vendor of ``hyco_core`` (or any other implementation) must meet.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["VECTOR_FILES", "load_vectors"]

VECTOR_FILES = ("sas_tokens", "uris", "connection_strings", "control_messages")


def load_vectors(name: str) -> list[dict[str, Any]]:
    """Return the vectors of ``name`` (one of :data:`VECTOR_FILES`)."""
    if name not in VECTOR_FILES:
        raise ValueError(f"unknown vector file {name!r}; expected one of {VECTOR_FILES}")
    text = (
        resources.files("hyco_conformance").joinpath("vectors", f"{name}.json").read_text("utf-8")
    )
    document = json.loads(text)
    vectors: list[dict[str, Any]] = document["vectors"]
    return vectors

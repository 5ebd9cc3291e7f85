"""An app module whose own import fails: that error is the app's, not a wrong app string."""

from __future__ import annotations

import not_installed  # type: ignore[import-not-found]  # noqa: F401

app = None

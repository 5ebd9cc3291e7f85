"""``python -m hyco``: the ``hyco`` command."""

from __future__ import annotations

import sys

from hyco_adapters.cli import main

sys.exit(main())

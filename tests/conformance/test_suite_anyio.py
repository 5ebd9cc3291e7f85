"""The conformance suite on the anyio transport, with asyncio and with trio."""

from __future__ import annotations

from hyco_conformance.drivers import AnyioDriver
from hyco_conformance.pytest_plugin import conformance_suite

conformance_harness, test_conformance = conformance_suite(lambda: AnyioDriver("asyncio"))

"""The conformance suite on the sync (threads) transport."""

from __future__ import annotations

from hyco_conformance.drivers import driver_for
from hyco_conformance.pytest_plugin import conformance_suite

conformance_harness, test_conformance = conformance_suite(lambda: driver_for("sync"))

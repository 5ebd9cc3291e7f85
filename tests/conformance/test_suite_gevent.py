"""The conformance suite on the gevent transport (its hub in a thread of its own)."""

from __future__ import annotations

from hyco_conformance.drivers import GeventDriver
from hyco_conformance.pytest_plugin import conformance_suite

conformance_harness, test_conformance = conformance_suite(GeventDriver)

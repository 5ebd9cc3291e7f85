"""The relay configuration the test suites share: one namespace, three rules, three entities."""

from __future__ import annotations

ROOT_KEY = "cm9vdC1rZXktZm9yLXRlc3Rz"
SEND_KEY = "c2VuZC1rZXktZm9yLXRlc3Rz"
LISTEN_KEY = "bGlzdGVuLWtleS1mb3ItdGVzdHM="


def relay_config(*, request_timeout: float = 10.0, rendezvous_timeout: float = 5.0) -> str:
    """TOML for a relay on any free port: namespace ``localhost`` (the default) with a Manage
    rule ``root``; entity ``hc1`` with ``send-only`` and ``listen-only`` rules, ``open`` for
    anonymous senders, and ``deep/path``."""
    return f"""
[relay]
port = 0
request_timeout = {request_timeout}
rendezvous_timeout = {rendezvous_timeout}

[[namespace]]
name = "localhost"
default = true

  [[namespace.rule]]
  name = "root"
  primary_key = "{ROOT_KEY}"
  rights = ["Manage"]

  [[namespace.entity]]
  name = "hc1"

    [[namespace.entity.rule]]
    name = "send-only"
    primary_key = "{SEND_KEY}"
    rights = ["Send"]

    [[namespace.entity.rule]]
    name = "listen-only"
    primary_key = "{LISTEN_KEY}"
    rights = ["Listen"]

  [[namespace.entity]]
  name = "open"
  requires_client_authorization = false

  [[namespace.entity]]
  name = "deep/path"
"""

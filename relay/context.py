"""What the relay's parts share: the configuration in force, the hooks, the registry, the
clock of relayed WebSockets and where clients reach each namespace.

The :class:`~hyco_relay.server.Relay` is this context; its parts take it as one argument
instead of importing it, so that they sit below it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from hyco_transports.pump import Clock

from .config import NamespaceConfig, PublicAddress, RelayConfig
from .hooks import RelayHooks
from .registry import Registry


class RelayContext(Protocol):
    config: RelayConfig
    hooks: RelayHooks
    secure: bool
    clock: Clock
    registry: Registry
    started_at: datetime

    def public_address(self, namespace: NamespaceConfig) -> PublicAddress: ...

"""A driver whose listener refuses every sender: the suite must catch it and say why."""

from __future__ import annotations

from dataclasses import replace

from hyco_conformance.driver import Decision, ListenerHandle, ListenerSpec
from hyco_conformance.drivers import AnyioDriver


class BrokenDriver(AnyioDriver):
    def __init__(self) -> None:
        super().__init__("asyncio")
        self.name = "broken"

    def open_listener(self, connection_string: str, spec: ListenerSpec) -> ListenerHandle:
        refuse_all = replace(spec, decide=lambda info: Decision.reject(400, "broken on purpose"))
        return super().open_listener(connection_string, refuse_all)

"""``hyco relay``: run the local relay until interrupted, printing how to connect to it."""

from __future__ import annotations

import argparse
import signal
from dataclasses import replace
from typing import TextIO

import anyio

from hyco_relay.config import RelayConfig, Right, default_config, load_config
from hyco_relay.server import Relay, serve_relay

__all__ = ["describe_relay", "run_relay"]


def run_relay(arguments: argparse.Namespace, out: TextIO) -> int:
    config = load_config(arguments.config) if arguments.config else default_config()
    overrides = {
        name: value
        for name, value in (("host", arguments.host), ("port", arguments.port))
        if value is not None
    }
    config = replace(config, **overrides)
    anyio.run(_serve, config, out)
    return 0


async def _serve(config: RelayConfig, out: TextIO) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with serve_relay(config) as relay:
            print(describe_relay(relay), file=out, flush=True)
            async for _signal in signals:
                print("Stopping: listeners are told to reconnect (close 1001).", file=out)
                return


def describe_relay(relay: Relay) -> str:
    """What a user needs to start: the address and a connection string per entity and right."""
    lines = [f"hyco relay listening on {relay.address} (plain ws:// and http://)", ""]
    for namespace in relay.config.namespaces:
        for entity in namespace.entities:
            lines.append(f"hybrid connection {namespace.name}/{entity.name}")
            for right, label in ((Right.LISTEN, "listener"), (Right.SEND, "sender")):
                rule = next(
                    (r for r in (*namespace.rules, *entity.rules) if right in r.rights), None
                )
                if rule is not None:
                    cs = relay.connection_string(entity.name, rule.name, namespace=namespace.name)
                    lines.append(f"  {label}: {cs}")
            if not entity.requires_client_authorization:
                lines.append("  senders need no token")
            lines.append(f"  HTTP: http://{relay.address}/{entity.name}")
            lines.append("")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)

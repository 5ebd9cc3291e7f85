"""``hyco relay``: run the local relay until interrupted, printing how to connect to it."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import anyio

from hyco_core import HycoError
from hyco_relay.config import ConfigWatcher, RelayConfig, Right, default_config
from hyco_relay.server import Relay, serve_relay
from hyco_relay.tls import (
    default_certificate_directory,
    ensure_development_certificates,
    server_ssl_context,
    trust_instructions,
)

from ._cli_errors import bind_failure, exit_code_after
from .long_running import Running

__all__ = ["describe_relay", "run_relay"]

logger = logging.getLogger("hyco.relay")

_RELOAD_INTERVAL = 1.0
_SHOWN_ENTITIES = 10


def run_relay(arguments: argparse.Namespace, out: TextIO, command: Running) -> int:
    """Run the relay until a signal; it is a part of the command's vitals, up while it
    accepts, and its figures go to the command's metrics."""
    watcher: ConfigWatcher[RelayConfig] | None = (
        ConfigWatcher(arguments.config) if arguments.config else None
    )
    config = watcher.config if watcher else _development_config(arguments.shared_access_key)
    config = _with_overrides(config, arguments)
    context, notes = _tls(arguments, config)
    try:
        stopped_by = anyio.run(_serve, config, context, notes, watcher, arguments, out, command)
    except HycoError:
        raise
    except OSError as error:  # binding the listening socket
        failure = bind_failure(config.host, config.port, error, "--port")
        print(f"hyco relay: {failure}", file=sys.stderr)
        return 1
    return exit_code_after(stopped_by)


def _development_config(key: str | None) -> RelayConfig:
    """The configuration without a file, with ``key`` or else the key kept under the relay's
    home directory (made on first use), so that listeners outlive a restart of the relay."""
    if key is not None:
        return default_config(key=key)
    kept = default_certificate_directory().parent / "relay-key"
    try:
        return default_config(key=kept.read_text("ascii").strip())
    except FileNotFoundError:
        pass
    config = default_config()
    (rule,) = config.namespaces[0].rules
    kept.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created readable by its owner only, as the key signs every token of this relay.
    descriptor = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(rule.primary_key + "\n")
    return config


def _with_overrides(config: RelayConfig, arguments: argparse.Namespace) -> RelayConfig:
    if arguments.host is not None:
        config = replace(config, host=arguments.host)
    if arguments.port is not None:
        config = replace(config, port=arguments.port)
    if arguments.public_url is not None:
        config = replace(config, public_url=arguments.public_url)
    return config


def _tls(arguments: argparse.Namespace, config: RelayConfig) -> tuple[ssl.SSLContext | None, str]:
    if arguments.cert or arguments.key:
        if not (arguments.cert and arguments.key):
            raise SystemExit("hyco relay: --cert and --key go together")
        return server_ssl_context(Path(arguments.cert), Path(arguments.key)), ""
    if not arguments.tls:
        return None, ""
    hosts = ["localhost", "127.0.0.1", "::1", *(ns.name for ns in config.namespaces)]
    if config.host not in ("0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
        hosts.append(config.host)
    certificates = ensure_development_certificates(
        default_certificate_directory(), hosts=list(dict.fromkeys(hosts))
    )
    context = server_ssl_context(certificates.certificate, certificates.private_key)
    return context, trust_instructions(certificates)


async def _serve(
    config: RelayConfig,
    context: ssl.SSLContext | None,
    notes: str,
    watcher: ConfigWatcher[RelayConfig] | None,
    arguments: argparse.Namespace,
    out: TextIO,
    command: Running,
) -> signal.Signals:
    """Serve until a signal; return it."""
    vitals = command.vitals
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            serve_relay(config, ssl_context=context) as relay,
            anyio.create_task_group() as tasks,
        ):
            if command.metrics is not None:
                command.metrics.count_relay(relay.registry.counts)
            print(describe_relay(relay), file=out, flush=True)
            if notes:
                print(f"\n{notes}", file=out, flush=True)
            vitals.set("relay", True)
            if watcher is not None:
                tasks.start_soon(_reload, relay, watcher, arguments)
            tasks.start_soon(vitals.keep_beating)
            async for signum in signals:
                vitals.stopping()
                vitals.set("relay", False)
                print("Stopping: listeners are told to reconnect (close 1001).", file=out)
                tasks.cancel_scope.cancel()
                return signal.Signals(signum)
    raise AssertionError("the signal receiver ended")  # pragma: no cover - it never does


async def _reload(
    relay: Relay, watcher: ConfigWatcher[RelayConfig], arguments: argparse.Namespace
) -> None:
    """Apply configuration changes without a restart; a broken file keeps the last good one."""
    reported = watcher.last_error
    while True:
        await anyio.sleep(_RELOAD_INTERVAL)
        changed = watcher.poll()
        if changed is not None:
            await relay.reconfigure(_with_overrides(changed, arguments))
            logger.info("configuration reloaded")
        elif watcher.last_error is not reported:
            # A new error object means a new change that failed: told once, not every poll.
            logger.error("configuration not reloaded: %s", watcher.last_error)
        reported = watcher.last_error


def describe_relay(relay: Relay) -> str:
    """What a user needs to start: the address and a connection string per entity and right,
    for the first few entities (a relay may serve thousands), and how many there are."""
    scheme = "wss:// and https://" if relay.secure else "plain ws:// and http://"
    lines = [f"hyco relay listening on {relay.address} ({scheme})", ""]
    if relay.config.public_url is not None:
        lines[-1:] = [f"clients reach it at {relay.config.public_url}", ""]
    entities = [(ns, entity) for ns in relay.config.namespaces for entity in ns.entities]
    for namespace, entity in entities[:_SHOWN_ENTITIES]:
        lines.append(f"hybrid connection {namespace.name}/{entity.name}")
        for right, label in ((Right.LISTEN, "listener"), (Right.SEND, "sender")):
            rule = next((r for r in (*namespace.rules, *entity.rules) if right in r.rights), None)
            if rule is not None:
                cs = relay.connection_string(entity.name, rule.name, namespace=namespace.name)
                lines.append(f"  {label}: {cs}")
        if not entity.requires_client_authorization:
            lines.append("  senders need no token")
        public = relay.public_address(namespace)
        lines.append(f"  HTTP: {public.url(False, '/' + entity.name)}")
        lines.append("")
    if len(entities) > _SHOWN_ENTITIES:
        lines.append(
            f"... and {len(entities) - _SHOWN_ENTITIES:,} more hybrid connections "
            "(GET /stats lists those with traffic)"
        )
        lines.append("")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)

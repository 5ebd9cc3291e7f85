"""The ``hyco`` command line: one entry point, a subcommand per job.

Exit codes: 0 success, 1 a hyco error (its message says what happened and what to do), 2 bad
usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from hyco_core import HycoError, __version__, create_relay_token, parse_connection_string

__all__ = ["main"]

CONNECTION_STRING_VARIABLE = "HYCO_CONNECTION_STRING"


def _add_connection_string(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connection-string",
        "-c",
        default=os.environ.get(CONNECTION_STRING_VARIABLE),
        help=f"the hybrid connection's connection string (default: ${CONNECTION_STRING_VARIABLE})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyco",
        description="Azure Relay Hybrid Connections from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"hyco {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="relay WebSocket messages and HTTP requests through an embedded local relay",
        description="Start a local relay, a listener and a sender in this process, relay "
        "WebSocket messages and HTTP requests (small and over 64 KiB) through it, and report "
        "what happened with the latency and throughput measured.",
    )
    demo.add_argument("--messages", type=int, default=500, help="round trips to time (500)")
    demo.add_argument("--megabytes", type=int, default=64, help="MiB to echo for throughput (64)")

    relay = commands.add_parser(
        "relay",
        help="run a local relay speaking the Azure Relay protocol",
        description="Run a local relay. Without --config it serves namespace 'localhost' with "
        "hybrid connection 'hyco' and prints ready-to-paste connection strings.",
    )
    relay.add_argument("--config", help="a TOML file of namespaces, entities and rules")
    relay.add_argument("--host", help="address to bind (default 127.0.0.1)")
    relay.add_argument("--port", type=int, help="port to bind (default 9090; 0: any free port)")
    relay.add_argument(
        "--tls",
        action="store_true",
        help="serve wss:// and https:// with a development CA made on first use",
    )
    relay.add_argument("--cert", help="serve TLS with this certificate (PEM, with its chain)")
    relay.add_argument("--key", help="the private key of --cert (PEM)")

    token = commands.add_parser(
        "token",
        help="print a SAS token for a hybrid connection",
        description="Print a SAS token signed with the connection string's key.",
    )
    _add_connection_string(token)
    token.add_argument("--entity", help="hybrid connection (default: the EntityPath)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (3600)")
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    stream = out or sys.stdout
    logging.basicConfig(
        level=logging.WARNING - 10 * min(arguments.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handlers: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
        "demo": _demo,
        "relay": _relay,
        "token": _token,
    }
    handler = handlers.get(arguments.command or "")
    if handler is None:
        parser.print_help(stream)
        return 0
    try:
        return handler(arguments, stream)
    except HycoError as error:
        print(f"hyco {arguments.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _token(arguments: argparse.Namespace, out: TextIO) -> int:
    if not arguments.connection_string:
        print(
            f"hyco token: pass --connection-string or set ${CONNECTION_STRING_VARIABLE}",
            file=sys.stderr,
        )
        return 2
    parsed = parse_connection_string(arguments.connection_string)
    entity = arguments.entity or parsed.entity_path
    if not (parsed.shared_access_key_name and parsed.shared_access_key and entity):
        print(
            "hyco token: the connection string needs SharedAccessKeyName, SharedAccessKey and "
            "an EntityPath (or --entity)",
            file=sys.stderr,
        )
        return 2
    token = create_relay_token(
        f"sb://{parsed.namespace}/{entity}",
        parsed.shared_access_key_name,
        parsed.shared_access_key,
        arguments.ttl,
        now=time.time(),
    )
    print(token, file=out)
    return 0


def _relay(arguments: argparse.Namespace, out: TextIO) -> int:
    from .relay_command import run_relay

    return run_relay(arguments, out)


def _demo(arguments: argparse.Namespace, out: TextIO) -> int:
    from .demo import run_demo

    return run_demo(messages=arguments.messages, megabytes=arguments.megabytes, out=out)


if __name__ == "__main__":
    sys.exit(main())

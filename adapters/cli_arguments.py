"""The ``hyco`` command's arguments: a subparser per subcommand, with its help."""

from __future__ import annotations

import argparse
import os

from hyco_core import __version__

__all__ = ["CONNECTION_STRING_VARIABLE", "build_parser"]

CONNECTION_STRING_VARIABLE = "HYCO_CONNECTION_STRING"


def _add_connection_string(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connection-string",
        "-c",
        default=os.environ.get(CONNECTION_STRING_VARIABLE),
        help=f"the hybrid connection's connection string (default: ${CONNECTION_STRING_VARIABLE})",
    )


def _add_drain_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM or Ctrl-C, how long the work under way may take to finish; requests "
        "arriving meanwhile get 503 with Retry-After (default 10)",
    )


def _host_and_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    host, separator, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not separator or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"HOST:PORT is wanted, the port from 0 to 65535 (0: any free one), not {text!r}"
        )
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    # Accepted before or after the subcommand (hyco -v listen, hyco listen -vv): absent unless
    # given, so that a subcommand's parser does not reset what the main one read. How log lines
    # look goes with how many there are.
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="log more (-vv: debug)"
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="log errors only"
    )
    verbosity.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="log lines as text (the default) or one JSON object a line",
    )
    # What every long-running command takes beside its own options.
    long_running = argparse.ArgumentParser(add_help=False)
    long_running.add_argument(
        "--metrics-addr",
        type=_host_and_port,
        metavar="HOST:PORT",
        help="serve /metrics (Prometheus), /healthz and /readyz there (port 0: any free one, "
        "printed at start)",
    )
    parser = argparse.ArgumentParser(
        prog="hyco",
        description="Azure Relay Hybrid Connections from the command line.",
        parents=[verbosity],
        epilog=f"The connection string may come from ${CONNECTION_STRING_VARIABLE}. Exit codes: "
        "0 success, 1 failure, 2 bad usage, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"hyco {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        parents=[verbosity],
        help="relay WebSocket messages and HTTP requests through an embedded local relay",
        description="Start a local relay, a listener and a sender in this process, relay "
        "WebSocket messages and HTTP requests (small and over 64 KiB) through it, and report "
        "what happened with the latency and throughput measured.",
    )
    demo.add_argument("--messages", type=int, default=500, help="round trips to time (500)")
    demo.add_argument("--megabytes", type=int, default=64, help="MiB to echo for throughput (64)")

    relay = commands.add_parser(
        "relay",
        parents=[verbosity, long_running],
        help="run a local relay speaking the Azure Relay protocol",
        description="Run a local relay. Without --config it serves namespace 'localhost' with "
        "hybrid connection 'hyco' and prints ready-to-paste connection strings.",
    )
    relay.add_argument("--config", help="a TOML file of namespaces, entities and rules")
    relay.add_argument("--host", help="address to bind (default 127.0.0.1)")
    relay.add_argument("--port", type=int, help="port to bind (default 9090; 0: any free port)")
    relay.add_argument(
        "--public-url",
        help="where clients reach the relay, such as wss://relay.example.com (default: its "
        "address); rendezvous addresses and connection strings point there",
    )
    relay.add_argument(
        "--tls",
        action="store_true",
        help="serve wss:// and https:// with a development CA made on first use",
    )
    relay.add_argument(
        "--shared-access-key",
        metavar="KEY",
        help="without --config: the RootManageSharedAccessKey key (default: one made on first "
        "use and kept in ~/.hyco/relay-key, or $HYCO_HOME/relay-key)",
    )
    relay.add_argument("--cert", help="serve TLS with this certificate (PEM, with its chain)")
    relay.add_argument("--key", help="the private key of --cert (PEM)")

    expose = commands.add_parser(
        "expose",
        parents=[verbosity, long_running],
        help="make local TCP services or an HTTP server reachable through a hybrid connection",
        description="Listen on the hybrid connection and carry each sender's connection to one "
        "of the named targets; nothing else is reachable. With --http, be a reverse proxy "
        "instead: every HTTP request and WebSocket to the hybrid connection goes to that "
        "server, under its URL's path.",
    )
    _add_connection_string(expose)
    what = expose.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--target",
        action="append",
        metavar="NAME=HOST:PORT",
        help="a TCP service to expose under NAME (repeat for several)",
    )
    what.add_argument(
        "--http",
        metavar="URL",
        help="an HTTP server to proxy to, such as http://127.0.0.1:8080 (its path is the base "
        "every request lands under)",
    )
    expose.add_argument(
        "--no-strip-prefix",
        dest="strip_prefix",
        action="store_false",
        help="--http: pass the whole path on, the hybrid connection's name included (default: "
        "the upstream sees / for the hybrid connection's root)",
    )
    expose.add_argument(
        "--preserve-host",
        action="store_true",
        help="--http: send the relay's host as Host (default: the upstream's own)",
    )

    agent = commands.add_parser(
        "agent",
        parents=[verbosity, long_running],
        help="run many tunnels (expose, expose --http, forward, serve) from one file",
        description="Run every [[expose]], [[forward]] and [[serve]] entry of a TOML file in "
        "this process, each with its own connection string (${NAME} reads the environment). "
        "SIGHUP or a change of the file reloads it, restarting only the entries that changed.",
    )
    agent.add_argument("--config", required=True, metavar="FILE", help="the agent file (TOML)")
    agent.add_argument(
        "--check", action="store_true", help="check the file, list its entries and exit"
    )
    _add_drain_timeout(agent)
    _add_drain_timeout(expose)

    forward = commands.add_parser(
        "forward",
        parents=[verbosity, long_running],
        help="carry local TCP connections to a target exposed elsewhere",
        description="Bind a local port (or use stdin/stdout) and carry each connection through "
        "the hybrid connection to the target 'hyco expose' offers under that name.",
    )
    _add_connection_string(forward)
    forward.add_argument("--target", required=True, metavar="NAME", help="the exposed name")
    where = forward.add_mutually_exclusive_group(required=True)
    where.add_argument("--bind", metavar="[HOST:]PORT", help="local address to accept on")
    where.add_argument(
        "--stdio", action="store_true", help="use stdin/stdout (ssh -o ProxyCommand)"
    )

    listen = commands.add_parser(
        "listen",
        parents=[verbosity, long_running],
        help="listen on a hybrid connection: echo or print what arrives",
        description="Stay online, accept every sender and answer HTTP: echo (default) sends "
        "messages and request bodies back; --print only shows them.",
    )
    _add_connection_string(listen)
    listen.add_argument("--print", dest="echo", action="store_false", help="show, do not echo")
    _add_drain_timeout(listen)

    connect = commands.add_parser(
        "connect",
        parents=[verbosity],
        help="a WebSocket cat: stdin lines out, messages to stdout",
        description="Connect as a sender; send each line of stdin as a text message and print "
        "every message received. End of input closes the connection normally.",
    )
    _add_connection_string(connect)
    connect.add_argument("--suffix", default="", help="path after the hybrid connection name")
    connect.add_argument("--query", default="", help="query string for the listener")
    connect.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    connect.add_argument("--subprotocol", action="append", default=[])

    http = commands.add_parser(
        "http",
        parents=[verbosity],
        help="send one HTTP request through the relay",
        description="Send a request to the hybrid connection's HTTP address with a fresh relay "
        "token; the body goes to stdout. Exit 0 below status 400, 1 otherwise.",
    )
    _add_connection_string(http)
    http.add_argument("method", help="GET, POST, ...")
    http.add_argument("path", nargs="?", default="/", help="path (and ?query) after the name")
    http.add_argument("--data", help="request body, or @FILE to send a file")
    http.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    http.add_argument("-i", "--include", action="store_true", help="print status and headers")

    serve = commands.add_parser(
        "serve",
        parents=[verbosity, long_running],
        help="serve an ASGI app (FastAPI, Starlette, Django) through a hybrid connection",
        description="Run an ASGI 3 app behind the relay: its routes answer as if it were "
        "mounted at the hybrid connection's path.",
    )
    serve.add_argument("app", metavar="MODULE:APP", help="the app to import, e.g. main:app")
    _add_connection_string(serve)
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="ASGI: listener processes (1); WSGI: requests handled at once (16)",
    )
    serve.add_argument("--wsgi", action="store_true", help="the app is a WSGI app (Flask, ...)")
    serve.add_argument(
        "--transport", choices=("sync", "gevent"), default="sync", help="WSGI: threads or gevent"
    )
    serve.add_argument(
        "--lifespan", choices=("auto", "on", "off"), default="auto", help="lifespan events"
    )
    serve.add_argument("--root-path", help="the app's mount path (default: /<entity path>)")
    serve.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="where to look for the app's module first (default: the current directory)",
    )
    _add_drain_timeout(serve)

    token = commands.add_parser(
        "token",
        parents=[verbosity],
        help="print a SAS token for a hybrid connection",
        description="Print a SAS token signed with the connection string's key.",
    )
    _add_connection_string(token)
    scope = token.add_mutually_exclusive_group()
    scope.add_argument("--entity", help="hybrid connection (default: the EntityPath)")
    scope.add_argument(
        "--namespace-root",
        action="store_true",
        help="sign for every hybrid connection of the namespace (GET /$presence needs this)",
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (3600)")
    return parser

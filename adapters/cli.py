"""The ``hyco`` command line: one entry point, a subcommand per job.

Exit codes: 0 success, 1 a hyco error (its message says what happened and what to do), 2 bad
usage, 130 interrupted, 141 when the reader of standard output left.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO, TypeVar

from hyco_core import (
    CertificateError,
    HycoError,
    ListenerObserver,
    create_relay_token,
    parse_connection_string,
)
from hyco_transports.extras import missing_dependency

from ._cli_errors import alone
from .cli_arguments import CONNECTION_STRING_VARIABLE, build_parser
from .hosting import StatusHandler
from .log_format import configure_logging
from .long_running import Running, running
from .vitals import Vitals

__all__ = ["main"]


T = TypeVar("T")


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    stream = out or sys.stdout
    configure_logging(
        logging.ERROR
        if getattr(arguments, "quiet", False)
        else logging.WARNING - 10 * min(getattr(arguments, "verbose", 0), 2),
        getattr(arguments, "log_format", "text"),
    )
    handlers: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
        "agent": _agent,
        "demo": _demo,
        "expose": _expose,
        "forward": _forward,
        "relay": _relay,
        "listen": _listen,
        "connect": _connect,
        "http": _http,
        "serve": _serve,
        "token": _token,
    }
    handler = handlers.get(arguments.command or "")
    if handler is None:
        parser.print_help(stream)
        return 0
    try:
        code = handler(arguments, stream)
        stream.flush()  # here, where a reader that left is caught, not at the interpreter's exit
        return code
    except BaseException as raised:
        error = alone(raised)
        if isinstance(error, CertificateError):
            print(f"hyco {arguments.command}: {_untrusted(error)}", file=sys.stderr)
            return 1
        if isinstance(error, HycoError):
            print(f"hyco {arguments.command}: {error}", file=sys.stderr)
            return 1
        if isinstance(error, KeyboardInterrupt):
            return 130
        if isinstance(error, BrokenPipeError):
            # The reader of standard output left (``hyco relay | head``): the end a shell
            # pipeline expects, without a second failure as the interpreter flushes at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        if isinstance(error, ModuleNotFoundError) and (advice := missing_dependency(error)):
            print(f"hyco {arguments.command}: {advice}", file=sys.stderr)
            return 1
        raise


def _run_interruptibly(function: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run(function)``, with Ctrl-C turned into a cancellation of ``function`` and then
    a ``KeyboardInterrupt``: left to asyncio, the interrupt escapes as a ``CancelledError``
    traceback on Python 3.10."""
    import anyio

    interrupted = False
    outcome: list[T] = []

    async def until_interrupted() -> None:
        nonlocal interrupted
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            async with anyio.create_task_group() as tasks:

                async def watch() -> None:
                    nonlocal interrupted
                    async for _signal in signals:
                        interrupted = True
                        tasks.cancel_scope.cancel()

                tasks.start_soon(watch)
                outcome.append(await function())
                tasks.cancel_scope.cancel()

    anyio.run(until_interrupted)
    if interrupted:
        raise KeyboardInterrupt
    return outcome[0]


def _run_until_stopped(function: Callable[[], Awaitable[None]], vitals: Vitals) -> int:
    """Run a long-running command's ``function`` until SIGINT or SIGTERM cancels it (it then
    stops in order), its vitals told of the stop as the signal arrives and beating in its event
    loop meanwhile; later signals are ignored. Returns the exit code after the signal."""
    import anyio

    from ._cli_errors import exit_code_after
    from .hosting import Stopped

    stopped = Stopped(vitals.stopping)

    async def until_stopped() -> None:
        async with anyio.create_task_group() as beside:
            beside.start_soon(vitals.keep_beating)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with anyio.create_task_group() as tasks:

                    async def watch() -> None:
                        async for signum in signals:
                            stopped.record(signum)
                            tasks.cancel_scope.cancel()

                    tasks.start_soon(watch)
                    await function()
                    tasks.cancel_scope.cancel()
            beside.cancel_scope.cancel()

    anyio.run(until_stopped)
    return exit_code_after(stopped.signal)


def _keep_listening(
    arguments: argparse.Namespace,
    announcement: StatusHandler | None,
    serve: Callable[[StatusHandler, ListenerObserver | None], Awaitable[None]],
) -> int:
    """Run ``serve(on_status, observer)``, a command keeping one listener online, until a
    signal: the listener is a part of the command's vitals (``announcement`` hears its status
    first) and is counted in its metrics under its hybrid connection's name."""
    name = _hybrid_connection(arguments)
    with running(arguments) as command:
        on_status = command.vitals.follow(name, announcement)
        observer = command.observe(name)
        return _run_until_stopped(lambda: serve(on_status, observer), command.vitals)


def _bad_drain_timeout(arguments: argparse.Namespace) -> bool:
    if math.isfinite(arguments.drain_timeout) and arguments.drain_timeout >= 0:
        return False
    print(
        f"hyco {arguments.command}: --drain-timeout is a number of seconds, 0 or more",
        file=sys.stderr,
    )
    return True


def _untrusted(error: CertificateError) -> str:
    """A refused certificate, with the way a command-line user trusts a CA: OpenSSL reads
    ``SSL_CERT_FILE``, so it reaches every TLS connection the command makes."""
    return (
        f"the relay's TLS certificate was refused: {error.detail}. Trust the relay's CA with "
        "SSL_CERT_FILE=/path/to/ca.pem (a local relay prints its CA's path at start), or "
        "connect to the name the certificate was issued for."
    )


def _missing_connection_string(arguments: argparse.Namespace) -> bool:
    if arguments.connection_string:
        return False
    print(
        f"hyco {arguments.command}: pass --connection-string or set ${CONNECTION_STRING_VARIABLE}",
        file=sys.stderr,
    )
    return True


def _expose(arguments: argparse.Namespace, out: TextIO) -> int:
    from .forward import expose, parse_target
    from .hosting import OnlineAnnouncement

    if _missing_connection_string(arguments):
        return 2
    if _bad_drain_timeout(arguments):
        return 2
    if arguments.http is not None:
        return _expose_http(arguments, out)
    try:
        targets = [parse_target(text) for text in arguments.target]
    except ValueError as error:
        print(f"hyco expose: {error}", file=sys.stderr)
        return 2

    names = ", ".join(t.name for t in targets)
    return _keep_listening(
        arguments,
        OnlineAnnouncement(f"online, exposing {names}; Ctrl-C to stop", out=out),
        lambda on_status, observer: expose(
            arguments.connection_string,
            targets,
            on_status=on_status,
            observer=observer,
            drain_timeout=arguments.drain_timeout,
        ),
    )


def _expose_http(arguments: argparse.Namespace, out: TextIO) -> int:
    from hyco_transports.auth import RelayEndpoint

    from .hosting import OnlineAnnouncement
    from .http_proxy import InvalidUpstreamError, expose_http, parse_upstream

    try:
        upstream = parse_upstream(arguments.http)
    except InvalidUpstreamError as error:
        print(f"hyco expose: --http: {error}", file=sys.stderr)
        return 2
    url = RelayEndpoint.from_connection_string(arguments.connection_string).http_url
    return _keep_listening(
        arguments,
        OnlineAnnouncement(f"online: {url} -> {upstream.url}; Ctrl-C to stop", out=out),
        lambda on_status, observer: expose_http(
            arguments.connection_string,
            upstream,
            strip_prefix=arguments.strip_prefix,
            preserve_host=arguments.preserve_host,
            on_status=on_status,
            observer=observer,
            drain_timeout=arguments.drain_timeout,
        ),
    )


def _forward(arguments: argparse.Namespace, out: TextIO) -> int:
    import anyio

    from ._cli_errors import bind_failure
    from .forward import forward, forward_stdio, parse_bind

    if _missing_connection_string(arguments):
        return 2
    if arguments.stdio:
        if arguments.metrics_addr is not None:
            print(
                "hyco forward: --metrics-addr goes with --bind; --stdio serves one connection",
                file=sys.stderr,
            )
            return 2
        _run_interruptibly(lambda: forward_stdio(arguments.connection_string, arguments.target))
        return 0
    try:
        host, port = parse_bind(arguments.bind)
    except ValueError as wrong:
        print(f"hyco forward: --bind: {wrong}", file=sys.stderr)
        return 2

    async def run(command: Running) -> None:
        async with anyio.create_task_group() as tasks:
            bound = await tasks.start(
                lambda task_status: forward(
                    arguments.connection_string,
                    arguments.target,
                    host=host,
                    port=port,
                    task_status=task_status,
                )
            )
            print(
                f"forwarding {host}:{bound} to {arguments.target!r}; Ctrl-C to stop",
                file=out,
                flush=True,
            )
            command.vitals.set(f"forward {host}:{bound}", True)

    try:
        with running(arguments) as command:
            return _run_until_stopped(lambda: run(command), command.vitals)
    except BaseException as raised:
        error = alone(raised)
        if not isinstance(error, OSError) or isinstance(error, HycoError):
            raise
        # Binding the local port: the one OSError that is not already a hyco error.
        print(f"hyco forward: {bind_failure(host, port, error, '--bind')}", file=sys.stderr)
        return 1


def _headers(values: list[str], command: str) -> list[tuple[str, str]] | None:
    pairs = []
    for value in values:
        name, separator, content = value.partition(":")
        if not separator or not name.strip():
            print(f"hyco {command}: a header is NAME:VALUE, not {value!r}", file=sys.stderr)
            return None
        pairs.append((name.strip(), content.strip()))
    return pairs


def _listen(arguments: argparse.Namespace, out: TextIO) -> int:

    from .commands import run_listen

    if _missing_connection_string(arguments) or _bad_drain_timeout(arguments):
        return 2
    return _keep_listening(
        arguments,
        None,
        lambda on_status, observer: run_listen(
            arguments.connection_string,
            echo=arguments.echo,
            out=out,
            on_status=on_status,
            observer=observer,
            drain_timeout=arguments.drain_timeout,
        ),
    )


def _connect(arguments: argparse.Namespace, out: TextIO) -> int:

    from .commands import run_connect

    if _missing_connection_string(arguments):
        return 2
    headers = _headers(arguments.header, "connect")
    if headers is None:
        return 2
    return _run_interruptibly(
        lambda: run_connect(
            arguments.connection_string,
            suffix=arguments.suffix,
            query=arguments.query,
            headers=headers,
            subprotocols=arguments.subprotocol,
            out=out,
        )
    )


def _http(arguments: argparse.Namespace, out: TextIO) -> int:
    from pathlib import Path

    from .commands import run_http

    if _missing_connection_string(arguments):
        return 2
    headers = _headers(arguments.header, "http")
    if headers is None:
        return 2
    data: bytes | None = None
    if arguments.data is not None and arguments.data.startswith("@"):
        try:
            data = Path(arguments.data[1:]).read_bytes()
        except OSError as error:
            reason = error.strerror or str(error)
            print(f"hyco http: cannot read {arguments.data[1:]!r} ({reason})", file=sys.stderr)
            return 2
    elif arguments.data is not None:
        data = arguments.data.encode()
    return run_http(
        arguments.connection_string,
        method=arguments.method.upper(),
        path=arguments.path,
        data=data,
        headers=headers,
        include=arguments.include,
        out=out,
    )


def _serve(arguments: argparse.Namespace, out: TextIO) -> int:
    from hyco_transports.auth import RelayEndpoint

    from ._cli_errors import exit_code_after
    from .asgi import load_app, run, serve_workers
    from .hosting import AppImportError, OnlineAnnouncement

    if _missing_connection_string(arguments):
        return 2
    if arguments.workers is not None and arguments.workers < 1:
        print("hyco serve: --workers is at least 1", file=sys.stderr)
        return 2
    if _bad_drain_timeout(arguments):
        return 2
    if arguments.metrics_addr is not None and not arguments.wsgi and (arguments.workers or 1) > 1:
        print(
            "hyco serve: --metrics-addr needs one process: worker processes do not report to "
            "it (drop --workers, or run a hyco serve with its own --metrics-addr per worker)",
            file=sys.stderr,
        )
        return 2
    # As uvicorn and hypercorn do: the app's module is found in --app-dir, the current
    # directory by default (a console script's sys.path does not include it). Worker processes
    # inherit the search path.
    sys.path.insert(0, os.path.abspath(arguments.app_dir))
    try:
        if arguments.wsgi:
            from . import wsgi

            wsgi_app = wsgi.load_app(arguments.app)
        else:
            asgi_app = load_app(arguments.app)
    except AppImportError as error:
        print(f"hyco serve: {error}", file=sys.stderr)
        return 2
    url = RelayEndpoint.from_connection_string(arguments.connection_string).http_url
    processes = arguments.workers if arguments.workers and not arguments.wsgi else 1
    announcement = OnlineAnnouncement(
        f"online: {arguments.app} serves {url}; Ctrl-C to stop"
        if processes == 1
        else f"a worker is online: {arguments.app} serves {url}",
        out=out if processes == 1 else None,
    )
    name = _hybrid_connection(arguments)
    with running(arguments) as command:
        vitals = command.vitals
        if arguments.wsgi:
            stopped_by = wsgi.serve(
                wsgi_app,
                arguments.connection_string,
                transport=arguments.transport,
                workers=arguments.workers or 16,
                script_name=arguments.root_path,
                on_status=vitals.follow(name, announcement),
                observer=command.observe(name),
                shutdown_timeout=arguments.drain_timeout,
                vitals=vitals,
            )
            return exit_code_after(stopped_by)
        options = {
            "lifespan": arguments.lifespan,
            "root_path": arguments.root_path,
            "shutdown_timeout": arguments.drain_timeout,
        }
        if processes > 1:
            # Each worker process gets a copy of the handler, so none reports to these vitals.
            print(f"starting {processes} workers; Ctrl-C to stop", file=out, flush=True)
            stopped_by = serve_workers(
                arguments.app,
                arguments.connection_string,
                processes,
                on_status=announcement,
                on_stop=vitals.stopping,
                log_format=getattr(arguments, "log_format", "text"),
                **options,
            )
        else:
            stopped_by = run(
                asgi_app,
                arguments.connection_string,
                on_status=vitals.follow(name, announcement),
                observer=command.observe(name),
                vitals=vitals,
                **options,
            )
    return exit_code_after(stopped_by)


def _token(arguments: argparse.Namespace, out: TextIO) -> int:
    if _missing_connection_string(arguments):
        return 2
    if arguments.ttl <= 0:
        print("hyco token: --ttl is a number of seconds above 0", file=sys.stderr)
        return 2
    parsed = parse_connection_string(arguments.connection_string)
    entity = "" if arguments.namespace_root else arguments.entity or parsed.entity_path
    if not (parsed.shared_access_key_name and parsed.shared_access_key) or entity is None:
        print(
            "hyco token: the connection string needs SharedAccessKeyName, SharedAccessKey and "
            "an EntityPath (or --entity, or --namespace-root)",
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

    with running(arguments) as command:
        return run_relay(arguments, out, command)


def _agent(arguments: argparse.Namespace, out: TextIO) -> int:
    import anyio

    from ._cli_errors import exit_code_after
    from .agent import Agent, describe_entry, read_agent_file

    if _bad_drain_timeout(arguments):
        return 2
    if arguments.check:
        for name, entry in read_agent_file(arguments.config).entries.items():
            print(f"{name}: line {entry.line}, {describe_entry(entry)}", file=out)
        return 0
    with running(arguments) as command:
        agent = Agent(arguments.config, command, out, drain_timeout=arguments.drain_timeout)
        return exit_code_after(anyio.run(agent.run))


def _hybrid_connection(arguments: argparse.Namespace) -> str:
    """The name of the hybrid connection a command's connection string is for."""
    from hyco_transports.auth import RelayEndpoint

    return RelayEndpoint.from_connection_string(arguments.connection_string).path


def _demo(arguments: argparse.Namespace, out: TextIO) -> int:
    from .demo import run_demo

    return run_demo(messages=arguments.messages, megabytes=arguments.megabytes, out=out)


if __name__ == "__main__":
    sys.exit(main())

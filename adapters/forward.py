"""TCP forwarding through the relay: ``hyco expose`` on one side, ``hyco forward`` on the other.

The listener side exposes named local targets (an allowlist: nothing else is reachable). The
sender side binds a local port, or uses stdin/stdout (for ``ssh -o ProxyCommand``), and carries
each TCP connection over its own relayed WebSocket, addressed by the target's name as the path
suffix. Bytes travel as binary messages; an empty binary message means "no more data this way"
(a TCP half-close), and the connection ends when both ways are done.

The listener connects to the target before it accepts the sender, so an unknown target (404) or
one that refuses (502) fails the sender's connect with that status and a readable reason, which
the sender side raises as :class:`TargetUnavailableError`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio
import anyio.abc
from anyio.streams.stapled import StapledByteStream

from hyco_core import (
    ConnectionClosed,
    HycoError,
    ListenerObserver,
    ListenerStatusChanged,
    RelayError,
)
from hyco_transports.anyio import AcceptContext, Listener, WebSocket, connect

from .draining import WorkUnderWay, serve_until_cancelled

__all__ = [
    "Target",
    "TargetUnavailableError",
    "expose",
    "forward",
    "forward_stdio",
    "parse_bind",
    "parse_target",
    "pipe",
]

logger = logging.getLogger("hyco.forward")

_PIECE = 64 * 1024
_END = b""
# How the exposing side words its refusals, for the forwarding side to recognise them.
_UNKNOWN_TARGET = "Unknown target"
_UNREACHABLE_TARGET = "Unreachable target"


class TargetUnavailableError(HycoError):
    """The exposing side has no target of that name (``status_code`` 404), or could not connect
    to it (502); ``reason`` is its own, with the relay's tracking id."""

    def __init__(self, target: str, status_code: int, reason: str) -> None:
        self.target = target
        self.status_code = status_code
        self.reason = reason
        if status_code == 404:
            advice = "pass one of the targets it exposes to --target"
            what = f"the exposing side has no target {target!r}"
        else:
            advice = (
                "check that the service behind it runs there, at the address hyco expose was given"
            )
            what = f"the exposing side could not connect to target {target!r}"
        super().__init__(f"{what} ({reason}): {advice}")


def _refusal(error: RelayError, target: str) -> HycoError:
    """The exposing side's refusal as what it means; any other error as it is."""
    prefix = {404: _UNKNOWN_TARGET, 502: _UNREACHABLE_TARGET}.get(error.status_code or 0)
    if prefix is not None and error.reason.startswith(prefix):
        return TargetUnavailableError(target, error.status_code or 0, error.reason)
    return error


@dataclass(frozen=True, slots=True)
class Target:
    """A local service the listener side may reach: ``name=host:port``."""

    name: str
    host: str
    port: int


def parse_target(text: str) -> Target:
    """``name=host:port`` (or ``host:port``, named ``host-port``)."""
    name, _, address = text.rpartition("=")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a target is name=host:port, not {text!r}")
    host = host.strip("[]")
    name = name or f"{host}-{port}"
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"a target name uses letters, digits, '-', '_' and '.', not {name!r}")
    return Target(name, host, int(port))


def parse_bind(text: str) -> tuple[str, int]:
    """``[host:]port`` as the address to accept on (host 127.0.0.1 unless given)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"a local address is [HOST:]PORT, the port from 0 to 65535, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def pipe(websocket: WebSocket, stream: anyio.abc.ByteStream) -> tuple[int, int]:
    """Carry bytes both ways until both are finished; return (bytes up, bytes down)."""
    counts = [0, 0]

    async def upstream() -> None:
        try:
            while True:
                try:
                    data = await stream.receive(_PIECE)
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    break
                counts[0] += len(data)
                await websocket.send(data)
            await websocket.send(_END)
        except ConnectionClosed:
            return

    async def downstream() -> None:
        try:
            async for message in websocket:
                if isinstance(message, str):
                    await websocket.close(1003, "forwarding carries binary messages only")
                    return
                if message == _END:
                    await _send_eof(stream)
                    return
                counts[1] += len(message)
                await stream.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            await websocket.close(1011, "the local connection broke")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(upstream)
        tasks.start_soon(downstream)
    return counts[0], counts[1]


async def _send_eof(stream: anyio.abc.ByteStream) -> None:
    try:
        await stream.send_eof()
    except (NotImplementedError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.aclose()


async def expose(
    connection_string: str,
    targets: Mapping[str, Target] | list[Target],
    *,
    connect_timeout: float = 10.0,
    on_status: Callable[[ListenerStatusChanged], None] | None = None,
    drain_timeout: float = 10.0,
    observer: ListenerObserver | None = None,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the targets through the hybrid connection until cancelled.

    ``task_status.started()`` is called once the listener is online; ``on_status`` hears each
    change of its status, ``observer`` what the listener counts. Cancelled, it drains: new
    senders are refused with 503, and the connections under way get ``drain_timeout`` seconds
    to end before they are closed. Raises the relay's reason when the listener ends for good
    (the hybrid connection was deleted).
    """
    work = WorkUnderWay()
    allowed = targets if isinstance(targets, Mapping) else {t.name: t for t in targets}
    pending: dict[str, anyio.abc.SocketStream] = {}

    async def decide(context: AcceptContext) -> None:
        name = context.suffix.strip("/")
        target = allowed.get(name)
        if target is None:
            known = ", ".join(sorted(allowed)) or "none"
            context.reject(404, f"{_UNKNOWN_TARGET} {name!r}; this side exposes: {known}")
            return
        try:
            with anyio.fail_after(connect_timeout):
                pending[context.accept_message.id] = await anyio.connect_tcp(
                    target.host, target.port
                )
        except (OSError, TimeoutError) as error:
            context.reject(502, f"{_UNREACHABLE_TARGET} {name!r}: {error}")
            return
        context.accept()

    async def serve(websocket: WebSocket) -> None:
        assert websocket.accept is not None
        stream = pending.pop(websocket.accept.id)
        with work.one():
            async with stream:
                up, down = await pipe(websocket, stream)
        logger.info("forwarded %d bytes in, %d bytes out", up, down)

    listener = Listener.from_connection_string(
        connection_string,
        accept_handler=decide,
        connection_handler=serve,
        on_status=on_status,
        drain_timeout=drain_timeout,
        observer=observer,
    )
    names = ", ".join(f"{t.name} -> {t.host}:{t.port}" for t in allowed.values())
    logger.info("exposing %s", names)
    await serve_until_cancelled(
        listener, work, drain_timeout=drain_timeout, task_status=task_status
    )


async def forward(
    connection_string: str,
    target: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept local TCP connections on ``host:port`` and carry each to ``target``."""

    async def carry(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                await _carry(connection_string, target, stream)
            except HycoError as error:
                logger.error("cannot reach %r through the relay: %s", target, error)

    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        bound = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        task_status.started(bound)
        await listener.serve(carry)


async def forward_stdio(connection_string: str, target: str) -> None:
    """Carry stdin and stdout to ``target`` (for ``ssh -o ProxyCommand``)."""
    stdin = anyio.wrap_file(sys.stdin.buffer)
    stdout = anyio.wrap_file(sys.stdout.buffer)

    class _Stdin(anyio.abc.ByteReceiveStream):
        async def receive(self, max_bytes: int = _PIECE) -> bytes:
            data = await stdin.read1(max_bytes)
            if not data:
                raise anyio.EndOfStream
            return data

        async def aclose(self) -> None:
            await stdin.aclose()

    class _Stdout(anyio.abc.ByteSendStream):
        async def send(self, item: bytes) -> None:
            await stdout.write(item)
            await stdout.flush()

        async def send_eof(self) -> None:
            await stdout.aclose()

        async def aclose(self) -> None:
            await stdout.aclose()

    await _carry(connection_string, target, StapledByteStream(_Stdout(), _Stdin()))


async def _carry(connection_string: str, target: str, stream: anyio.abc.ByteStream) -> None:
    try:
        async with connect(connection_string, suffix=target) as websocket:
            await pipe(websocket, stream)
    except RelayError as error:
        raise _refusal(error, target) from error

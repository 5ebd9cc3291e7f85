"""A relay that misbehaves on command: the far side of hyco's listeners and senders in tests.

:class:`HostileRelay` listens on 127.0.0.1 and reads each connection's upgrade request the way
the real relay does. What happens next is the test's choice: a script per action (``listen``,
``connect``, ``accept``, ``request``) runs in the connection's own thread. By default it
completes the handshake and hands the connection to the test as a :class:`Peer`, which writes
frames built by hand, so it can send what no WebSocket library would: garbage, frames cut
short, reserved close codes, masked frames, unknown control messages.

It runs on plain threads and blocking sockets, so the anyio and the blocking transports can
both be tested against it; async tests call its blocking methods through a worker thread.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "ACTIONS",
    "SAS_KEY",
    "SAS_KEY_NAME",
    "Frame",
    "Handshake",
    "HostileRelay",
    "Peer",
    "frame",
]

SAS_KEY_NAME = "root"
SAS_KEY = "aG9zdGlsZS1yZWxheS10ZXN0LWtleS1kby1ub3QtbG9n"
"""The key of every connection string the hostile relay hands out: no log may show it."""

ACTIONS = ("listen", "connect", "accept", "request")

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD = 64 * 1024
_READ_SIZE = 65536


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    masked: bool = False,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One WebSocket frame as a server writes it (unmasked), or as told otherwise.

    ``length`` announces another payload length than the bytes given: a frame cut short.
    """
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = bytes([first, mask_bit | size])
    elif size < 1 << 16:
        header = bytes([first, mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([first, mask_bit | 127]) + size.to_bytes(8, "big")
    if masked:
        key = os.urandom(4)
        header += key
        payload = _unmask(payload, key)
    return header + payload


def _unmask(data: bytes, key: bytes) -> bytes:
    if not data:
        return data
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    value = int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(data), "big")


@dataclass(frozen=True)
class Handshake:
    """A client's upgrade request as the hostile relay read it (header names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str]
    query: dict[str, str]

    @property
    def action(self) -> str:
        return self.query.get("sb-hc-action", "connect")


@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes
    fin: bool


class PeerClosed(Exception):
    """The client closed (``code``: its close frame's code, ``None`` when it just dropped)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"the client closed (code {code})")
        self.code = code


@dataclass(eq=False)
class Peer:
    """One client connection whose upgrade request was read."""

    sock: socket.socket
    handshake: Handshake
    _buffer: bytearray = field(default_factory=bytearray)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    close_sent: bool = False

    # -- the handshake -----------------------------------------------------------------------

    def accept_handshake(
        self, *, accept_key: str | None = None, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Answer 101 (with a correct ``Sec-WebSocket-Accept`` unless ``accept_key`` is given)."""
        key = self.handshake.headers.get("sec-websocket-key", "").encode("latin-1")
        digest = hashlib.sha1(key + _GUID, usedforsecurity=False).digest()
        accept = accept_key or base64.b64encode(digest).decode()
        lines = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {accept}",
            *(f"{name}: {value}" for name, value in headers),
        ]
        self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def refuse(self, status: int, reason: str, body: bytes = b"") -> None:
        """Answer with an HTTP error status, then close."""
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        self.send_raw(head.encode("latin-1") + body)
        self.drop()

    # -- writing -----------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **options: object) -> None:
        self.send_raw(frame(opcode, payload, **options))  # type: ignore[arg-type]

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode("utf-8"))

    def send_json(self, document: object) -> None:
        self.send_text(json.dumps(document))

    def send_binary(self, data: bytes) -> None:
        self.send_frame(OP_BINARY, data)

    def send_close(self, code: int | None, reason: str = "") -> None:
        payload = b"" if code is None else code.to_bytes(2, "big") + reason.encode("utf-8")
        self.close_sent = True
        self.send_frame(OP_CLOSE, payload)

    def drop(self) -> None:
        """End the TCP connection without a close handshake."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    # -- reading -----------------------------------------------------------------------------

    def receive_frame(self, timeout: float) -> Frame:
        """The client's next frame (unmasked). Raises :class:`PeerClosed` at the end of the
        stream, ``TimeoutError`` when nothing whole arrived in time."""
        deadline = time.monotonic() + timeout
        head = self._take(2, deadline)
        size = head[1] & 0x7F
        if size == 126:
            size = int.from_bytes(self._take(2, deadline), "big")
        elif size == 127:
            size = int.from_bytes(self._take(8, deadline), "big")
        key = self._take(4, deadline) if head[1] & 0x80 else b""
        payload = self._take(size, deadline)
        if key:
            payload = _unmask(payload, key)
        return Frame(opcode=head[0] & 0x0F, payload=payload, fin=bool(head[0] & 0x80))

    def receive_message(self, timeout: float = 10.0) -> str | bytes:
        """The client's next whole message; pings are answered. Raises :class:`PeerClosed`
        when a close frame comes instead (answered with the same code)."""
        deadline = time.monotonic() + timeout
        parts: list[bytes] = []
        text = False
        while True:
            received = self.receive_frame(max(0.0, deadline - time.monotonic()))
            if received.opcode == OP_PING:
                self.send_frame(OP_PONG, received.payload)
                continue
            if received.opcode == OP_PONG:
                continue
            if received.opcode == OP_CLOSE:
                code = int.from_bytes(received.payload[:2], "big") if received.payload else None
                if not self.close_sent:
                    with contextlib.suppress(OSError):  # it may not wait for the answer
                        self.send_close(code)
                raise PeerClosed(code)
            if received.opcode != OP_CONTINUATION:
                text = received.opcode == OP_TEXT
            parts.append(received.payload)
            if received.fin:
                whole = b"".join(parts)
                return whole.decode("utf-8") if text else whole

    def wait_for_close(self, timeout: float = 10.0) -> int | None:
        """Read until the client closes; answer its close frame. Returns its close code
        (``None`` when it dropped the connection without one, or sent none)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.receive_message(max(0.0, deadline - time.monotonic()))
            except PeerClosed as closed:
                return closed.code

    def _take(self, count: int, deadline: float) -> bytes:
        while len(self._buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the client sent nothing whole in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(_READ_SIZE)
            except TimeoutError:
                raise
            except OSError:
                data = b""
            if not data:
                raise PeerClosed(None)
            self._buffer += data
        taken = bytes(self._buffer[:count])
        del self._buffer[:count]
        return taken


Script = Callable[[Peer], None]


class HostileRelay:
    """A fake relay on 127.0.0.1 that does what each action's script says.

    ``scripts[action]`` runs in the connection's thread once the upgrade request is read;
    without one, :meth:`welcome` completes the handshake and queues the peer for
    :meth:`next_peer`. Every handshake is recorded in ``handshakes``; unexpected failures of a
    script (not I/O errors: a client may leave at any time) in ``errors``.
    """

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.scripts: dict[str, Script] = {}
        self.handshakes: list[Handshake] = []
        self.errors: list[BaseException] = []
        self._peers: dict[str, queue.Queue[Peer]] = {action: queue.Queue() for action in ACTIONS}
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closing = False
        self._start(self._accept_loop)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def connection_string(self, entity: str = "hyco") -> str:
        return (
            f"Endpoint=sb://{self.address}/;SharedAccessKeyName={SAS_KEY_NAME};"
            f"SharedAccessKey={SAS_KEY};EntityPath={entity};UseDevelopmentEmulator=true"
        )

    def address_for(self, action: str, rendezvous_id: str, entity: str = "hyco") -> str:
        """A rendezvous address on this relay, as an ``accept`` or ``request`` carries it."""
        return f"ws://{self.address}/$hc/{entity}?sb-hc-action={action}&sb-hc-id={rendezvous_id}"

    def welcome(self, peer: Peer) -> None:
        """What a relay does: complete the handshake; the test takes the peer from here."""
        peer.accept_handshake()
        self._peers[peer.handshake.action].put(peer)

    def next_peer(self, action: str, timeout: float = 15.0) -> Peer:
        """The next connection of ``action`` that :meth:`welcome` let in."""
        try:
            return self._peers[action].get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {action} connection arrived in {timeout:g} s") from None

    def pending(self, action: str) -> int:
        return self._peers[action].qsize()

    def keep_answering(self, peer: Peer) -> None:
        """From now on, answer the peer's pings and its close in the background (what it
        sends otherwise is read and dropped)."""

        def answer() -> None:
            try:
                while True:
                    peer.receive_message(timeout=3600)
            except (PeerClosed, TimeoutError, OSError):
                pass

        self._start(answer)

    def close(self) -> None:
        with self._lock:
            self._closing = True
            sockets = list(self._sockets)
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._server.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)
        for sock in sockets:
            sock.close()

    def __enter__(self) -> HostileRelay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _start(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True, name="hostile-relay")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                if self._closing:
                    sock.close()
                    return
                self._sockets.append(sock)
            self._start(lambda sock=sock: self._serve(sock))  # type: ignore[misc]

    def _serve(self, sock: socket.socket) -> None:
        try:
            peer = self._read_upgrade(sock)
            if peer is None:
                return
            self.handshakes.append(peer.handshake)
            script = self.scripts.get(peer.handshake.action, self.welcome)
            script(peer)
        except (OSError, PeerClosed):
            pass  # the client left, or the test closed the relay
        except BaseException as error:
            self.errors.append(error)

    def _read_upgrade(self, sock: socket.socket) -> Peer | None:
        sock.settimeout(10.0)
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > _MAX_HEAD:
                return None
            chunk = sock.recv(_READ_SIZE)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        query = {name.lower(): value for name, value in parse_qsl(urlsplit(target).query)}
        sock.settimeout(None)
        return Peer(sock, Handshake(method, target, headers, query), bytearray(rest))

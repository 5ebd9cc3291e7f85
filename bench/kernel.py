"""Kernel cost: control messages decoded and handled per second, SAS tokens made and checked.

These run the pure kernel in this process with no I/O, so they show the protocol's own cost;
hyco-ws's ``createRelayToken`` in Node is the baseline for token creation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time

from hyco_core import ControlChannel, create_relay_token
from hyco_core.service import verify_sas_token

from .processes import node_available, start_node
from .stats import Results

__all__ = ["measure_kernel"]

_URL = "ws://localhost/$hc/hyco?sb-hc-action=listen&sb-hc-id=bench"
_NONCE = bytes(range(16))
_KEY_NAME = "RootManageSharedAccessKey"
_KEY = base64.b64encode(bytes(range(32))).decode()
_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _server_frame(text: str) -> bytes:
    """A final, unmasked text frame as a relay sends it."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x81, 126, size)
    else:
        head = struct.pack("!BBQ", 0x81, 127, size)
    return head + payload


def _online_channel() -> ControlChannel:
    channel = ControlChannel(url=_URL, now=0.0, nonce=_NONCE)
    channel.data_to_send()
    key = base64.b64encode(_NONCE)
    accept = base64.b64encode(hashlib.sha1(key + _WEBSOCKET_GUID).digest())  # noqa: S324
    channel.receive_data(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n",
        0.0,
    )
    channel.events()
    return channel


def _accept_frame(index: int) -> bytes:
    message = {
        "accept": {
            "address": f"ws://localhost/$hc/hyco?sb-hc-action=accept&sb-hc-id={index}",
            "id": str(index),
            "connectHeaders": {"Host": "localhost", "User-Agent": "bench"},
            "remoteEndpoint": {"address": "127.0.0.1", "port": 40000 + index % 20000},
        }
    }
    return _server_frame(json.dumps(message))


def _control_rate(count: int) -> float:
    channel = _online_channel()
    frames = [_accept_frame(i) for i in range(count)]
    # Fed in chunks of 64 frames, as they arrive from a socket read under load.
    chunks = [b"".join(frames[i : i + 64]) for i in range(0, count, 64)]
    started = time.perf_counter()
    handled = 0
    for chunk in chunks:
        channel.receive_data(chunk, 1.0)
        handled += len(channel.events())
    elapsed = time.perf_counter() - started
    if handled != count:
        raise RuntimeError(f"expected {count} accept events, got {handled}")
    return count / elapsed


def _creation_rate(count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        create_relay_token("sb://localhost/hyco", _KEY_NAME, _KEY, now=1_700_000_000.0 + i)
    return count / (time.perf_counter() - started)


def _verification_rate(count: int) -> float:
    tokens = [
        create_relay_token("sb://localhost/hyco", _KEY_NAME, _KEY, now=1_700_000_000.0 + i)
        for i in range(count)
    ]
    keys = {_KEY_NAME: [_KEY]}
    started = time.perf_counter()
    for token in tokens:
        verdict = verify_sas_token(
            token, keys=keys, target="sb://localhost/hyco", now=1_700_000_100.0
        )
        if not verdict.valid:
            raise RuntimeError(f"a token the kernel made did not verify: {verdict.outcome}")
    return count / (time.perf_counter() - started)


def measure_kernel(results: Results, *, rounds: int, count: int) -> None:
    results.add("kernel: control accepts/s", "1/s", [_control_rate(count) for _ in range(rounds)])
    results.add("kernel: SAS create/s", "1/s", [_creation_rate(count) for _ in range(rounds)])
    results.add("kernel: SAS verify/s", "1/s", [_verification_rate(count) for _ in range(rounds)])
    if not node_available():
        results.notes.append("node or hyco-ws missing: no createRelayToken baseline")
        return
    env = {"HYCO_RELAY_ADDRESS": "localhost:1", "HYCO_ENTITY": "hyco"}
    env |= {"HYCO_KEY_NAME": _KEY_NAME, "HYCO_KEY": _KEY}
    samples = []
    for _ in range(rounds):
        with start_node("tokens", str(count), env=env) as node:
            samples.append(float(node.info["rate"]))
    results.add("hyco-ws: createRelayToken/s", "1/s", samples)

"""The seed files of every target (``fuzz/corpus/<target>/``), and how they are made.

Seeds are valid and nearly valid inputs: most come from the conformance vectors
(``hyco_conformance/vectors/*.json``), the WebSocket and HTTP ones are built with the encoders
of :mod:`fuzz.inputs`, and every crash the fuzzer found stays as a ``regression-*`` seed.
``python -m fuzz --make-corpus`` writes them all again; the campaign replays and mutates them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hyco_conformance.harness import relay_config
from hyco_conformance.vectors import load_vectors

from .inputs import chunked, close_payload, frame, http_request, upgrade_answer, websocket_upgrade
from .targets import MARKER, TARGETS

__all__ = ["CORPUS", "build", "seed_files", "seeds", "write"]

CORPUS = Path(__file__).resolve().parent / "corpus"
_PER_TARGET = 24
_MASK = b"\x12\x34\x56\x78"

#: Inputs that crashed a target once, kept so that the crash stays fixed.
REGRESSIONS: dict[str, dict[str, bytes]] = {
    "relay_config": {"regression-deep-nesting": b"a = " + b"[" * 1200 + b"]" * 1200 + b"\n"},
    "http_server": {
        "regression-head-with-a-body": b"\x00HEAD / HTTP/1.0\n\n",
        "regression-upgrade-with-a-bad-chunked-body": b"\x00"
        + websocket_upgrade("/$hc/hc1").replace(
            b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 1
        ),
        "regression-latin-1-subprotocol": b"\x00"
        + websocket_upgrade("/$hc/hc1", subprotocols="a").replace(b": a\r\n", b": a\xd2 b\r\n"),
    },
    "sas": {"regression-hc-twice": b"e4e4/$hc/$hc/$hc/x"},
    "connection_string": {
        "regression-key-inside-a-field-name": b"Endpoint=sb://s/;SharedAccessKeyName=o;"
        + b"SharedAccessKey=hentication;EntityPath=t",
    },
}


def seed_files(target: str) -> list[Path]:
    """The seed files of ``target``, in name order."""
    folder = CORPUS / target
    return sorted(path for path in folder.iterdir() if path.is_file()) if folder.is_dir() else []


def seeds(target: str) -> list[bytes]:
    return [path.read_bytes() for path in seed_files(target)]


def write() -> int:
    """Write every target's seeds (replacing the old ones); return how many files there are."""
    count = 0
    for target, files in build().items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for name, data in files.items():
            (folder / name).write_bytes(data)
            count += 1
    return count


def build() -> dict[str, dict[str, bytes]]:
    """Seed name -> bytes, per target."""
    built = {
        "sas": _from_vectors("sas_tokens", _sas_input),
        "uris": _from_vectors("uris", _uri_input),
        "connection_string": _from_vectors("connection_strings", _connection_string_input),
        "messages": _from_vectors("control_messages", _message_input),
        "http_server": _http_server_seeds(),
        "client_channel": _client_channel_seeds(),
        "server_websocket": _server_websocket_seeds(),
        "relay_config": _relay_config_seeds(),
    }
    assert set(built) == set(TARGETS)
    for target, files in REGRESSIONS.items():
        built[target].update(files)
    return built


def _from_vectors(
    name: str, extract: Callable[[dict[str, Any]], bytes | None], limit: int = _PER_TARGET
) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for vector in load_vectors(name):
        data = extract(vector)
        if data is not None and data not in found.values():
            found[_file_name(vector["name"])] = data
    return dict(_spread(sorted(found.items()), limit))


def _spread(items: Sequence[tuple[str, bytes]], limit: int) -> list[tuple[str, bytes]]:
    """At most ``limit`` items, taken evenly across ``items``."""
    if len(items) <= limit:
        return list(items)
    return [items[index * len(items) // limit] for index in range(limit)]


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def _sas_input(vector: dict[str, Any]) -> bytes | None:
    given = vector["input"]
    assert isinstance(given, dict)
    text = given.get("token") or given.get("uri")
    return text.encode() if isinstance(text, str) else None


def _uri_input(vector: dict[str, Any]) -> bytes | None:
    given = vector["input"]
    if vector["kind"] == "parse" and isinstance(given, dict):
        return str(given["url"]).encode()
    return None


def _connection_string_input(vector: dict[str, Any]) -> bytes | None:
    given = vector["input"]
    return given.encode("utf-8", "surrogatepass") if isinstance(given, str) else None


def _message_input(vector: dict[str, Any]) -> bytes | None:
    if "utf8_hex" in vector:
        return binascii.unhexlify(str(vector["utf8_hex"]))
    text = str(vector["text"])
    if len(text) > 4096:
        return None  # the size-limit vectors: the fuzzer makes its own big inputs
    return text.encode("utf-8", "surrogatepass")


# -- WebSocket and HTTP seeds ------------------------------------------------------------------

_LISTEN = "/$hc/hc1?sb-hc-action=listen&sb-hc-id=1"
_TOKEN = f"SharedAccessSignature sr=http%3A%2F%2Fns%2Fhc1%2F&sig={MARKER}&se=1&skn=root"
_ACCEPT = {
    "accept": {
        "address": "ws://ns/$hc/hc1?sb-hc-action=accept&sb-hc-id=1",
        "id": "1",
        "connectHeaders": {"Sec-WebSocket-Protocol": "a, b", "X-Custom": "1"},
        "remoteEndpoint": {"address": "10.0.0.1", "port": 5000},
    }
}
_REQUEST = {
    "request": {
        "address": "ws://ns/$hc/hc1?sb-hc-action=request&sb-hc-id=2",
        "id": "2",
        "requestTarget": "/hc1/x?y=1",
        "method": "POST",
        "requestHeaders": {"Content-Type": "text/plain"},
        "body": True,
    }
}
_RENDEZVOUS = {"request": {"address": "ws://ns/$hc/hc1?sb-hc-action=request&sb-hc-id=3", "id": "3"}}
_RESPONSE = {"response": {"requestId": "1", "statusCode": 200, "responseHeaders": {}, "body": True}}


def _text_frame(document: object, *, mask: bytes | None = None) -> bytes:
    return frame(0x1, json.dumps(document).encode(), mask=mask)


def _http_server_seeds() -> dict[str, bytes]:
    host = ("Host", "ns")
    token = ("ServiceBusAuthorization", _TOKEN)
    masked = _MASK
    return {
        "listen-then-response": bytes([0])
        + websocket_upgrade(_LISTEN)
        + _text_frame(_RESPONSE, mask=masked)
        + frame(0x2, b"hello", mask=masked)
        + frame(0x8, close_payload(1000), mask=masked),
        "connect-subprotocols-frames-by-byte": bytes([1])
        + websocket_upgrade("/$hc/hc1/room?x=1&sb-hc-action=connect", subprotocols="a, b")
        + frame(0x1, b"hel", fin=False, mask=masked)
        + frame(0x0, b"lo", mask=masked)
        + frame(0x9, b"ping", mask=masked),
        "accept-passing-pings": bytes([0x20])
        + websocket_upgrade("/$hc/hc1?sb-hc-action=accept&sb-hc-id=abc")
        + frame(0x9, b"p", mask=masked)
        + frame(0xA, b"p", mask=masked),
        "post-content-length": bytes([0])
        + http_request("POST", "/hc1/x?y=1", [host, token, ("Content-Length", "5")], b"hello"),
        "post-chunked-in-threes": bytes([3])
        + http_request(
            "PUT", "/hc1", [host, ("Transfer-Encoding", "chunked")], chunked(b"hel", b"lo")
        ),
        "expect-continue": bytes([0])
        + http_request(
            "POST", "/hc1", [host, ("Expect", "100-continue"), ("Content-Length", "2")], b"ok"
        ),
        "pipelined-keep-alive": bytes([0x40])
        + http_request("GET", "/hc1/a", [host, token])
        + http_request("GET", "/hc1/b", [host, token]),
        "health-http-1.0": bytes([0]) + http_request("GET", "/health", [], version="HTTP/1.0"),
        "refused-upgrade": bytes([0x10]) + websocket_upgrade(_LISTEN),
        "small-header-limit": bytes([0x08])
        + http_request("GET", "/stats", [host, ("X-Big", "x" * 5000)]),
    }


def _client_channel_seeds() -> dict[str, bytes]:
    answer = upgrade_answer()
    return {
        "sender-messages": bytes([0])
        + upgrade_answer(subprotocol="a")
        + frame(0x1, "héllo".encode())
        + frame(0x2, b"\x00\x01", fin=False)
        + frame(0x0, b"\x02")
        + frame(0x9, b"ping")
        + frame(0x8, close_payload(1000, b"bye")),
        "sender-by-byte-with-timers": bytes([0x84]) + answer + frame(0xA, b"") + frame(0x1, b"x"),
        "control-accept-request-renewal": bytes([0x81])
        + answer
        + _text_frame(_ACCEPT)
        + _text_frame(_REQUEST)
        + frame(0x2, b"body")
        + _text_frame(_RENDEZVOUS)
        + frame(0x8, close_payload(1008, b"token expired")),
        "control-in-sevens": bytes([0x11])
        + answer
        + _text_frame({"renewToken": {"token": _TOKEN}})
        + _text_frame({"unknown": {}, "trace": 1}),
        "rendezvous-request-and-body": bytes([2])
        + answer
        + _text_frame(_REQUEST)
        + frame(0x2, b"piece", fin=False)
        + frame(0x0, b"end")
        + _text_frame(_REQUEST),
        "reject-delivered": bytes([3]) + b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n",
        "refused-with-json-body": bytes([1])
        + b"HTTP/1.1 404 \r\nContent-Length: 59\r\n\r\n"
        + b'{"error":{"message":"No listener. TrackingId:abc, x"}}     ',
        "refused-quota": bytes([0]) + b"HTTP/1.1 403 Quota exceeded TrackingId:1\r\n\r\n",
        "wrong-accept-key": bytes([0]) + upgrade_answer(key=base64.b64encode(b"wrong")),
        "masked-frame-from-server": bytes([0]) + answer + frame(0x1, b"x", mask=_MASK),
    }


def _server_websocket_seeds() -> dict[str, bytes]:
    masked = _MASK
    return {
        "relayed-echo": bytes([0])
        + frame(0x1, b"hello", mask=masked)
        + frame(0x2, b"\x00", mask=masked)
        + frame(0x9, b"p", mask=masked)
        + frame(0x8, close_payload(1000), mask=masked),
        "relayed-passing-pings-trailing": bytes([0x41])
        + frame(0x9, b"p", mask=masked)
        + frame(0xA, b"q", mask=masked),
        "control-response-and-renewal": bytes([2])
        + _text_frame(_RESPONSE, mask=masked)
        + frame(0x2, b"ok", mask=masked)
        + _text_frame({"renewToken": {"token": _TOKEN}}, mask=masked)
        + _text_frame({"response": {"requestId": "2", "statusCode": "204"}}, mask=masked),
        "control-by-byte": bytes([0x86])
        + _text_frame(_ACCEPT, mask=masked)
        + frame(0x2, b"stray", mask=masked),
        "rendezvous-streamed-response": bytes([3])
        + _text_frame(_RESPONSE, mask=masked)
        + frame(0x2, b"a" * 200, fin=False, mask=masked)
        + frame(0x0, b"b", mask=masked),
        "unmasked-from-client": bytes([0]) + frame(0x1, b"x"),
        "close-bad-code": bytes([0]) + frame(0x8, close_payload(1005), mask=masked),
        "text-bad-utf8": bytes([0x0C]) + frame(0x1, b"\xc3(", mask=masked),
    }


def _relay_config_seeds() -> dict[str, bytes]:
    keyed = f"""
[relay]
host = "127.0.0.1"
port = 9090
max_listeners_per_entity = 25
rendezvous_timeout = 30.0
request_timeout = 60.0
connection_rate = 5
connection_burst = 20
message_rate = 0.5
message_burst = 100

[[namespace]]
name = "contoso.servicebus.windows.net"
default = true

  [[namespace.rule]]
  name = "RootManageSharedAccessKey"
  primary_key = "{MARKER}="
  secondary_key = "{MARKER}2="
  rights = ["Manage"]

  [[namespace.entity]]
  name = "hc1"
  requires_client_authorization = true

    [[namespace.entity.rule]]
    name = "send-only"
    primary_key = "{MARKER}3="
    rights = ["Send"]

[[namespace]]
name = "[::1]"
"""
    return {
        "harness": relay_config().encode(),
        "every-setting-and-keys": keyed.encode(),
        "minimal": b'[[namespace]]\nname = "localhost"\n',
        "bom-and-inline-tables": b"\xef\xbb\xbf"
        + b'namespace = [{name = "ns", entity = [{name = "a/b"}]}]\n',
        "duplicate-entities": b'[[namespace]]\nname = "ns"\n'
        + b'entity = [{name = "a"}, {name = "A"}]\n',
    }

"""What drives the targets: wire encoders, structured hypothesis inputs, and mutated seeds.

Raw bytes alone rarely get past a parser's first check (a SAS token whose signature matches, a
WebSocket handshake whose accept key is right), so every target also gets inputs built the way
real peers build them, with their pieces drawn from what is valid, what is nearly valid and
what is hostile. Seed files from ``fuzz/corpus/`` are replayed as they are and mutated (bytes
flipped, inserted, deleted, duplicated, spliced with tokens the parser cares about).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence

from hypothesis import strategies as st

from hyco_core import LocalProtocolError, create_sas_token
from hyco_core._wire import accept_key

from .targets import KEYS, MARKER, NONCE, NOW

__all__ = [
    "frame",
    "http_request",
    "input_strategy",
    "upgrade_answer",
]

_MAX_RAW = 2048


# -- encoders ----------------------------------------------------------------------------------


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: bytes | None = None,
    rsv: int = 0,
) -> bytes:
    """One RFC 6455 frame; ``mask`` (4 bytes) masks it, as clients must and servers must not."""
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)
    mask_bit = 0x80 if mask is not None else 0
    length = len(payload)
    if length < 126:
        head = bytes([first, mask_bit | length])
    elif length < 1 << 16:
        head = bytes([first, mask_bit | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([first, mask_bit | 127]) + length.to_bytes(8, "big")
    if mask is None:
        return head + payload
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return head + mask + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


def upgrade_answer(
    *,
    status: str = "101 Switching Protocols",
    key: bytes | None = None,
    subprotocol: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The relay's answer to a client handshake made with :data:`~fuzz.targets.NONCE`."""
    accept = accept_key(base64.b64encode(NONCE)) if key is None else key
    lines = [
        f"HTTP/1.1 {status}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept.decode('latin-1')}",
    ]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    lines += [f"{name}: {value}" for name, value in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_request(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    newline: str = "\r\n",
) -> bytes:
    head = newline.join([f"{method} {target} {version}", *(f"{n}: {v}" for n, v in headers)])
    return (head + newline + newline).encode("utf-8", "surrogateescape") + body


def websocket_upgrade(target: str, *, subprotocols: str | None = None) -> bytes:
    """A client's upgrade request to the relay."""
    headers = [
        ("Host", "contoso.servicebus.windows.net"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", base64.b64encode(NONCE).decode()),
        ("Sec-WebSocket-Version", "13"),
    ]
    if subprotocols is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocols))
    return http_request("GET", target, headers)


def chunked(*pieces: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces if piece)
    return body + b"0\r\n\r\n"


# -- pieces ------------------------------------------------------------------------------------

_ESCAPES = ["%", "%2", "%2F", "%2f", "%25", "%00", "%FF", "%C3%A9", "%ED%A0%80", "%zz", "%20"]
_URL_PIECES = [*_ESCAPES, "$hc", "%24hc", "sb-hc-", "?", "&", "=", "#", "/", "//", ".", "..", "%2E"]
_URL_PIECES += ["[", "]", ":", "@", " ", "+", "é", "\x00", "\t", MARKER]
_RAW_PIECES = [b"\xff", b"\xed\xa0\x80", b"\xc3", b"\x00", b"\r\n", b"\n", b"\r"]


def _text_from(pieces: Sequence[str], *, max_size: int = 8) -> st.SearchStrategy[str]:
    piece = st.one_of(st.sampled_from(pieces), st.text(max_size=4))
    return st.lists(piece, max_size=max_size).map("".join)


def _encoded(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Text as UTF-8, sometimes with raw bytes that are not UTF-8 spliced in."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = draw(text).encode("utf-8", "surrogatepass")
        if draw(st.integers(0, 4)) == 0:
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.sampled_from(_RAW_PIECES)) + data[at:]
        return data

    return build()


# -- SAS tokens and addresses ------------------------------------------------------------------

_SCHEMES = ["wss", "ws", "https", "http", "sb", "WSS", "Http", "ftp", ""]
_HOSTS = [
    "contoso.servicebus.windows.net",
    "CONTOSO.servicebus.windows.net",
    "localhost:9090",
    "localhost:0",
    "localhost:99999",
    "[::1]",
    "[::1]:443",
    "[fe80::1%25eth0]",
    "[not-v6]",
    "a..b",
    "",
    "user@host",
    "xn--bcher-kva.example",
    "ns:443",
    "ns:",
    "K\u212aLVIN",
]
_SEGMENTS = ["$hc", "%24hc", "$HC", "hc1", "HC1", "sub", "a", "b", "c", "hyco", ".", "..", "%2E%2E"]
_SEGMENTS += ["%2F", "a%zz", "%C3%A9", "%FF", "é", "", "a b", "x?y", "%3F"]
_PARAMETERS = ["sb-hc-action", "sb-hc-id", "sb-hc-token", "SB-HC-TOKEN", "%73b-hc-token", "sig"]
_PARAMETERS += ["x", "sb-hc-statusCode", "sb-hc-statusDescription", "sb-hc-", "api-version"]
_VALUES = ["listen", "connect", "accept", "request", "LISTEN", "bogus", "", "%", "%zz", "%FF"]
_VALUES += [MARKER, f"SharedAccessSignature%20sr%3Dx%26sig%3D{MARKER}%26se%3D1%26skn%3Dk"]
_VALUES += ["404", "a%20b", "2016-07"]


@st.composite
def _address(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(_SCHEMES))
    host = draw(st.one_of(st.sampled_from(_HOSTS), _text_from(_URL_PIECES, max_size=3)))
    segments = draw(
        st.lists(
            st.one_of(st.sampled_from(_SEGMENTS), _text_from(_URL_PIECES, max_size=2)), max_size=5
        )
    )
    text = f"{scheme}://{host}" if scheme or draw(st.booleans()) else host
    if segments:
        text += "/" + "/".join(segments)
    items = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(_PARAMETERS), _text_from(_URL_PIECES, max_size=2)),
                st.sampled_from(["=", ""]),
                st.one_of(st.sampled_from(_VALUES), _text_from(_URL_PIECES, max_size=3)),
            ),
            max_size=5,
        )
    )
    empty_query = draw(st.booleans())
    if items or empty_query:
        text += "?" + "&".join(f"{name}{eq}{value if eq else ''}" for name, eq, value in items)
    if draw(st.integers(0, 9)) == 0:
        text += "#" + draw(_text_from(_URL_PIECES, max_size=2))
    return text


@st.composite
def _sas_token(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        # Signed with a configured key: verification goes on to the resource and the expiry.
        name = draw(st.sampled_from(sorted(KEYS)))
        expiry = draw(st.sampled_from([NOW + 600, NOW, NOW - 1, NOW + 10**6, 0, 2**63 - 1]))
        resource = draw(st.one_of(_address(), _text_from(_URL_PIECES)))
        try:
            return create_sas_token(resource, name, draw(st.sampled_from(KEYS[name])), expiry)
        except LocalProtocolError:
            return resource
    fields = [
        (
            "sr",
            draw(
                st.one_of(
                    st.sampled_from(["http%3A%2F%2Fcontoso.servicebus.windows.net%2Fhc1%2F", "x"]),
                    _text_from(_URL_PIECES),
                )
            ),
        ),
        ("sig", draw(st.sampled_from([MARKER, f"{MARKER}%3D", f"ab+{MARKER}/=", "%", ""]))),
        (
            "se",
            draw(
                st.sampled_from(
                    [
                        "1700000000",
                        "0",
                        "01",
                        "-1",
                        "9" * 19,
                        "9223372036854775807",
                        "1e9",
                        "\u0661",
                    ]
                )
            ),
        ),
        (
            "skn",
            draw(
                st.sampled_from(["RootManageSharedAccessKey", "SendOnly", "my%2Drule", "%FF", ""])
            ),
        ),
    ]
    fields += draw(
        st.lists(
            st.tuples(
                st.sampled_from(["SR", "Sig", "skv", "", "se"]), _text_from(_URL_PIECES, max_size=2)
            ),
            max_size=2,
        )
    )
    order = draw(st.permutations(fields))
    separator = draw(st.sampled_from(["=", "", "=="]))
    prefix = draw(
        st.sampled_from(
            [
                "SharedAccessSignature ",
                "sharedaccesssignature ",
                "SharedAccessSignature",
                "Bearer ",
                "",
            ]
        )
    )
    return prefix + "&".join(f"{name}{separator}{value}" for name, value in order)


def _sas_inputs() -> st.SearchStrategy[bytes]:
    return _encoded(st.one_of(_sas_token(), _address()))


def _uri_inputs() -> st.SearchStrategy[bytes]:
    return _encoded(_address())


# -- connection strings ------------------------------------------------------------------------

_CONNECTION_KEYS = ["Endpoint", "EntityPath", "SharedAccessKeyName", "SharedAccessKey"]
_CONNECTION_KEYS += ["SharedAccessSignature", "Authentication", "OperationTimeout"]
_CONNECTION_KEYS += ["UseDevelopmentEmulator", "endpoint", " SharedAccessKey ", "Unknown", "a"]
_CONNECTION_VALUES: dict[str, list[str]] = {
    "Endpoint": [
        "sb://contoso.servicebus.windows.net/",
        "sb://localhost:9090",
        "https://ns/x",
        "ftp://ns/",
        "sb://",
        "sb://[::1]:9/",
        "sb://ns/?q",
        "ns",
    ],
    "EntityPath": ["hc1", "a/b", "$hc", "a//b", "..", " hc1", "é"],
    "SharedAccessKeyName": ["RootManageSharedAccessKey", "a b", "x;y"],
    "SharedAccessKey": [f"{MARKER}=", f"{MARKER}+/==", f"a={MARKER}"],
    "SharedAccessSignature": [f"SharedAccessSignature sr=x&sig={MARKER}&se=1&skn=k"],
    "Authentication": ["Managed Identity", "ManagedIdentity", "managed identity", "Other"],
    "OperationTimeout": [
        "90",
        "2.5",
        "00:01:30",
        "1.00:00:00",
        "1:00:00:00",
        "0",
        "-1",
        "25:00:00",
        "10675199.02:48:05.4775807",
        "10675199.02:48:05.4775808",
        "999999999999",
        "00:00:00.00000001",
        "00:00:00.0000001",
        "1e3",
        "1:2",
        "0.00:00:00",
    ],
    "UseDevelopmentEmulator": ["true", "false", "TRUE", "yes", "1"],
}


@st.composite
def _connection_string(draw: st.DrawFn) -> str:
    items = []
    for _ in range(draw(st.integers(0, 7))):
        key = draw(st.sampled_from(_CONNECTION_KEYS))
        values = _CONNECTION_VALUES.get(key.strip(), [])
        value = draw(
            st.one_of(st.sampled_from(values), _text_from(_URL_PIECES, max_size=2))
            if values
            else _text_from(_URL_PIECES, max_size=3)
        )
        if key.strip() in ("SharedAccessKey", "SharedAccessSignature") and draw(st.booleans()):
            value = f"{MARKER}{value}"
        items.append(f"{key}{draw(st.sampled_from(['=', ' = ', '']))}{value}")
    if draw(st.booleans()):
        items.insert(0, "Endpoint=sb://contoso.servicebus.windows.net/")
    return draw(st.sampled_from([";", ";;", "; "])).join(items) + draw(st.sampled_from(["", ";"]))


def _connection_string_inputs() -> st.SearchStrategy[bytes]:
    return _encoded(_connection_string())


# -- control messages --------------------------------------------------------------------------

_JSON_LEAVES: st.SearchStrategy[object] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["200", "0200", "65535", "65536", "", "٣", MARKER]),
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)
_HEADER_NAMES = ["Host", "ServiceBusAuthorization", "Authorization", "Sec-WebSocket-Protocol"]
_HEADER_NAMES += ["X-Custom", "content-length", "Connection", "bad name", "é", "", "x-custom"]
_HEADERS = st.dictionaries(
    st.one_of(st.sampled_from(_HEADER_NAMES), st.text(max_size=4)),
    st.one_of(
        st.sampled_from([f"SharedAccessSignature sig={MARKER}", "a, b", "1", ""]),
        st.text(max_size=6),
        _JSON_LEAVES,
    ),
    max_size=4,
)
_ADDRESSES = st.one_of(
    st.sampled_from(
        [
            "wss://ns/$hc/hc1?sb-hc-action=accept&sb-hc-id=1",
            "ws://ns/$hc/hc1/x?a=1&sb-hc-action=request&sb-hc-id=2",
            "wss://.../$hc/hc1",
            "nonsense",
        ]
    ),
    _address(),
)


def _maybe_wrong(right: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(right, right, right, _JSON)


_ENDPOINT = st.fixed_dictionaries(
    {},
    optional={
        "address": _maybe_wrong(st.sampled_from(["10.0.0.1", "::1", ""])),
        "port": _maybe_wrong(st.sampled_from([0, 443, 65535, 65536, -1, "443", "0443", "x"])),
        "extra": _JSON,
    },
)
_MESSAGES: list[st.SearchStrategy[dict[str, object]]] = [
    st.fixed_dictionaries(
        {"address": _maybe_wrong(_ADDRESSES), "id": _maybe_wrong(st.text(max_size=8))},
        optional={
            "connectHeaders": _maybe_wrong(_HEADERS),
            "remoteEndpoint": _maybe_wrong(_ENDPOINT),
            "priority": _JSON,
        },
    ).map(lambda fields: {"accept": fields}),
    st.fixed_dictionaries(
        {"address": _maybe_wrong(_ADDRESSES)},
        optional={
            "id": _maybe_wrong(st.text(max_size=8)),
            "requestTarget": _maybe_wrong(st.sampled_from(["/hc1/x?y=1", "/", "", "/%zz"])),
            "method": _maybe_wrong(st.sampled_from(["GET", "POST", ""])),
            "requestHeaders": _maybe_wrong(_HEADERS),
            "remoteEndpoint": _maybe_wrong(_ENDPOINT),
            "body": _maybe_wrong(st.booleans()),
        },
    ).map(lambda fields: {"request": fields}),
    st.fixed_dictionaries(
        {
            "requestId": _maybe_wrong(st.text(max_size=8)),
            "statusCode": _maybe_wrong(
                st.sampled_from([200, 100, 999, 99, 1000, "200", "2000", True])
            ),
        },
        optional={
            "statusDescription": _maybe_wrong(st.text(max_size=8)),
            "responseHeaders": _maybe_wrong(_HEADERS),
            "body": _maybe_wrong(st.booleans()),
        },
    ).map(lambda fields: {"response": fields}),
    st.fixed_dictionaries(
        {},
        optional={
            "token": _maybe_wrong(
                st.sampled_from([f"SharedAccessSignature sr=x&sig={MARKER}&se=1&skn=k", ""])
            )
        },
    ).map(lambda fields: {"renewToken": fields}),
    st.dictionaries(st.text(max_size=6), _JSON, max_size=3),
]


@st.composite
def _control_text(draw: st.DrawFn) -> str:
    document: dict[str, object] = {}
    for strategy in draw(st.lists(st.sampled_from(_MESSAGES), min_size=1, max_size=2)):
        document.update(draw(strategy))
    text = json.dumps(
        document, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1]))
    )
    variant = draw(st.integers(0, 9))
    if variant == 0:
        text = '{"accept":{"id":"1","id":"2","address":"x"}}'
    elif variant == 1:
        depth = draw(st.integers(1, 3000))
        text = '{"accept":' + "[" * depth + "]" * depth + "}"
    elif variant == 2:
        text = (
            text.replace('"', "'", 1)
            if draw(st.booleans())
            else text[: draw(st.integers(0, len(text)))]
        )
    elif variant == 3:
        text = (
            '{"response":{"requestId":"1","statusCode":'
            + draw(st.sampled_from(["1" * 5000, "NaN", "Infinity", "-0", "2e2", "200.0"]))
            + "}}"
        )
    return text


def _message_inputs() -> st.SearchStrategy[bytes]:
    return _encoded(_control_text())


# -- the HTTP server side and WebSocket frames -------------------------------------------------

_OPCODES = [0x1, 0x2, 0x0, 0x8, 0x9, 0xA]
_CLOSE_CODES = [1000, 1001, 1002, 1005, 1006, 1008, 1011, 1015, 999, 3000, 4999, 5000, 0]


@st.composite
def _frames(draw: st.DrawFn, *, masked: bool) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        if kind < 4:
            opcode, payload = 0x1, draw(_control_text()).encode("utf-8")
        elif kind == 4:
            opcode = 0x8
            payload = (
                draw(st.sampled_from([b"", b"\x03", b"\x03\xe8\xff"]))
                if draw(st.booleans())
                else close_payload(
                    draw(st.sampled_from(_CLOSE_CODES)),
                    draw(st.sampled_from([b"", b"bye", b"\xff", b"x" * 130])),
                )
            )
        else:
            opcode = draw(st.one_of(st.sampled_from(_OPCODES), st.integers(0, 15)))
            payload = draw(
                st.one_of(
                    st.binary(max_size=64),
                    st.text(max_size=16).map(str.encode),
                    st.just(b"x" * 200),
                )
            )
        wrong_mask = draw(st.integers(0, 15)) == 0
        mask = draw(st.binary(min_size=4, max_size=4)) if masked != wrong_mask else None
        fin = draw(st.integers(0, 3)) != 0
        rsv = 0 if draw(st.integers(0, 15)) else draw(st.integers(1, 7))
        if opcode in (0x1, 0x2) and not fin and draw(st.booleans()):
            # A fragmented message: the rest follows in continuation frames.
            cut = draw(st.integers(0, len(payload)))
            out += frame(opcode, payload[:cut], fin=False, mask=mask) + frame(
                0x0, payload[cut:], mask=mask
            )
            continue
        out += frame(opcode, payload, fin=fin, mask=mask, rsv=rsv)
    if draw(st.integers(0, 7)) == 0:
        out = out[: draw(st.integers(0, len(out)))]
    return out


_METHODS = ["GET", "POST", "PUT", "CONNECT", "HEAD", "OPTIONS", "G ET", "", "\u00e9"]
_TARGETS = [
    "/",
    "/hc1",
    "/hc1/x?y=1",
    "/$hc/hc1?sb-hc-action=listen",
    "/$hc/hc1?sb-hc-action=connect",
]
_TARGETS += [f"/$hc/hc1?sb-hc-action=connect&sb-hc-token=SharedAccessSignature%20sig%3D{MARKER}"]
_TARGETS += ["/health", "/stats", "*", "http://x/", "/a b", "/\udcff", "/%zz", "/$presence"]
_VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1x", "", "HTTP/0.9"]
_REQUEST_HEADERS: dict[str, list[str]] = {
    "Host": ["contoso.servicebus.windows.net", "localhost:9090", "", "a b"],
    "Upgrade": ["websocket", "WebSocket", "h2c"],
    "Connection": ["Upgrade", "upgrade, keep-alive", "close", "keep-alive"],
    "Sec-WebSocket-Key": [base64.b64encode(NONCE).decode(), "short", ""],
    "Sec-WebSocket-Version": ["13", "8"],
    "Sec-WebSocket-Protocol": ["a, b", "a", ",", ""],
    "Content-Length": ["0", "5", "-1", "99999999999999999999", "5, 5", "5, 6", "x"],
    "Transfer-Encoding": ["chunked", "gzip, chunked", "identity", "chunked, gzip"],
    "Expect": ["100-continue", "other"],
    "ServiceBusAuthorization": [f"SharedAccessSignature sr=x&sig={MARKER}&se=1&skn=k"],
    "Authorization": [f"SharedAccessSignature sr=x&sig={MARKER}&se=1&skn=k", "Bearer x"],
    "X Bad": ["1"],
    "": ["1"],
}


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        target = draw(st.sampled_from(_TARGETS))
        head = websocket_upgrade(target, subprotocols=draw(st.sampled_from([None, "a, b", "a"])))
        return head + draw(_frames(masked=True))
    names = draw(st.lists(st.sampled_from(sorted(_REQUEST_HEADERS)), max_size=6))
    headers = [
        (name, draw(st.one_of(st.sampled_from(_REQUEST_HEADERS[name]), st.text(max_size=5))))
        for name in names
    ]
    body = draw(
        st.sampled_from(
            [b"", b"hello", chunked(b"hel", b"lo"), b"5\r\nhello\r\n", b"zz\r\n", b"0\r\n\r\n"]
        )
    )
    return http_request(
        draw(st.sampled_from(_METHODS)),
        draw(st.one_of(st.sampled_from(_TARGETS), _text_from(_URL_PIECES, max_size=3))),
        headers,
        body,
        version=draw(st.sampled_from(_VERSIONS)),
        newline=draw(st.sampled_from(["\r\n", "\r\n", "\n"])),
    )


@st.composite
def _http_server_input(draw: st.DrawFn) -> bytes:
    requests = draw(st.lists(_request(), min_size=1, max_size=3))
    return bytes([draw(st.integers(0, 255))]) + b"".join(requests)


@st.composite
def _client_channel_input(draw: st.DrawFn) -> bytes:
    options = draw(st.integers(0, 255))
    kind = draw(st.integers(0, 5))
    if kind == 0:
        answer = upgrade_answer(
            status=draw(
                st.sampled_from(
                    ["101 Switching Protocols", "101 ", "101 Switching Protocols\r\nX: y"]
                )
            ),
            subprotocol=draw(st.sampled_from([None, "a", "c", ""])),
        )
    elif kind == 1:
        answer = upgrade_answer(key=draw(st.sampled_from([b"", b"wrong", accept_key(b"other")])))
    elif kind == 2:
        extra = [
            (
                draw(
                    st.sampled_from(
                        [
                            "Sec-WebSocket-Extensions",
                            "Upgrade",
                            "Transfer-Encoding",
                            "Content-Length",
                        ]
                    )
                ),
                draw(st.sampled_from(["permessage-deflate", "h2c", "chunked", "5"])),
            )
        ]
        answer = upgrade_answer(extra=extra)
    else:
        status = draw(
            st.sampled_from(
                [
                    "400 Bad Request",
                    "401 Unauthorized",
                    "403 Forbidden",
                    "403 Quota exceeded",
                    "404 No listener",
                    "404 Not Found",
                    "408 x",
                    "410 Gone",
                    "429 x",
                    "500 x",
                    "502 x",
                    "503 x",
                    "504 x",
                    "302 Found",
                    "200 OK",
                    "199 x",
                    "600 x",
                    "101",
                    "1000 x",
                    " x",
                ]
            )
        )
        body = draw(
            st.sampled_from(
                [
                    b"",
                    b'{"error":{"message":"TrackingId:1, no"}}',
                    b'{"error":1}',
                    b"\xff",
                    b"x" * 100,
                ]
            )
        )
        length = draw(st.sampled_from([str(len(body)), "0", "1000"]))
        answer = f"HTTP/1.1 {status}\r\nContent-Length: {length}\r\n\r\n".encode() + body
    if draw(st.integers(0, 4)) == 0:
        answer = answer.replace(b"\r\n", b"\n")
    return bytes([options]) + answer + draw(_frames(masked=False))


@st.composite
def _server_websocket_input(draw: st.DrawFn) -> bytes:
    return bytes([draw(st.integers(0, 255))]) + draw(_frames(masked=True))


# -- the relay's configuration -----------------------------------------------------------------

_TOML_SCALARS: st.SearchStrategy[object] = st.one_of(
    st.text(max_size=10),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(),
    st.booleans(),
    st.sampled_from(["127.0.0.1", " ::1", "", "Listen", "Send", "Manage", "listen", MARKER]),
)
_SETTINGS = ["host", "port", "max_listeners_per_entity", "rendezvous_timeout", "request_timeout"]
_SETTINGS += ["connection_rate", "connection_burst", "message_rate", "message_burst", "unknown"]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


@st.composite
def _rule_table(draw: st.DrawFn, header: str) -> str:
    lines = [f"[[{header}]]"]
    fields = {
        "name": st.one_of(
            st.sampled_from(["root", "send-only", "a b", "x=y", "ROOT", ""]), _TOML_SCALARS
        ),
        "primary_key": st.one_of(
            st.sampled_from([f"{MARKER}=", f"{MARKER}+/==", ""]), _TOML_SCALARS
        ),
        "secondary_key": st.one_of(st.sampled_from([f"2{MARKER}", ""]), _TOML_SCALARS),
        "rights": st.one_of(
            st.lists(
                st.sampled_from(["Listen", "Send", "Manage", "manage", "Own", "K\u212aLVIN"]),
                max_size=3,
            ),
            _TOML_SCALARS,
        ),
    }
    for key in draw(st.lists(st.sampled_from([*fields, "extra"]), unique=True, max_size=5)):
        value = draw(fields.get(key, _TOML_SCALARS))
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines)


_NAMESPACE_NAMES = ["localhost", "Contoso.servicebus.windows.net", "[::1]", "ns:9090", "a..b", ""]
_ENTITY_NAMES = ["hc1", "a/b", "$hc", "a//b", "\u00e9", "HC1"]


@st.composite
def _config_text(draw: st.DrawFn) -> str:
    def line(key: str, choices: st.SearchStrategy[object]) -> str:
        return f"{key} = {_toml_value(draw(st.one_of(choices, _TOML_SCALARS)))}"

    parts = []
    if draw(st.booleans()):
        parts.append("[relay]")
        for key in draw(st.lists(st.sampled_from(_SETTINGS), unique=True, max_size=4)):
            parts.append(line(key, _TOML_SCALARS))
    for _ in range(draw(st.integers(0, 2))):
        parts += ["[[namespace]]", line("name", st.sampled_from(_NAMESPACE_NAMES))]
        if draw(st.booleans()):
            parts.append(line("default", st.booleans()))
        for _ in range(draw(st.integers(0, 2))):
            parts.append(draw(_rule_table("namespace.rule")))
        for _ in range(draw(st.integers(0, 2))):
            parts += ["[[namespace.entity]]", line("name", st.sampled_from(_ENTITY_NAMES))]
            if draw(st.booleans()):
                parts.append(line("requires_client_authorization", st.booleans()))
            for _ in range(draw(st.integers(0, 2))):
                parts.append(draw(_rule_table("namespace.entity.rule")))
    if draw(st.integers(0, 9)) == 0:
        depth = draw(st.integers(1, 3000))
        parts.append("deep = " + "[" * depth + "]" * depth)
    return "\n".join(parts) + "\n"


def _relay_config_inputs() -> st.SearchStrategy[bytes]:
    return _encoded(_config_text())


# -- mutations ---------------------------------------------------------------------------------

_TOKENS = [piece.encode() for piece in _URL_PIECES] + _RAW_PIECES
_TOKENS += [b";", b'"', b"{", b"}", b"[", b"]", b"\\u0000", b"\\ud800", b": ", b"\r\n\r\n"]
_TOKENS += [b"\x81", b"\x88\x00", b"\x89\x00", b"\x00" * 8, b"HTTP/1.1", b"chunked", b"="]


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A seed with a few random edits."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.integers(0, 6))
        if edit == 0:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif edit == 1:
            del data[at : at + draw(st.integers(1, 16))]
        elif edit == 2 and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif edit == 3:
            end = min(len(data), at + draw(st.integers(1, 32)))
            data[at:at] = data[at:end]
        elif edit == 4:
            data[at:at] = draw(st.sampled_from(_TOKENS))
        elif edit == 5:
            other = draw(st.sampled_from(seeds))
            data[at:] = other[draw(st.integers(0, len(other))) :]
        else:
            del data[at:]
    return bytes(data)


_STRUCTURED: dict[str, Callable[[], st.SearchStrategy[bytes]]] = {
    "sas": _sas_inputs,
    "uris": _uri_inputs,
    "connection_string": _connection_string_inputs,
    "messages": _message_inputs,
    "http_server": _http_server_input,
    "client_channel": _client_channel_input,
    "server_websocket": _server_websocket_input,
    "relay_config": _relay_config_inputs,
}


def input_strategy(target: str, seeds: Sequence[bytes] = ()) -> st.SearchStrategy[bytes]:
    """Every kind of input for ``target``: raw bytes, structured inputs, seeds and mutants."""
    kinds = [st.binary(max_size=_MAX_RAW)]
    structured = _STRUCTURED.get(target)
    if structured is not None:
        kinds += [structured(), structured()]
    if seeds:
        kinds += [st.sampled_from(list(seeds)), mutated(seeds), mutated(seeds)]
    return st.one_of(kinds)

"""The control-channel messages (accept, request, response, renewToken) as values, and their codec.

Listener and relay exchange small JSON text messages on the control channel. Both roles of the
kernel decode every one of them, so this module turns them into frozen value objects with a single
``json.loads`` and direct dictionary access, checks exactly what the protocol requires, ignores
(and reports) what a newer peer may add, and encodes values back to compact JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from .errors import LocalProtocolError, RemoteProtocolError
from .names import ascii_lower

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HOP_BY_HOP_HEADERS",
    "INLINE_BODY_LIMIT",
    "INLINE_HEADERS_LIMIT",
    "Accept",
    "ControlMessage",
    "Decoded",
    "Headers",
    "RemoteEndpoint",
    "RenewToken",
    "Request",
    "Response",
    "UnknownMessage",
    "decode_message",
    "encode_message",
    "reason_phrase",
]

INLINE_BODY_LIMIT = 65536
"""Bytes of request or response body that may travel on the control channel itself."""

INLINE_HEADERS_LIMIT = 32768
"""Bytes of request headers the relay sends inline; larger requests go through a rendezvous."""

DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024
"""Largest control message (in UTF-8 bytes) :func:`decode_message` accepts by default."""

HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "close",
        "keep-alive",
        "proxy-connection",
    }
)
"""Lower-case names of headers the relay frames itself; a response must not carry them."""

_EXCERPT_LENGTH = 200

_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

# Shown as "<redacted>" by Headers.__repr__: these carry credentials or sessions.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "servicebusauthorization", "cookie", "set-cookie"}
)


def _is_token(name: str) -> bool:
    return bool(name) and _TOKEN_CHARS.issuperset(name)


class Headers(Mapping[str, str]):
    """Immutable, ordered HTTP headers with case-insensitive names.

    Built from a mapping or from ``(name, value)`` pairs. Iteration, ``items()`` and encoding keep
    each name as first given; a name given again (in any case) has its value appended after
    ``", "``, as HTTP list semantics allow. Equality with any mapping ignores the case of names.
    A name or value that is not a str raises :class:`TypeError`, a name that is not an HTTP token
    :class:`ValueError`. ``repr`` hides the values of credential and cookie headers.
    """

    __slots__ = ("_names", "_values")

    _names: dict[str, str]
    _values: dict[str, str]

    def __init__(self, source: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        if isinstance(source, Headers):
            self._names = source._names
            self._values = source._values
            return
        pairs: Iterable[object] = source.items() if isinstance(source, Mapping) else source
        self._names = {}
        self._values = {}
        for pair in pairs:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"headers must be (name, value) pairs, not {type(pair).__name__}")
            name, value = pair
            if not isinstance(name, str):
                raise TypeError(f"a header name must be a str, not {type(name).__name__}")
            if not isinstance(value, str):
                raise TypeError(
                    f"header {name!r} must have a str value, not {type(value).__name__}"
                )
            if not _is_token(name):
                raise ValueError(f"{name!r} is not a valid header name (an RFC 9110 token)")
            _add_header(self._names, self._values, name, value)

    @classmethod
    def _adopt(cls, names: dict[str, str], values: dict[str, str]) -> Headers:
        """Wrap dictionaries already validated and joined by the caller, without copying."""
        headers = cls.__new__(cls)
        headers._names = names
        headers._values = values
        return headers

    def __getitem__(self, name: str) -> str:
        folded = ascii_lower(name) if isinstance(name, str) else None
        if folded is None or folded not in self._values:
            raise KeyError(name)
        return self._values[folded]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and ascii_lower(name) in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.values())

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._values == other._values
        if not isinstance(other, Mapping):
            return NotImplemented
        folded: dict[str, object] = {}
        for name, value in other.items():
            key = ascii_lower(name) if isinstance(name, str) else None
            if key is None or key in folded:
                return False
            folded[key] = value
        return folded == self._values

    def __hash__(self) -> int:
        return hash(frozenset(self._values.items()))

    def __repr__(self) -> str:
        shown = {
            name: "<redacted>" if folded in _SECRET_HEADERS else self._values[folded]
            for folded, name in self._names.items()
        }
        return f"Headers({shown!r})"

    def without(self, names: Iterable[str]) -> Headers:
        """Return a copy without the headers called any of ``names`` (in any case)."""
        if isinstance(names, str):
            raise TypeError("without() takes an iterable of names, not a single str")
        dropped = {ascii_lower(name) for name in names}
        kept = [folded for folded in self._names if folded not in dropped]
        return Headers._adopt(
            {folded: self._names[folded] for folded in kept},
            {folded: self._values[folded] for folded in kept},
        )


def _add_header(names: dict[str, str], values: dict[str, str], name: str, value: str) -> None:
    folded = ascii_lower(name)
    if folded in values:
        values[folded] = f"{values[folded]}, {value}"
    else:
        names[folded] = name
        values[folded] = value


_NO_HEADERS = Headers()


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoteEndpoint:
    """The network address of the sender, as the relay saw it."""

    address: str
    port: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Accept:
    """A sender wants a WebSocket: connect to ``address`` to accept (or to its reject URL)."""

    address: str
    id: str
    connect_headers: Headers
    remote_endpoint: RemoteEndpoint | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """An HTTP request from a sender; ``body`` is ``None`` when it must be read on ``address``."""

    address: str
    id: str | None
    request_target: str | None
    method: str | None
    request_headers: Headers
    remote_endpoint: RemoteEndpoint | None = None
    body: bool | None

    @property
    def needs_rendezvous(self) -> bool:
        """True when the request is too big or streamed: read it by connecting to ``address``."""
        return self.body is None


@dataclass(frozen=True, kw_only=True, slots=True)
class Response:
    """The listener's answer to the request ``request_id``; ``body`` says whether one follows."""

    request_id: str
    status_code: int
    status_description: str | None = None
    response_headers: Headers = _NO_HEADERS
    body: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class RenewToken:
    """A fresh token for the control channel, sent before the current one expires."""

    token: str = field(repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class UnknownMessage:
    """A message of a type this version does not know; the protocol says to ignore it."""

    kind: str
    excerpt: str


ControlMessage: TypeAlias = Accept | Request | Response | RenewToken | UnknownMessage


@dataclass(frozen=True, kw_only=True, slots=True)
class Decoded:
    """A decoded message and the dotted paths of the unknown fields that were ignored in it.

    Paths are in document order at the top level (``"trace"``); the message's own unknown fields
    (``"accept.priority"``) come where the message stands, before those of its remote endpoint.
    For an :class:`UnknownMessage`, they are the top-level keys after its ``kind``.
    """

    message: ControlMessage
    ignored_fields: tuple[str, ...]


def decode_message(text: str | bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Decoded:
    """Decode one control message.

    ``text`` is the payload of a WebSocket text message, as a str or as its UTF-8 bytes.
    Raises :class:`~hyco_core.errors.RemoteProtocolError` with the close code to use: 1008 when
    the message is larger than ``max_size`` bytes, 1007 when it is not UTF-8, 1002 otherwise.
    """
    source = _checked_source(text, max_size)
    try:
        document = json.loads(
            source, object_pairs_hook=_object_without_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise RemoteProtocolError(
            f"control message is not valid JSON: {exc.msg} at character {exc.pos}"
        ) from None
    except ValueError:
        raise RemoteProtocolError(
            "control message is not acceptable JSON: it holds a number too long to convert"
        ) from None
    except RecursionError:
        raise RemoteProtocolError(
            "control message is not acceptable JSON: nested too deeply"
        ) from None
    if not isinstance(document, dict):
        raise RemoteProtocolError(
            f"a control message must be a JSON object, not {_json_type(document)}"
        )
    kind: str | None = None
    ignored: list[str] = []
    position = 0
    for key in document:
        if key in _DECODERS:
            if kind is not None:
                raise RemoteProtocolError(
                    f"a control message must hold one message, but it holds both {kind!r} "
                    f"and {key!r}"
                )
            kind = key
            position = len(ignored)
        else:
            ignored.append(key)
    if kind is None:
        return Decoded(
            message=UnknownMessage(
                kind=ignored[0] if ignored else "", excerpt=source[:_EXCERPT_LENGTH]
            ),
            ignored_fields=tuple(ignored[1:]),
        )
    inner: list[str] = []
    message = _DECODERS[kind](document[kind], inner)
    ignored[position:position] = inner
    return Decoded(message=message, ignored_fields=tuple(ignored))


def _checked_source(text: str | bytes, max_size: int) -> str:
    """Return the message as str after checking its UTF-8 size and encoding, before any parse."""
    if isinstance(text, str):
        size = len(text)
        if size <= max_size and not text.isascii():
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise RemoteProtocolError(
                    f"control message is not valid Unicode (unpaired surrogate at {exc.start})",
                    close_code=1007,
                ) from None
        _check_size(size, max_size)
        return text
    _check_size(len(text), max_size)
    try:
        return str(text, "utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(
            f"control message is not valid UTF-8 (at byte {exc.start})", close_code=1007
        ) from None


def _check_size(size: int, max_size: int) -> None:
    if size > max_size:
        raise RemoteProtocolError(
            f"control message of at least {size} bytes exceeds the limit of {max_size} bytes",
            close_code=1008,
        )


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Peers whose JSON parser keeps the first of two equal keys would read another message than
    # one keeping the last; refusing duplicates leaves no room for that disagreement.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        repeated = next(key for key, count in counts.items() if count > 1)
        raise RemoteProtocolError(
            f"control message repeats the key {_short(repeated)} in one JSON object"
        )
    return obj


def _reject_constant(name: str) -> object:
    raise RemoteProtocolError(f"control message is not valid JSON: {name} is not a JSON value")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _short(text: str) -> str:
    return repr(text if len(text) <= 64 else text[:64] + "...")


def _wrong(path: str, expected: str, value: object) -> RemoteProtocolError:
    # Values are never quoted: they may be tokens, and the type is what the peer got wrong.
    return RemoteProtocolError(f"{path} must be {expected}, not {_json_type(value)}")


def _fields(
    value: object, path: str, known: frozenset[str], ignored: list[str]
) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _wrong(path, "an object", value)
    for key in value:
        if key not in known:
            ignored.append(f"{path}.{key}")
    return value


def _text(value: str, path: str) -> str:
    # JSON escapes can spell unpaired surrogates; such a str cannot be sent or encoded later.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RemoteProtocolError(
                f"{path} holds an unpaired surrogate, which is not text"
            ) from None
    return value


def _required_text(fields: dict[str, object], name: str, path: str) -> str:
    value = fields.get(name)
    if value is None:
        raise RemoteProtocolError(f"{path}.{name} is required")
    if not isinstance(value, str):
        raise _wrong(f"{path}.{name}", "a string", value)
    return _text(value, f"{path}.{name}")


def _optional_text(fields: dict[str, object], name: str, path: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _wrong(f"{path}.{name}", "a string", value)
    return _text(value, f"{path}.{name}")


def _optional_bool(fields: dict[str, object], name: str, path: str) -> bool | None:
    value = fields.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise _wrong(f"{path}.{name}", "true or false", value)


def _number(value: object, path: str, low: int, high: int, max_digits: int) -> int:
    """Read an integer in ``low..high`` given as a JSON number or as a string of ASCII digits."""
    if type(value) is int:
        number = value
    elif (
        isinstance(value, str)
        and 0 < len(value) <= max_digits
        and value.isascii()
        and value.isdigit()
    ):
        number = int(value)
    else:
        raise _wrong(path, f"an integer from {low} to {high}", value)
    if not low <= number <= high:
        raise RemoteProtocolError(f"{path} must be an integer from {low} to {high}")
    return number


def _decode_headers(value: object, path: str) -> Headers:
    if value is None:
        return _NO_HEADERS
    if not isinstance(value, dict):
        raise _wrong(path, "an object of strings", value)
    names: dict[str, str] = {}
    values: dict[str, str] = {}
    for name, text in value.items():
        if not _is_token(name):
            raise RemoteProtocolError(
                f"{path} has a header name that is not a token: {_short(name)}"
            )
        if not isinstance(text, str):
            raise _wrong(f"{path}.{name}", "a string", text)
        _add_header(names, values, name, _text(text, f"{path}.{name}"))
    return Headers._adopt(names, values)


_ENDPOINT_FIELDS = frozenset({"address", "port"})


def _decode_endpoint(value: object, path: str, ignored: list[str]) -> RemoteEndpoint | None:
    if value is None:
        return None
    fields = _fields(value, path, _ENDPOINT_FIELDS, ignored)
    # The .NET data contract omits an empty address and a zero port, so absence means those.
    address = _optional_text(fields, "address", path)
    port = fields.get("port")
    return RemoteEndpoint(
        address=address or "",
        port=0 if port is None else _number(port, f"{path}.port", 0, 65535, 5),
    )


_ACCEPT_FIELDS = frozenset({"address", "id", "connectHeaders", "remoteEndpoint"})
_REQUEST_FIELDS = frozenset(
    {"address", "id", "requestTarget", "method", "remoteEndpoint", "requestHeaders", "body"}
)
_RESPONSE_FIELDS = frozenset(
    {"requestId", "statusCode", "statusDescription", "responseHeaders", "body"}
)
_RENEW_TOKEN_FIELDS = frozenset({"token"})


def _decode_accept(value: object, ignored: list[str]) -> Accept:
    fields = _fields(value, "accept", _ACCEPT_FIELDS, ignored)
    return Accept(
        address=_required_text(fields, "address", "accept"),
        id=_required_text(fields, "id", "accept"),
        connect_headers=_decode_headers(fields.get("connectHeaders"), "accept.connectHeaders"),
        remote_endpoint=_decode_endpoint(
            fields.get("remoteEndpoint"), "accept.remoteEndpoint", ignored
        ),
    )


def _decode_request(value: object, ignored: list[str]) -> Request:
    fields = _fields(value, "request", _REQUEST_FIELDS, ignored)
    return Request(
        address=_required_text(fields, "address", "request"),
        id=_optional_text(fields, "id", "request"),
        request_target=_optional_text(fields, "requestTarget", "request"),
        method=_optional_text(fields, "method", "request"),
        request_headers=_decode_headers(fields.get("requestHeaders"), "request.requestHeaders"),
        remote_endpoint=_decode_endpoint(
            fields.get("remoteEndpoint"), "request.remoteEndpoint", ignored
        ),
        body=_optional_bool(fields, "body", "request"),
    )


def _decode_response(value: object, ignored: list[str]) -> Response:
    fields = _fields(value, "response", _RESPONSE_FIELDS, ignored)
    request_id = _required_text(fields, "requestId", "response")
    status_code = fields.get("statusCode")
    if status_code is None:
        raise RemoteProtocolError("response.statusCode is required")
    return Response(
        request_id=request_id,
        status_code=_number(status_code, "response.statusCode", 100, 999, 3),
        status_description=_optional_text(fields, "statusDescription", "response"),
        response_headers=_decode_headers(fields.get("responseHeaders"), "response.responseHeaders"),
        body=_optional_bool(fields, "body", "response") or False,
    )


def _decode_renew_token(value: object, ignored: list[str]) -> RenewToken:
    fields = _fields(value, "renewToken", _RENEW_TOKEN_FIELDS, ignored)
    return RenewToken(token=_required_text(fields, "token", "renewToken"))


_DECODERS: dict[str, Callable[[object, list[str]], ControlMessage]] = {
    "accept": _decode_accept,
    "request": _decode_request,
    "response": _decode_response,
    "renewToken": _decode_renew_token,
}


def encode_message(message: Accept | Request | Response | RenewToken) -> str:
    """Encode a message as the compact JSON text of one control-channel text message.

    Raises :class:`~hyco_core.errors.LocalProtocolError` for a response the relay must refuse
    (status outside 100..999, an empty request id, a hop-by-hop header) and for text that has no
    UTF-8 form. Optional fields that are ``None`` are left out.
    """
    document: dict[str, object]
    if isinstance(message, Accept):
        accept: dict[str, object] = {
            "address": message.address,
            "id": message.id,
            "connectHeaders": _encode_headers(message.connect_headers),
        }
        if message.remote_endpoint is not None:
            accept["remoteEndpoint"] = _encode_endpoint(message.remote_endpoint)
        document = {"accept": accept}
    elif isinstance(message, Request):
        document = {"request": _encode_request(message)}
    elif isinstance(message, Response):
        document = {"response": _encode_response(message)}
    elif isinstance(message, RenewToken):
        document = {"renewToken": {"token": message.token}}
    else:
        raise TypeError(f"cannot encode {type(message).__name__}; only messages hyco sends")
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise LocalProtocolError(
                f"the {type(message).__name__} message holds an unpaired surrogate, "
                "which cannot be sent as UTF-8"
            ) from None
    return text


def _encode_headers(headers: Headers) -> dict[str, str]:
    return dict(zip(headers._names.values(), headers._values.values(), strict=True))


def _encode_endpoint(endpoint: RemoteEndpoint) -> dict[str, object]:
    return {"address": endpoint.address, "port": endpoint.port}


def _encode_request(message: Request) -> dict[str, object]:
    request: dict[str, object] = {"address": message.address}
    if message.id is not None:
        request["id"] = message.id
    if message.request_target is not None:
        request["requestTarget"] = message.request_target
    if message.method is not None:
        request["method"] = message.method
    if message.remote_endpoint is not None:
        request["remoteEndpoint"] = _encode_endpoint(message.remote_endpoint)
    # Left out when empty, so that a request announced for a rendezvous is only address and id.
    if message.request_headers:
        request["requestHeaders"] = _encode_headers(message.request_headers)
    if message.body is not None:
        request["body"] = message.body
    return request


def _encode_response(message: Response) -> dict[str, object]:
    if not message.request_id:
        raise LocalProtocolError("a response needs the id of the request it answers")
    status_code = message.status_code
    if type(status_code) is not int or not 100 <= status_code <= 999:
        raise LocalProtocolError(
            f"a response status code must be an integer from 100 to 999, not {status_code!r}"
        )
    for name in message.response_headers:
        if ascii_lower(name) in HOP_BY_HOP_HEADERS:
            raise LocalProtocolError(
                f"a response must not set the {name!r} header: the relay frames the HTTP "
                "response itself"
            )
    response: dict[str, object] = {"requestId": message.request_id, "statusCode": status_code}
    if message.status_description is not None:
        response["statusDescription"] = message.status_description
    response["responseHeaders"] = _encode_headers(message.response_headers)
    response["body"] = message.body
    return response


def reason_phrase(status_code: int) -> str:
    """Return the standard reason phrase of ``status_code`` (RFC 9110 and IANA), or ``""``."""
    return _REASON_PHRASES.get(status_code, "")


_REASON_PHRASES = {
    100: "Continue",
    101: "Switching Protocols",
    102: "Processing",
    103: "Early Hints",
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    207: "Multi-Status",
    208: "Already Reported",
    226: "IM Used",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    421: "Misdirected Request",
    422: "Unprocessable Content",
    423: "Locked",
    424: "Failed Dependency",
    425: "Too Early",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    510: "Not Extended",
    511: "Network Authentication Required",
}

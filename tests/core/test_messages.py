"""Tests of the control-message codec: every rule, the PROTOCOL.md examples, vectors, properties."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco_conformance.vectors import load_vectors
from hyco_core.errors import LocalProtocolError, RemoteProtocolError
from hyco_core.messages import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HOP_BY_HOP_HEADERS,
    INLINE_BODY_LIMIT,
    INLINE_HEADERS_LIMIT,
    Accept,
    ControlMessage,
    Decoded,
    Headers,
    RemoteEndpoint,
    RenewToken,
    Request,
    Response,
    UnknownMessage,
    decode_message,
    encode_message,
    reason_phrase,
)

VECTORS = load_vectors("control_messages")
SECRET = "SharedAccessSignature sr=x&sig=TOPSECRETSIGNATURE&se=1&skn=k"


def decode_error(text: str | bytes, **kwargs: Any) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as caught:
        decode_message(text, **kwargs)
    return caught.value


# -- vectors ---------------------------------------------------------------------------------------


def wire_form(message: ControlMessage) -> dict[str, Any]:
    """Describe a message the way the vectors do: wire names, nulls, headers as ordered pairs."""

    def pairs(headers: Headers) -> list[list[str]]:
        return [[name, value] for name, value in headers.items()]

    def endpoint(value: RemoteEndpoint | None) -> dict[str, Any] | None:
        return None if value is None else {"address": value.address, "port": value.port}

    if isinstance(message, Accept):
        return {
            "type": "accept",
            "address": message.address,
            "id": message.id,
            "connectHeaders": pairs(message.connect_headers),
            "remoteEndpoint": endpoint(message.remote_endpoint),
        }
    if isinstance(message, Request):
        return {
            "type": "request",
            "address": message.address,
            "id": message.id,
            "requestTarget": message.request_target,
            "method": message.method,
            "requestHeaders": pairs(message.request_headers),
            "remoteEndpoint": endpoint(message.remote_endpoint),
            "body": message.body,
        }
    if isinstance(message, Response):
        return {
            "type": "response",
            "requestId": message.request_id,
            "statusCode": message.status_code,
            "statusDescription": message.status_description,
            "responseHeaders": pairs(message.response_headers),
            "body": message.body,
        }
    if isinstance(message, RenewToken):
        return {"type": "renewToken", "token": message.token}
    return {"type": "unknown", "kind": message.kind, "excerpt": message.excerpt}


def vector_inputs(vector: dict[str, Any]) -> list[str | bytes]:
    """The vector's payload, plus the same payload as UTF-8 bytes when it has a UTF-8 form."""
    if "utf8_hex" in vector:
        return [bytes.fromhex(vector["utf8_hex"])]
    text: str = vector["text"]
    try:
        return [text, text.encode("utf-8")]
    except UnicodeEncodeError:
        return [text]


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    max_size = vector.get("max_size", DEFAULT_MAX_MESSAGE_SIZE)
    for payload in vector_inputs(vector):
        if "error_close_code" in vector:
            error = decode_error(payload, max_size=max_size)
            assert error.close_code == vector["error_close_code"], str(error)
            continue
        decoded = decode_message(payload, max_size=max_size)
        assert wire_form(decoded.message) == vector["message"]
        assert list(decoded.ignored_fields) == vector["ignored_fields"]
        if "reencoded" not in vector:
            continue
        assert not isinstance(decoded.message, UnknownMessage)
        if vector["reencoded"] is None:
            with pytest.raises(LocalProtocolError):
                encode_message(decoded.message)
        else:
            assert encode_message(decoded.message) == vector["reencoded"]
            assert decode_message(vector["reencoded"]).message == decoded.message


def test_vectors_cover_every_kind_of_outcome() -> None:
    outcomes = {vector.get("error_close_code", "ok") for vector in VECTORS}
    assert outcomes == {"ok", 1002, 1007, 1008}
    kinds = {vector["message"]["type"] for vector in VECTORS if "message" in vector}
    assert kinds == {"accept", "request", "response", "renewToken", "unknown"}
    assert all(vector["description"] for vector in VECTORS)


# -- PROTOCOL.md examples --------------------------------------------------------------------------

PROTOCOL_ACCEPT = """{"accept": {"address": "wss://.../$hc/hc1?sb-hc-action=accept&sb-hc-id=...",
            "id": "4cb542c3-..._G1",
            "connectHeaders": {"Sec-WebSocket-Key": "...", "Sec-WebSocket-Protocol": "a, b", "Host": "...", "X-Custom": "..."},
            "remoteEndpoint": {"address": "10.0.0.1", "port": 1234}}}"""  # noqa: E501

PROTOCOL_REQUEST = """{"request": {"address": "wss://.../$hc/hc1?sb-hc-action=request&sb-hc-id=...",
             "id": "42c34cb5-...", "requestTarget": "/hc1/abc?x=1", "method": "GET",
             "remoteEndpoint": {"address": "...", "port": 1234},
             "requestHeaders": {"Content-Type": "...", "User-Agent": "..."}, "body": true}}"""

PROTOCOL_RESPONSE = """{"response": {"requestId": "42c34cb5-...", "statusCode": 200, "statusDescription": "OK",
              "responseHeaders": {"Content-Type": "application/json"}, "body": true}}"""  # noqa: E501

PROTOCOL_RENEW_TOKEN = (
    '{"renewToken": {"token": "SharedAccessSignature sr=...&sig=...&se=...&skn=..."}}'
)


def test_protocol_accept_example() -> None:
    decoded = decode_message(PROTOCOL_ACCEPT)
    assert decoded == Decoded(
        message=Accept(
            address="wss://.../$hc/hc1?sb-hc-action=accept&sb-hc-id=...",
            id="4cb542c3-..._G1",
            connect_headers=Headers(
                {
                    "Sec-WebSocket-Key": "...",
                    "Sec-WebSocket-Protocol": "a, b",
                    "Host": "...",
                    "X-Custom": "...",
                }
            ),
            remote_endpoint=RemoteEndpoint(address="10.0.0.1", port=1234),
        ),
        ignored_fields=(),
    )
    assert isinstance(decoded.message, Accept)
    assert decoded.message.connect_headers["sec-websocket-protocol"] == "a, b"


def test_protocol_request_example() -> None:
    message = decode_message(PROTOCOL_REQUEST).message
    assert message == Request(
        address="wss://.../$hc/hc1?sb-hc-action=request&sb-hc-id=...",
        id="42c34cb5-...",
        request_target="/hc1/abc?x=1",
        method="GET",
        request_headers=Headers({"Content-Type": "...", "User-Agent": "..."}),
        remote_endpoint=RemoteEndpoint(address="...", port=1234),
        body=True,
    )
    assert isinstance(message, Request)
    assert not message.needs_rendezvous


def test_protocol_response_example() -> None:
    assert decode_message(PROTOCOL_RESPONSE).message == Response(
        request_id="42c34cb5-...",
        status_code=200,
        status_description="OK",
        response_headers=Headers({"Content-Type": "application/json"}),
        body=True,
    )


def test_protocol_renew_token_example() -> None:
    message = decode_message(PROTOCOL_RENEW_TOKEN).message
    assert message == RenewToken(token="SharedAccessSignature sr=...&sig=...&se=...&skn=...")


# -- decoding rules --------------------------------------------------------------------------------


def test_request_without_body_key_needs_rendezvous() -> None:
    message = decode_message('{"request":{"address":"wss://r","id":"1"}}').message
    assert isinstance(message, Request)
    assert message.needs_rendezvous
    assert message.body is None
    assert message.request_headers == {}
    assert (message.method, message.request_target, message.remote_endpoint) == (None, None, None)


@pytest.mark.parametrize("body", [True, False])
def test_request_with_body_key_is_complete(body: bool) -> None:
    text = json.dumps({"request": {"address": "a", "method": "POST", "body": body}})
    message = decode_message(text).message
    assert isinstance(message, Request)
    assert message.body is body
    assert not message.needs_rendezvous


def test_status_code_string_and_number_decode_alike() -> None:
    as_number = decode_message('{"response":{"requestId":"r","statusCode":503}}')
    as_string = decode_message('{"response":{"requestId":"r","statusCode":"503"}}')
    assert as_number == as_string
    assert isinstance(as_string.message, Response)
    assert '"statusCode":503' in encode_message(as_string.message)


def test_unknown_message_keeps_kind_and_short_excerpt() -> None:
    text = json.dumps({"future": "x" * 1000, "other": 1})
    decoded = decode_message(text)
    assert decoded.message == UnknownMessage(kind="future", excerpt=text[:200])
    assert decoded.ignored_fields == ("other",)


def test_unknown_message_from_bytes_has_text_excerpt() -> None:
    decoded = decode_message(b'{"ping":{}}')
    assert decoded.message == UnknownMessage(kind="ping", excerpt='{"ping":{}}')


def test_ignored_fields_follow_document_order() -> None:
    text = json.dumps(
        {
            "a": 1,
            "response": {"requestId": "r", "x": 1, "statusCode": 200, "y": 2},
            "b": 2,
        }
    )
    assert decode_message(text).ignored_fields == ("a", "response.x", "response.y", "b")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null", "not null"),
        ("true", "not a boolean"),
        ("1.5", "not a number"),
        ('"accept"', "not a string"),
        ("[]", "not an array"),
        ('{"accept":{"address":{},"id":"i"}}', "accept.address must be a string, not an object"),
        ('{"accept":{"address":"a"}}', "accept.id is required"),
        ('{"request":{"address":"a","body":"yes"}}', "request.body must be true or false"),
        ('{"response":{"requestId":"r"}}', "response.statusCode is required"),
        ('{"response":{"requestId":"r","statusCode":42}}', "from 100 to 999"),
        (
            '{"accept":{"address":"a","id":"i","remoteEndpoint":{"port":70000}}}',
            "accept.remoteEndpoint.port must be an integer from 0 to 65535",
        ),
        (
            '{"request":{"address":"a","requestHeaders":{"X-A":1}}}',
            "request.requestHeaders.X-A must be a string, not a number",
        ),
        ('{"request":{"address":"a","requestHeaders":{"a b":"1"}}}', "'a b'"),
        ('{"accept":{},"request":{}}', "both 'accept' and 'request'"),
        ('{"x":1,"x":2}', "repeats the key 'x'"),
        ('{"x":NaN}', "NaN"),
        ("{", "not valid JSON"),
        ('{"accept":{"address":"\\udfff","id":"i"}}', "accept.address holds an unpaired surrogate"),
    ],
)
def test_error_messages_say_what_was_wrong(text: str, expected: str) -> None:
    error = decode_error(text)
    assert error.close_code == 1002
    assert expected in str(error)


def test_long_key_is_shortened_in_error() -> None:
    key = "k" * 1000
    error = decode_error(f'{{"{key}":1,"{key}":2}}')
    assert len(str(error)) < 200


def test_deep_nesting_is_a_protocol_error() -> None:
    depth = 100_000
    error = decode_error('{"x":' + "[" * depth + "]" * depth + "}")
    assert error.close_code == 1002
    assert "nested too deeply" in str(error)


def test_number_too_long_is_a_protocol_error() -> None:
    error = decode_error('{"x":' + "9" * 5000 + "}")
    assert error.close_code == 1002
    assert "too long" in str(error)


def test_oversized_message_closes_with_1008_before_parsing() -> None:
    error = decode_error(b"\xff" * 11, max_size=10)
    assert error.close_code == 1008
    assert "10 bytes" in str(error)
    assert decode_error("x" * (DEFAULT_MAX_MESSAGE_SIZE + 1)).close_code == 1008


def test_size_of_text_is_counted_in_utf8_bytes() -> None:
    text = '{"x":"' + "\u20ac" * 10 + '"}'  # 18 characters, 38 bytes
    assert decode_error(text, max_size=37).close_code == 1008
    assert decode_error(text, max_size=len(text) - 1).close_code == 1008
    assert decode_message(text, max_size=38).message == UnknownMessage(kind="x", excerpt=text)


def test_invalid_utf8_closes_with_1007() -> None:
    error = decode_error(b'{"x":"\xc3\x28"}')
    assert error.close_code == 1007
    assert "byte 6" in str(error)


def test_text_with_lone_surrogate_closes_with_1007() -> None:
    error = decode_error('{"x":"\udc80"}')
    assert error.close_code == 1007


@pytest.mark.parametrize(
    "text",
    [
        '{"renewToken":{"token":"%s"},"accept":{}}',
        '{"renewToken":{"token":"%s","token":"%s"}}',
        '{"renewToken":{"token":"%s"},"x":NaN}',
        '{"renewToken":{"token":"%s"},"renewToken":1}',
        '{"renewToken":{"token":"%s"},"y":[',
    ],
)
def test_errors_never_show_the_token(text: str) -> None:
    error = decode_error(text.replace("%s", SECRET))
    assert "TOPSECRET" not in str(error)
    assert "TOPSECRET" not in repr(error)


def test_renew_token_repr_hides_the_token() -> None:
    message = decode_message(json.dumps({"renewToken": {"token": SECRET}})).message
    assert "TOPSECRET" not in repr(message)
    assert repr(message) == "RenewToken()"


# -- encoding --------------------------------------------------------------------------------------


def test_encoding_is_compact_camel_case_and_omits_none() -> None:
    text = encode_message(
        Request(
            address="wss://a",
            id=None,
            request_target="/p",
            method="PUT",
            request_headers=Headers([("Content-Type", "text/plain")]),
            body=False,
        )
    )
    assert text == (
        '{"request":{"address":"wss://a","requestTarget":"/p","method":"PUT",'
        '"requestHeaders":{"Content-Type":"text/plain"},"body":false}}'
    )


def test_encoding_writes_unicode_unescaped() -> None:
    text = encode_message(RenewToken(token="\u00e9\u20ac"))
    assert text == '{"renewToken":{"token":"\u00e9\u20ac"}}'


def test_response_encoding_uses_defaults() -> None:
    text = encode_message(Response(request_id="r", status_code=404))
    expected = '{"response":{"requestId":"r","statusCode":404,"responseHeaders":{},"body":false}}'
    assert text == expected


def test_accept_encoding_always_has_connect_headers() -> None:
    text = encode_message(Accept(address="a", id="i", connect_headers=Headers()))
    assert text == '{"accept":{"address":"a","id":"i","connectHeaders":{}}}'


@pytest.mark.parametrize("status_code", [99, 1000, 0, -200, True])
def test_response_status_code_must_be_100_to_999(status_code: int) -> None:
    with pytest.raises(LocalProtocolError, match="100 to 999"):
        encode_message(Response(request_id="r", status_code=status_code))


def test_response_needs_a_request_id() -> None:
    with pytest.raises(LocalProtocolError, match="id of the request"):
        encode_message(Response(request_id="", status_code=200))


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP_HEADERS))
def test_response_must_not_set_hop_by_hop_headers(name: str) -> None:
    headers = Headers([("X-Fine", "1"), (name.title(), "v")])
    with pytest.raises(LocalProtocolError, match=name.title()):
        encode_message(Response(request_id="r", status_code=200, response_headers=headers))


def test_encoding_refuses_text_without_utf8_form() -> None:
    with pytest.raises(LocalProtocolError, match="unpaired surrogate") as caught:
        encode_message(RenewToken(token="\ud800" + SECRET))
    assert "TOPSECRET" not in str(caught.value)


def test_unknown_message_cannot_be_encoded() -> None:
    with pytest.raises(TypeError, match="UnknownMessage"):
        encode_message(UnknownMessage(kind="x", excerpt="{}"))  # type: ignore[arg-type]


# -- Headers ---------------------------------------------------------------------------------------


def test_headers_lookup_ignores_case_and_keeps_original_names() -> None:
    headers = Headers([("Content-Type", "text/plain"), ("X-Trace", "1")])
    assert headers["content-type"] == headers["CONTENT-TYPE"] == "text/plain"
    assert "x-TRACE" in headers
    assert list(headers) == ["Content-Type", "X-Trace"]
    assert list(headers.items()) == [("Content-Type", "text/plain"), ("X-Trace", "1")]
    assert headers.get("missing") is None
    assert len(headers) == 2


def test_headers_repeated_names_are_joined_at_first_position() -> None:
    headers = Headers([("Accept", "a"), ("X", "1"), ("ACCEPT", "b"), ("accept", "c")])
    assert list(headers.items()) == [("Accept", "a, b, c"), ("X", "1")]


def test_headers_from_mapping_and_from_headers() -> None:
    headers = Headers({"A": "1", "a": "2"})
    assert dict(headers) == {"A": "1, 2"}
    copy = Headers(headers)
    assert copy == headers
    assert list(copy.items()) == list(headers.items())


def test_headers_equality_ignores_case_of_names_only() -> None:
    headers = Headers({"Content-Type": "text/plain"})
    assert headers == {"content-type": "text/plain"}
    assert headers == Headers({"CONTENT-TYPE": "text/plain"})
    assert headers != {"content-type": "TEXT/PLAIN"}
    assert headers != {"Content-Type": "text/plain", "X": "1"}
    assert Headers({"A": "1", "B": "1"}) != {"A": "1", "a": "1"}
    assert Headers({"A": "1"}) != {1: "1"}
    assert headers != [("Content-Type", "text/plain")]
    assert Headers() == {}


def test_headers_equality_ignores_order_like_dict() -> None:
    assert Headers([("A", "1"), ("B", "2")]) == Headers([("B", "2"), ("A", "1")])


def test_headers_are_hashable_consistently_with_equality() -> None:
    first = Headers({"Content-Type": "a", "X": "b"})
    second = Headers([("x", "b"), ("content-type", "a")])
    assert hash(first) == hash(second)
    assert len({first, second}) == 1


def test_headers_are_immutable() -> None:
    headers = Headers({"A": "1"})
    with pytest.raises(TypeError):
        headers["A"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        del headers["A"]  # type: ignore[attr-defined]
    assert not hasattr(headers, "__dict__")
    assert headers == {"A": "1"}


def test_headers_repr_is_readable_and_hides_credentials() -> None:
    headers = Headers(
        [
            ("Content-Type", "text/plain"),
            ("Authorization", SECRET),
            ("ServiceBusAuthorization", "s"),
        ]
    )
    text = repr(headers)
    assert text.startswith("Headers({'Content-Type': 'text/plain'")
    assert "'Authorization': '<redacted>'" in text
    assert "TOPSECRET" not in text
    assert repr(Headers({"X-A": "1"})) == "Headers({'X-A': '1'})"


def test_headers_missing_and_odd_keys_raise_key_error() -> None:
    headers = Headers({"k": "v"})
    with pytest.raises(KeyError):
        headers["missing"]
    with pytest.raises(KeyError):
        headers[1]  # type: ignore[index]
    # KELVIN SIGN lower-cases to "k"; no header name can contain it.
    with pytest.raises(KeyError):
        headers["\u212a"]
    assert "\u212a" not in headers
    not_a_name: object = 1
    assert not_a_name not in headers


def test_headers_without_removes_names_in_any_case() -> None:
    headers = Headers([("Host", "h"), ("Content-Type", "t"), ("Connection", "close")])
    assert list(headers.without(["host", "CONNECTION", "absent", "\u212a"]).items()) == [
        ("Content-Type", "t")
    ]
    assert headers.without(HOP_BY_HOP_HEADERS) == {"Content-Type": "t"}
    assert headers.without([]) == headers
    assert len(headers) == 3


def test_headers_without_refuses_a_single_string() -> None:
    with pytest.raises(TypeError, match="iterable of names"):
        Headers({"Host": "h"}).without("host")


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ({"A": 1}, "must have a str value, not int"),
        ([("A", None)], "not NoneType"),
        ([(b"A", "1")], "name must be a str, not bytes"),
        ([("A", "1", "2")], "pairs"),
        (["AB"], "pairs, not str"),
        ([1], "pairs, not int"),
    ],
)
def test_headers_refuse_non_str_with_type_error(source: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        Headers(source)


@pytest.mark.parametrize("name", ["", "Bad Name", "X:", "X\r\nY", "caf\u00e9", "(x)"])
def test_headers_refuse_names_that_are_not_tokens(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid header name"):
        Headers([(name, "v")])


def test_headers_accept_lists_as_pairs() -> None:
    assert Headers([["A", "1"]]) == {"a": "1"}  # type: ignore[list-item]


# -- reason phrases and constants ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status_code", "phrase"),
    [
        (100, "Continue"),
        (200, "OK"),
        (204, "No Content"),
        (404, "Not Found"),
        (410, "Gone"),
        (413, "Content Too Large"),
        (429, "Too Many Requests"),
        (500, "Internal Server Error"),
        (502, "Bad Gateway"),
        (504, "Gateway Timeout"),
        (599, ""),
        (999, ""),
        (0, ""),
    ],
)
def test_reason_phrase(status_code: int, phrase: str) -> None:
    assert reason_phrase(status_code) == phrase


def test_limits() -> None:
    assert INLINE_BODY_LIMIT == 64 * 1024
    assert INLINE_HEADERS_LIMIT == 32 * 1024
    assert DEFAULT_MAX_MESSAGE_SIZE == 256 * 1024
    assert sorted(HOP_BY_HOP_HEADERS) == [
        "close",
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]


def test_values_are_frozen() -> None:
    message = Response(request_id="r", status_code=200)
    with pytest.raises(AttributeError):
        message.status_code = 500  # type: ignore[misc]


# -- properties ------------------------------------------------------------------------------------

TOKEN_ALPHABET = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KNOWN_KEYS = ["accept", "request", "response", "renewToken"]
FIELD_NAMES = [
    "address",
    "id",
    "connectHeaders",
    "remoteEndpoint",
    "requestTarget",
    "method",
    "requestHeaders",
    "body",
    "requestId",
    "statusCode",
    "statusDescription",
    "responseHeaders",
    "token",
    "port",
]

header_names = st.text(TOKEN_ALPHABET, min_size=1, max_size=12)
header_pairs = st.lists(st.tuples(header_names, st.text(max_size=20)), max_size=6)
headers = header_pairs.map(Headers)
endpoints = st.builds(
    RemoteEndpoint, address=st.text(max_size=20), port=st.integers(min_value=0, max_value=65535)
)
optional_text = st.none() | st.text(max_size=30)

accepts = st.builds(
    Accept,
    address=st.text(max_size=40),
    id=st.text(max_size=20),
    connect_headers=headers,
    remote_endpoint=st.none() | endpoints,
)
requests = st.builds(
    Request,
    address=st.text(max_size=40),
    id=optional_text,
    request_target=optional_text,
    method=optional_text,
    request_headers=headers,
    remote_endpoint=st.none() | endpoints,
    body=st.none() | st.booleans(),
)
responses = st.builds(
    Response,
    request_id=st.text(min_size=1, max_size=20),
    status_code=st.integers(min_value=100, max_value=999),
    status_description=optional_text,
    response_headers=headers.map(lambda value: value.without(HOP_BY_HOP_HEADERS)),
    body=st.booleans(),
)
renew_tokens = st.builds(RenewToken, token=st.text(max_size=60))
sendable = accepts | requests | responses | renew_tokens


@given(sendable)
def test_encoded_messages_decode_to_themselves(
    message: Accept | Request | Response | RenewToken,
) -> None:
    text = encode_message(message)
    assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    assert decode_message(text) == Decoded(message=message, ignored_fields=())
    assert decode_message(text.encode("utf-8")) == Decoded(message=message, ignored_fields=())


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**6), max_value=10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.sampled_from(["200", "99", "1000", "65535", "65536", "0", "-1", "abc", SECRET])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | header_names | st.text(max_size=5), inner)
    ),
    max_leaves=12,
)
message_bodies = json_values | st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=5), json_values, max_size=8
)
documents = (
    st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), message_bodies, max_size=3)
    | json_values
)


def outcome(payload: str | bytes) -> Decoded | RemoteProtocolError:
    try:
        return decode_message(payload)
    except RemoteProtocolError as error:
        return error


def check_decode(payload: str | bytes) -> None:
    """Decoding gives a Decoded or a RemoteProtocolError with a close code; nothing else."""
    decoded = outcome(payload)
    if isinstance(decoded, RemoteProtocolError):
        assert decoded.close_code in {1002, 1007, 1008}
        assert "TOPSECRET" not in str(decoded)
        return
    assert isinstance(decoded, Decoded)
    message = decoded.message
    if isinstance(message, UnknownMessage):
        return
    try:
        text = encode_message(message)
    except LocalProtocolError:
        # Only a response may decode to something hyco will not send (see the vectors).
        assert isinstance(message, Response)
        return
    assert decode_message(text) == Decoded(message=message, ignored_fields=())


@given(st.text())
def test_any_text_decodes_or_raises_remote_protocol_error(text: str) -> None:
    check_decode(text)


@given(st.binary())
def test_any_bytes_decode_or_raise_remote_protocol_error(data: bytes) -> None:
    check_decode(data)


@given(documents)
def test_any_json_document_decodes_or_raises_remote_protocol_error(document: object) -> None:
    text = json.dumps(document)
    check_decode(text)
    check_decode(text.encode("utf-8"))


@given(st.text(st.characters(codec="utf-8"), max_size=100), st.integers(0, 120))
def test_size_limit_is_exact_in_utf8_bytes(text: str, max_size: int) -> None:
    payload = json.dumps({"x": text}, ensure_ascii=False)
    size = len(payload.encode("utf-8"))
    if size > max_size:
        assert decode_error(payload, max_size=max_size).close_code == 1008
    else:
        assert decode_message(payload, max_size=max_size).message == UnknownMessage(
            kind="x", excerpt=payload[:200]
        )


@given(header_pairs, st.data())
def test_headers_behave_as_case_insensitive_ordered_mapping(
    pairs: list[tuple[str, str]], data: st.DataObject
) -> None:
    headers = Headers(pairs)
    expected: dict[str, tuple[str, list[str]]] = {}
    for name, value in pairs:
        expected.setdefault(name.lower(), (name, []))[1].append(value)
    assert list(headers) == [name for name, _ in expected.values()]
    for name, values in expected.values():
        assert headers[name] == ", ".join(values)
        assert headers[name.swapcase()] == ", ".join(values)
    swapped = {name.swapcase(): value for name, value in headers.items()}
    assert headers == swapped
    assert headers == Headers(swapped)
    assert hash(headers) == hash(Headers(swapped))
    assert isinstance(headers, Mapping)
    if pairs:
        dropped = data.draw(st.sampled_from(pairs))[0]
        remaining = headers.without([dropped.upper()])
        assert dropped not in remaining
        assert len(remaining) == len(headers) - 1


def test_response_headers_keep_the_listeners_spelling() -> None:
    decoded = decode_message(
        '{"response": {"requestId": "1", "statusCode": 200,'
        ' "responseHeaders": {"X-Custom-Header": "v", "content-TYPE": "text/plain"}}}'
    )
    response = decoded.message
    assert isinstance(response, Response)
    assert list(response.response_headers) == ["X-Custom-Header", "content-TYPE"]
    assert response.response_headers["x-custom-header"] == "v"

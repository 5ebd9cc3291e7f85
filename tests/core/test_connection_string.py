"""Tests of hyco_core.connection_string: reading, checking and writing connection strings."""

from __future__ import annotations

import base64
import math
import string
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hyco_conformance.vectors import load_vectors
from hyco_core.connection_string import ConnectionString, parse_connection_string
from hyco_core.errors import ConnectionStringError

NS = "contoso.servicebus.windows.net"
KEY = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE="
VECTORS = load_vectors("connection_strings")
MAX_TICKS = 2**63 - 1


def _fields(parsed: ConnectionString) -> dict[str, Any]:
    return {
        "namespace": parsed.namespace,
        "entity_path": parsed.entity_path,
        "shared_access_key_name": parsed.shared_access_key_name,
        "shared_access_key": parsed.shared_access_key,
        "shared_access_signature": parsed.shared_access_signature,
        "authentication": parsed.authentication,
        "operation_timeout": parsed.operation_timeout,
        "use_development_emulator": parsed.use_development_emulator,
        "endpoint": parsed.endpoint,
        "secure": parsed.secure,
        "format": parsed.format(),
    }


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    if "error" in vector:
        assert vector["error"] == "ConnectionStringError"
        with pytest.raises(ConnectionStringError) as caught:
            parse_connection_string(vector["input"])
        message = str(caught.value)
        for mention in vector.get("message_mentions", []):
            assert mention in message
        for secret in vector.get("message_must_not_contain", []):
            assert secret not in message
    else:
        parsed = parse_connection_string(vector["input"])
        assert _fields(parsed) == vector["expected"]
        assert parse_connection_string(parsed.format()) == parsed


def test_secrets_stay_out_of_repr() -> None:
    parsed = parse_connection_string(
        f"Endpoint=sb://{NS}/;SharedAccessKeyName=Root;SharedAccessKey={KEY}"
    )
    assert KEY not in repr(parsed)
    assert KEY not in str(parsed)
    signed = ConnectionString(
        namespace=NS, shared_access_signature="SharedAccessSignature sig=SECRET"
    )
    assert "SECRET" not in repr(signed)


def test_constructor_normalises_namespace_and_managed_identity() -> None:
    built = ConnectionString(
        namespace="Contoso.ServiceBus.Windows.Net:443", authentication="managedidentity"
    )
    assert built.namespace == f"{NS}:443"
    assert built.authentication == "Managed Identity"
    assert built.endpoint == f"sb://{NS}:443/"
    assert built.secure


def test_with_entity_path_checks_the_path() -> None:
    base = parse_connection_string(
        f"Endpoint=sb://{NS}/;SharedAccessKeyName=Root;SharedAccessKey={KEY}"
    )
    scoped = base.with_entity_path("hc1")
    assert scoped.entity_path == "hc1"
    assert scoped.shared_access_key == KEY
    assert "EntityPath=hc1" in scoped.format()
    with pytest.raises(ConnectionStringError, match="EntityPath"):
        base.with_entity_path("a//b")


@pytest.mark.parametrize(
    ("arguments", "mention"),
    [
        ({"namespace": "sb://ns/"}, "Endpoint"),
        ({"namespace": "ns", "entity_path": ""}, "EntityPath"),
        ({"namespace": "ns", "entity_path": " hc1"}, "EntityPath"),
        (
            {"namespace": "ns", "shared_access_key_name": "a;b", "shared_access_key": "k"},
            "SharedAccessKeyName",
        ),
        (
            {"namespace": "ns", "shared_access_key_name": "a", "shared_access_key": "k "},
            "SharedAccessKey",
        ),
        ({"namespace": "ns", "shared_access_signature": ""}, "SharedAccessSignature"),
        ({"namespace": "ns", "authentication": "Basic"}, "Managed Identity"),
        ({"namespace": "ns", "operation_timeout": 0.0}, "OperationTimeout"),
        ({"namespace": "ns", "operation_timeout": -1.0}, "OperationTimeout"),
        ({"namespace": "ns", "operation_timeout": 1e-8}, "OperationTimeout"),
        ({"namespace": "ns", "operation_timeout": math.nan}, "OperationTimeout"),
        ({"namespace": "ns", "operation_timeout": math.inf}, "OperationTimeout"),
        ({"namespace": "ns", "operation_timeout": 1e12}, "OperationTimeout"),
    ],
)
def test_constructor_checks_what_the_parser_checks(arguments: dict[str, Any], mention: str) -> None:
    with pytest.raises(ConnectionStringError, match=mention):
        ConnectionString(**arguments)


def test_plain_seconds_beyond_the_largest_timespan_are_refused() -> None:
    with pytest.raises(ConnectionStringError, match="OperationTimeout"):
        parse_connection_string("Endpoint=sb://ns/;OperationTimeout=999999999999")


# Strategies for whole connection strings.

_VALUES = (
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters=";"), min_size=1)
    .map(str.strip)
    .filter(bool)
)
_LABELS = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=10)
_NAMESPACES = st.builds(
    lambda labels, port: ".".join(labels) + ("" if port is None else f":{port}"),
    st.lists(_LABELS, min_size=1, max_size=3),
    st.none() | st.integers(1, 65535),
)
_SEGMENTS = _VALUES.filter(lambda segment: "/" not in segment and segment not in (".", ".."))
_ENTITY_PATHS = (
    st.lists(_SEGMENTS, min_size=1, max_size=3)
    .map("/".join)
    .filter(lambda path: path == path.strip() and path.split("/")[0].lower() != "$hc")
)


@st.composite
def _connection_strings(draw: st.DrawFn) -> ConnectionString:
    credentials = draw(st.sampled_from(["none", "key", "signature", "managed identity"]))
    ticks = draw(st.none() | st.integers(1, MAX_TICKS))
    return ConnectionString(
        namespace=draw(_NAMESPACES),
        entity_path=draw(st.none() | _ENTITY_PATHS),
        shared_access_key_name=draw(_VALUES) if credentials == "key" else None,
        shared_access_key=draw(_VALUES) if credentials == "key" else None,
        shared_access_signature=draw(_VALUES) if credentials == "signature" else None,
        authentication="Managed Identity" if credentials == "managed identity" else None,
        operation_timeout=None if ticks is None else ticks / 10_000_000,
        use_development_emulator=draw(st.booleans()),
    )


@given(_connection_strings())
def test_format_reads_back_equal(connection_string: ConnectionString) -> None:
    assert parse_connection_string(connection_string.format()) == connection_string


@given(st.floats(min_value=1e-7, max_value=9e11))
def test_any_timeout_is_written_to_the_nearest_tick(seconds: float) -> None:
    written = ConnectionString(namespace="ns", operation_timeout=seconds).format()
    read = parse_connection_string(written).operation_timeout
    assert read is not None
    assert abs(read - seconds) <= 5e-8 + seconds * 1e-15


@given(st.text())
@example("Endpoint=sb://ns/;OperationTimeout=1:00:00:00")
def test_any_text_is_a_connection_string_or_a_connection_string_error(text: str) -> None:
    try:
        parsed = parse_connection_string(text)
    except ConnectionStringError:
        return
    assert parse_connection_string(parsed.format()) == parsed


_KNOWN_KEYS = st.sampled_from(
    [
        "Endpoint",
        "EntityPath",
        "SharedAccessKeyName",
        "SharedAccessKey",
        "SharedAccessSignature",
        "Authentication",
        "OperationTimeout",
        "UseDevelopmentEmulator",
        "endpoint",
    ]
)
_ITEMS = st.one_of(
    st.builds("{}={}".format, _KNOWN_KEYS, st.text(alphabet=st.characters(exclude_characters=";"))),
    st.just("Endpoint=sb://ns.example.com/"),
    st.text(alphabet=st.characters(exclude_characters=";")),
)


@given(
    before=st.lists(_ITEMS, max_size=4),
    after=st.lists(_ITEMS, max_size=4),
    secret=st.binary(min_size=32, max_size=32).map(lambda raw: base64.b64encode(raw).decode()),
    kind=st.sampled_from(["SharedAccessKey", "SharedAccessSignature", "sharedaccesskey"]),
    cut=st.integers(0, 70),
)
@example(before=[], after=[], secret="A" * 43 + "=", kind="SharedAccessKey", cut=30)
def test_errors_never_show_a_key_or_signature(
    before: list[str], after: list[str], secret: str, kind: str, cut: int
) -> None:
    # A key or signature, sometimes cut in two by a stray ';', among arbitrary other items.
    prefix = "SharedAccessSignature sig=" if kind == "SharedAccessSignature" else ""
    value = prefix + secret
    cut = min(cut, len(value))
    pasted = f"{kind}={value[:cut]};{value[cut:]}" if cut else f"{kind}={value}"
    text = ";".join([*before, pasted, *after])
    try:
        shown = repr(parse_connection_string(text))
    except ConnectionStringError as error:
        shown = str(error)
    inside = max(0, cut - len(prefix))
    for piece in (secret[:inside], secret[inside:]):
        if len(piece.rstrip("=")) >= 6:
            assert piece.rstrip("=") not in shown


def test_unknown_keys_after_a_secret_are_not_named() -> None:
    text = f"Endpoint=sb://{NS}/;SharedAccessKey=abc;Defghij=;SharedAccessKeyName=n"
    with pytest.raises(ConnectionStringError, match="item 3") as caught:
        parse_connection_string(text)
    assert "Defghij" not in str(caught.value)
    with pytest.raises(ConnectionStringError, match="'TransportType'"):
        parse_connection_string(f"TransportType=Amqp;Endpoint=sb://{NS}/;SharedAccessKey=abc")

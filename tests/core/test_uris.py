"""Tests of hyco_core.uris: relay addresses built, read back, stripped and redacted."""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlencode

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from hyco_conformance.vectors import load_vectors
from hyco_core.errors import InvalidUrlError, LocalProtocolError
from hyco_core.sas import create_relay_token, parse_sas_token, verify_sas_token
from hyco_core.uris import (
    HostedEntities,
    RelayUrl,
    append_relay_token,
    create_reject_uri,
    create_relay_http_uri,
    create_relay_listen_uri,
    create_relay_send_uri,
    create_rendezvous_uri,
    normalize_namespace,
    parse_relay_url,
    redact_url,
    strip_relay_query,
    validate_entity_path,
)

NS = "contoso.servicebus.windows.net"
VECTORS = load_vectors("uris")
ERRORS: dict[str, type[Exception]] = {
    "InvalidUrlError": InvalidUrlError,
    "LocalProtocolError": LocalProtocolError,
}
OPERATIONS: dict[str, Callable[..., Any]] = {
    "listen_uri": create_relay_listen_uri,
    "send_uri": create_relay_send_uri,
    "http_uri": create_relay_http_uri,
    "reject_uri": create_reject_uri,
    "strip_query": strip_relay_query,
    "redact": redact_url,
    "parse": lambda **arguments: _parts(parse_relay_url(**arguments)),
}


def _parts(url: RelayUrl) -> dict[str, Any]:
    return {
        "scheme": url.scheme,
        "namespace": url.namespace,
        "entity": url.entity,
        "suffix": url.suffix,
        "action": url.action,
        "tracking_id": url.tracking_id,
        "token": url.token,
        "relay_parameters": dict(url.relay_parameters),
        "query": url.query,
        "is_http": url.is_http,
        "secure": url.secure,
    }


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    operation = OPERATIONS[vector["kind"]]
    if "error" in vector:
        with pytest.raises(ERRORS[vector["error"]]) as caught:
            operation(**vector["input"])
        for secret in vector.get("message_must_not_contain", []):
            assert secret not in str(caught.value)
    else:
        assert operation(**vector["input"]) == vector["expected"]


def test_vectors_cover_every_kind_and_the_protocol_examples() -> None:
    assert {vector["kind"] for vector in VECTORS} == set(OPERATIONS)
    stripped = {vector["input"]["query"] for vector in VECTORS if vector["kind"] == "strip_query"}
    assert {"?sb-hc-id=1&custom=value", "?sb-hc-undefined", "?a=1&a=2&"} <= stripped


# Strategies for the parts of an address.

_LABELS = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
_HOSTS = st.lists(_LABELS, min_size=1, max_size=4).map(".".join) | st.ip_addresses(v=6).map(
    lambda address: f"[{address}]"
)
_NAMESPACES = st.builds(
    lambda host, port: host if port is None else f"{host}:{port}",
    _HOSTS,
    st.none() | st.integers(1, 65535),
)
_SEGMENTS = st.text(min_size=1, max_size=10).filter(
    lambda segment: "/" not in segment and segment not in (".", "..")
)
_ENTITIES = (
    st.lists(_SEGMENTS, min_size=1, max_size=3)
    .map("/".join)
    .filter(lambda path: path.split("/")[0].lower() != "$hc")
)
_USER_QUERIES = st.text(max_size=30).filter(lambda query: "sb-hc-" not in unquote(query).lower())
_VALUES = st.none() | st.text(max_size=20)


@given(
    namespace=_NAMESPACES,
    entity=_ENTITIES,
    token=_VALUES,
    tracking_id=_VALUES,
    suffix=st.text(max_size=20),
    query=_USER_QUERIES,
    secure=st.booleans(),
)
def test_send_uri_reads_back_into_the_same_parts(
    namespace: str,
    entity: str,
    token: str | None,
    tracking_id: str | None,
    suffix: str,
    query: str,
    secure: bool,
) -> None:
    url = create_relay_send_uri(
        namespace, entity, token, tracking_id, suffix=suffix, query=query, secure=secure
    )
    parsed = parse_relay_url(url, entities=[entity])
    assert parsed.scheme == ("wss" if secure else "ws")
    assert parsed.secure is secure
    assert parsed.namespace == namespace.lower()
    assert parsed.entity == entity
    assert parsed.action == "connect"
    assert parsed.tracking_id == tracking_id
    assert parsed.token == token
    assert not parsed.is_http
    assert parsed.suffix == "" or parsed.suffix.startswith("/")
    # What was given as parts builds the very same address again: nothing is encoded twice.
    again = create_relay_send_uri(
        parsed.namespace,
        parsed.entity,
        parsed.token,
        parsed.tracking_id,
        suffix=parsed.suffix,
        query=parsed.query,
        secure=parsed.secure,
    )
    assert again == url
    if "%" not in suffix:
        assert unquote(parsed.suffix) == ("/" + suffix.removeprefix("/") if suffix else "")
    if "%" not in query:
        assert unquote(parsed.query) == query.removeprefix("?")


@given(
    namespace=_NAMESPACES,
    entity=_SEGMENTS.filter(lambda segment: segment.lower() != "$hc"),
    token=_VALUES,
    tracking_id=_VALUES,
    secure=st.booleans(),
)
def test_listen_uri_reads_back_into_the_same_parts(
    namespace: str, entity: str, token: str | None, tracking_id: str | None, secure: bool
) -> None:
    url = create_relay_listen_uri(namespace, entity, token, tracking_id, secure=secure)
    parsed = parse_relay_url(url)
    assert (parsed.entity, parsed.suffix, parsed.query) == (entity, "", "")
    assert (parsed.action, parsed.tracking_id, parsed.token) == ("listen", tracking_id, token)
    assert parsed.namespace == namespace.lower()
    assert parsed.scheme == ("wss" if secure else "ws")


@given(
    namespace=_NAMESPACES,
    entity=_ENTITIES,
    token=_VALUES,
    suffix=st.text(max_size=20),
    query=_USER_QUERIES,
    secure=st.booleans(),
)
def test_http_uri_reads_back_into_the_same_parts(
    namespace: str, entity: str, token: str | None, suffix: str, query: str, secure: bool
) -> None:
    url = create_relay_http_uri(namespace, entity, token, suffix=suffix, query=query, secure=secure)
    parsed = parse_relay_url(url, entities=[entity])
    assert parsed.is_http
    assert parsed.scheme == ("https" if secure else "http")
    assert (parsed.entity, parsed.token, parsed.action) == (entity, token, None)
    again = create_relay_http_uri(
        parsed.namespace,
        parsed.entity,
        parsed.token,
        suffix=parsed.suffix,
        query=parsed.query,
        secure=parsed.secure,
    )
    assert again == url


def test_token_goes_in_the_query_only_when_given() -> None:
    assert "sb-hc-token" not in create_relay_send_uri(NS, "hc1", tracking_id="1")
    assert create_relay_http_uri(NS, "hc1", query="?") == f"https://{NS}/hc1"


def test_builders_refuse_text_without_a_utf8_form() -> None:
    with pytest.raises(InvalidUrlError, match="surrogates"):
        create_relay_listen_uri(NS, "hc\ud800")
    with pytest.raises(InvalidUrlError, match="suffix"):
        create_relay_send_uri(NS, "hc1", suffix="\udc00")
    with pytest.raises(InvalidUrlError, match="query"):
        create_relay_http_uri(NS, "hc1", query="a=\ud800")


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        ("Contoso.ServiceBus.Windows.Net", NS),
        ("localhost:9000", "localhost:9000"),
        ("LOCALHOST:00080", "localhost:00080"),
        ("[::1]", "[::1]"),
        ("[FE80::1]:443", "[fe80::1]:443"),
        ("my_host-1.internal", "my_host-1.internal"),
    ],
)
def test_normalize_namespace_lowercases_the_host_and_keeps_the_port(
    namespace: str, expected: str
) -> None:
    assert normalize_namespace(namespace) == expected


@pytest.mark.parametrize(
    ("namespace", "problem"),
    [
        ("", "no host"),
        (":443", "no host"),
        ("a..b", "labels"),
        ("a.b.", "labels"),
        ("a/b", "labels"),
        ("a:1:2", "port"),
        ("a:", "port"),
        ("a:0", "port"),
        ("a:123456", "port"),
        ("a:\uff11", "ASCII"),
        ("b\u00fccher.de", "punycode"),
        ("[::1", "closing"),
        ("[fe80::1%25eth0]", "zone"),
        ("[::g]", "IPv6"),
        ("[::1]x", "followed"),
        ("[::1]:", "port"),
    ],
)
def test_normalize_namespace_says_what_is_wrong(namespace: str, problem: str) -> None:
    with pytest.raises(InvalidUrlError, match=problem):
        normalize_namespace(namespace)


@pytest.mark.parametrize("path", ["hc1", "a/b/c", "my hc", "$hcx", "x/$hc", "ä%"])
def test_validate_entity_path_accepts_names(path: str) -> None:
    validate_entity_path(path)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "empty"),
        ("/hc1", "start or end"),
        ("hc1/", "start or end"),
        ("a//b", "start or end"),
        ("a/./b", r"'\.'"),
        ("..", r"'\.'"),
        ("$HC", "reserves"),
        ("$hc/hc1", "reserves"),
        ("hc\ud800", "UTF-8"),
    ],
)
def test_validate_entity_path_says_what_is_wrong(path: str, problem: str) -> None:
    with pytest.raises(InvalidUrlError, match=problem):
        validate_entity_path(path)


# Reading addresses.


@given(st.text())
@example("wss://ns/$hc/hc1?sb-hc-action=listen")
@example("https://ns/a/b?x=1&sb-hc-token=t")
def test_parse_relay_url_returns_an_address_or_raises_invalid_url_error(text: str) -> None:
    try:
        parsed = parse_relay_url(text)
    except InvalidUrlError:
        return
    assert parsed.scheme in {"ws", "wss", "http", "https"}
    assert parsed.entity


_URL_TEXT = st.text(string.printable.replace("S", ""), max_size=40)
_URLS = st.builds(
    "".join,
    st.tuples(
        st.sampled_from(["wss://", "ws://", "https://", "HTTP://", "sb://", ""]),
        st.sampled_from(["ns", "NS.example.com", "localhost:9000", "[::1]:1", ""]),
        st.sampled_from(["/$hc/", "/", "/$HC/hc1/", "/%24hc/"]),
        _URL_TEXT,
        st.sampled_from(["?", "&", "?sb-hc-action=connect&", "?sb-hc-id=1&"]),
        _URL_TEXT,
    ),
)


@given(_URLS, st.none() | st.lists(_URL_TEXT, max_size=3))
def test_parse_relay_url_on_address_like_text(url: str, entities: list[str] | None) -> None:
    try:
        parsed = parse_relay_url(url, entities=entities)
    except InvalidUrlError:
        return
    assert parsed.query == strip_relay_query("?" + url.partition("?")[2])
    assert all(name.startswith("sb-hc-") for name in parsed.relay_parameters)
    assert parsed.suffix == "" or parsed.suffix.startswith("/")
    if entities is not None:
        assert parsed.entity.lower() in {entity.lower() for entity in entities}
    if parsed.scheme in {"ws", "wss"}:
        assert not parsed.is_http


@given(
    # Without '?' and '&' the path cannot move the token item into a user query item.
    path=st.text(string.printable.translate(str.maketrans("", "", "S?&")), max_size=30),
    tail=st.text(string.printable, max_size=20),
)
def test_parse_errors_never_show_a_token(path: str, tail: str) -> None:
    url = f"wss://ns/$hc/{path}?sb-hc-token=SECRET{tail}"
    try:
        shown = repr(parse_relay_url(url))
    except InvalidUrlError as error:
        shown = str(error)
    assert "SECRET" not in shown


def test_entities_are_matched_longest_first_and_bounded_by_the_deepest_entity() -> None:
    entities = {"a", "a/b", "c/d/e"}
    assert parse_relay_url("wss://ns/$hc/a/b/x", entities=entities).entity == "a/b"
    assert parse_relay_url("wss://ns/$hc/a/x/b", entities=entities).suffix == "/x/b"
    assert parse_relay_url("wss://ns/$hc/a/%FF", entities=entities).suffix == "/%FF"
    long_path = "/x" * 10_000
    parsed = parse_relay_url(f"wss://ns/$hc/a{long_path}", entities=entities)
    assert parsed.suffix == long_path


def test_error_messages_quote_long_addresses_cut_short() -> None:
    with pytest.raises(InvalidUrlError) as caught:
        parse_relay_url("wss://ns/" + "x" * 1000)
    assert len(str(caught.value)) < 300
    assert "..." in str(caught.value)


def test_parsed_address_hides_its_token_and_can_be_hashed() -> None:
    parsed = parse_relay_url("wss://ns/$hc/hc1?sb-hc-action=listen&sb-hc-token=SECRET")
    assert "SECRET" not in repr(parsed)
    assert parsed in {parsed}
    with pytest.raises(TypeError):
        parsed.relay_parameters["sb-hc-token"] = "other"  # type: ignore[index]


def test_relay_parameter_names_count_once_however_they_are_spelled() -> None:
    with pytest.raises(InvalidUrlError, match="more than one 'sb-hc-id'"):
        parse_relay_url("wss://ns/$hc/hc1?sb-hc-id=1&%73B-HC-ID=2")


# What the relay forwards.


@given(st.text())
@example("?sb-hc-id=1&custom=value")
def test_strip_relay_query_drops_exactly_the_relay_parameters(query: str) -> None:
    stripped = strip_relay_query(query)
    for item in stripped.split("&"):
        name, separator, _ = item.partition("=")
        assert not (separator and unquote(name).lower().startswith("sb-hc-"))
    if stripped:
        kept = iter(query.removeprefix("?").split("&"))
        # The kept items are the original ones, verbatim and in order.
        assert all(item in kept for item in stripped.split("&"))
    assert strip_relay_query(stripped) == stripped
    assert strip_relay_query("?" + query.removeprefix("?")) == stripped


# Tokens.


def test_append_relay_token_adds_a_token_valid_for_the_entity() -> None:
    url = create_relay_send_uri(NS, "hc1", suffix="a/b", query="x=1", tracking_id="7")
    signed = append_relay_token(url, "send", "c2VjcmV0", now=1_700_000_000.5)
    assert signed.startswith(f"{url}&sb-hc-token=")
    parsed = parse_relay_url(signed)
    assert parsed.token is not None
    assert (parsed.query, parsed.suffix, parsed.tracking_id) == ("x=1", "/a/b", "7")
    assert parse_sas_token(parsed.token).expiry == 1_700_000_000 + 3600
    verdict = verify_sas_token(
        parsed.token, keys={"send": ["c2VjcmV0"]}, target=f"sb://{NS}/hc1", now=1_700_000_001
    )
    assert verdict.valid


def test_append_relay_token_covers_nested_entities_and_picks_the_separator() -> None:
    signed = append_relay_token("https://ns/tenants/a/items", "k", "key", 60, now=0)
    assert signed.startswith("https://ns/tenants/a/items?sb-hc-token=")
    token = parse_relay_url(signed).token
    assert token is not None
    assert verify_sas_token(token, keys={"k": ["key"]}, target="sb://ns/tenants/a", now=0).valid
    assert parse_sas_token(token).expiry == 60
    assert "?&" not in append_relay_token("wss://ns/$hc/hc1?x=1&", "k", "key", now=0)
    assert "??" not in append_relay_token("wss://ns/$hc/hc1?", "k", "key", now=0)


def test_append_relay_token_refuses_a_second_token_and_bad_addresses() -> None:
    with pytest.raises(InvalidUrlError, match=r"already has a token") as caught:
        append_relay_token("wss://ns/$hc/hc1?sb-hc-token=SECRET", "k", "key", now=0)
    assert "SECRET" not in str(caught.value)
    with pytest.raises(InvalidUrlError):
        append_relay_token("wss://ns/hc1", "k", "key", now=0)
    with pytest.raises(LocalProtocolError):
        append_relay_token("wss://ns/$hc/hc1", "k", "key", 0, now=0)


# Rejecting.


@given(
    status_code=st.integers(100, 999),
    description=st.text(),
)
def test_reject_uri_carries_status_and_description_to_the_relay(
    status_code: int, description: str
) -> None:
    accept = "wss://g1.servicebus.windows.net/$hc/hc1?sb-hc-action=accept&sb-hc-id=1_G1"
    url = create_reject_uri(accept, status_code, description)
    assert url.startswith(accept + "&")
    parameters = parse_relay_url(url).relay_parameters
    assert parameters["sb-hc-statuscode"] == str(status_code)
    assert parameters["sb-hc-statusdescription"] == description
    assert parameters["sb-hc-action"] == "accept"


@given(st.integers().filter(lambda code: not 100 <= code <= 999))
def test_reject_uri_refuses_status_codes_outside_100_to_999(status_code: int) -> None:
    with pytest.raises(LocalProtocolError, match="100 to 999"):
        create_reject_uri("wss://ns/$hc/hc1?sb-hc-action=accept", status_code, "no")


def test_reject_uri_starts_a_query_when_the_address_has_none() -> None:
    assert create_reject_uri("wss://ns/$hc/hc1", 404, "x") == (
        "wss://ns/$hc/hc1?sb-hc-statusCode=404&sb-hc-statusDescription=x"
    )


# Redaction.


@given(
    # Without '=' nothing in the prefix is a parameter, so the token item is found on its own.
    prefix=st.text(string.printable.translate(str.maketrans("", "", "S=")), max_size=30),
    name=st.sampled_from(["sb-hc-token", "SB-HC-TOKEN", "sb%2Dhc-token", "sig", "Sig"]),
    tail=st.text(max_size=30),
)
def test_redact_url_hides_every_token(prefix: str, name: str, tail: str) -> None:
    for delimiter in "?&#":
        redacted = redact_url(f"{prefix}{delimiter}{name}=SECRET{tail}")
        assert "SECRET" not in redacted
        assert f"{name}=***" in redacted


@given(st.text(alphabet=st.characters(exclude_characters="%")))
def test_redact_url_changes_nothing_without_a_token(url: str) -> None:
    lowered = url.lower()
    assume("sb-hc-token" not in lowered and "sig" not in lowered)
    assert redact_url(url) == url


KELVIN_ESCAPED = "%E2%84%AA"  # U+212A KELVIN SIGN, which str.lower() turns into 'k'


def test_an_entity_spelled_with_the_kelvin_sign_is_not_the_ascii_entity() -> None:
    with pytest.raises(InvalidUrlError, match="names no hybrid connection"):
        parse_relay_url(f"wss://{NS}/$hc/{KELVIN_ESCAPED}elvin", entities=["kelvin"])
    with pytest.raises(InvalidUrlError, match="names no hybrid connection"):
        parse_relay_url(f"https://{NS}/{KELVIN_ESCAPED}elvin/x", entities=["Kelvin"])
    assert parse_relay_url(f"wss://{NS}/$hc/KELVIN", entities=["kelvin"]).entity == "KELVIN"


def test_a_parameter_spelled_with_the_kelvin_sign_is_not_the_token() -> None:
    url = parse_relay_url(f"wss://{NS}/$hc/hc1?sb-hc-to{KELVIN_ESCAPED}en=SECRET")
    assert url.token is None
    assert "sb-hc-token" not in url.relay_parameters


def test_a_reject_description_written_as_a_form_value_reads_with_spaces() -> None:
    # .NET's WebUtility.UrlEncode writes the description's spaces as '+'.
    accept = f"wss://{NS}/$hc/hc1?sb-hc-action=accept&sb-hc-id=abc"
    url = parse_relay_url(f"{accept}&sb-hc-statusCode=403&sb-hc-statusDescription=go+away+now")
    assert url.relay_parameters["sb-hc-statusdescription"] == "go away now"
    assert url.relay_parameters["sb-hc-statuscode"] == "403"
    spelled = parse_relay_url(f"{accept}&sb-hc-statusDescription=1%2B1%20is+2")
    assert spelled.relay_parameters["sb-hc-statusdescription"] == "1+1 is 2"


def test_a_token_written_by_urlencode_reads_back_exactly_and_verifies() -> None:
    token = create_relay_token(f"https://{NS}/hc1", "RootManageSharedAccessKey", "KEY+/=", now=0)
    query = urlencode({"sb-hc-token": token, "sb-hc-id": "a b"})
    assert "+" in query
    url = parse_relay_url(f"wss://{NS}/$hc/hc1?sb-hc-action=listen&{query}")
    assert url.token == token
    assert url.tracking_id == "a b"
    verdict = verify_sas_token(
        token, keys={"RootManageSharedAccessKey": ["KEY+/="]}, target=f"sb://{NS}/hc1", now=1
    )
    assert verdict.valid


def test_user_query_items_keep_their_plus_signs() -> None:
    url = parse_relay_url(f"https://{NS}/hc1?q=a+b&sb-hc-id=c+d&r=%2B")
    assert url.query == "q=a+b&r=%2B"
    assert url.tracking_id == "c d"


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_any_relay_parameter_value_written_by_urlencode_reads_back(value: str) -> None:
    url = parse_relay_url(f"wss://{NS}/$hc/hc1?{urlencode({'sb-hc-id': value})}")
    assert url.tracking_id == value


@pytest.mark.parametrize(
    ("url", "entity", "suffix", "is_http"),
    [
        (f"https://{NS}//hc1", "hc1", "", True),
        (f"https://{NS}///hc1/api//x?q=1", "hc1", "/api//x", True),
        (f"wss://{NS}/$hc//hc1?sb-hc-action=listen", "hc1", "", False),
        (f"wss://{NS}//$hc/hc1?sb-hc-action=connect", "hc1", "", False),
        (f"wss://{NS}//$hc///hc1/sub", "hc1", "/sub", False),
        (f"wss://{NS}/$hc//a//b/c", "a/b", "/c", False),
        (f"https://{NS}//A//B//c", "A/B", "//c", True),
        (f"https://{NS}//a/c", "a", "/c", True),
    ],
)
def test_empty_segments_before_and_inside_the_entity_are_skipped(
    url: str, entity: str, suffix: str, is_http: bool
) -> None:
    parsed = parse_relay_url(url, entities=["hc1", "a", "a/b"])
    assert (parsed.entity, parsed.suffix, parsed.is_http) == (entity, suffix, is_http)
    if entity == "hc1":
        assert parse_relay_url(url).entity == "hc1"


@pytest.mark.parametrize(
    "url",
    [
        f"wss://{NS}/$hc//",
        f"wss://{NS}//",
        f"https://{NS}//",
        f"wss://{NS}/$hc//./hc1",
        f"wss://{NS}/$hc//../hc1",
        f"https://{NS}//%2E%2E/hc1",
        f"wss://{NS}/.//$hc/hc1",
    ],
)
def test_empty_segments_never_hide_an_empty_or_dot_entity(url: str) -> None:
    with pytest.raises(InvalidUrlError):
        parse_relay_url(url)
    with pytest.raises(InvalidUrlError):
        parse_relay_url(url, entities=["hc1"])


@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3))
def test_a_token_for_an_entity_opens_it_however_many_slashes_the_address_has(
    before: int, after: int, inside: int
) -> None:
    url = f"wss://{NS}/{'/' * before}$hc/{'/' * after}a/{'/' * inside}b"
    parsed = parse_relay_url(url, entities=["a", "a/b"])
    assert parsed.entity == "a/b"
    token = create_relay_token(f"sb://{NS}/a/b", "Rule", "KEY", now=0)
    keys = {"Rule": ["KEY"]}
    assert verify_sas_token(token, keys=keys, target=url, now=1).valid
    # The relay's target is built from the entity it resolved: the same verdict.
    target = f"http://{NS}/{parsed.entity}"
    assert verify_sas_token(token, keys=keys, target=target, now=1).valid


HOSTED = ["hc1", "Deep/Path", "a/b/c"]


@pytest.mark.parametrize(
    "url",
    [
        f"wss://{NS}/$hc/HC1/suffix?x=1",
        f"wss://{NS}/$hc//deep//path/more",
        f"https://{NS}/a/b/c/d",
        f"https://{NS}/a/b",
        f"wss://{NS}/$hc/hc\u212a1",
    ],
)
def test_hosted_entities_indexed_once_resolve_as_a_list_of_names_does(url: str) -> None:
    hosted = HostedEntities(HOSTED)
    try:
        expected: RelayUrl | type[InvalidUrlError] = parse_relay_url(url, entities=HOSTED)
    except InvalidUrlError:
        expected = InvalidUrlError
    if expected is InvalidUrlError:
        with pytest.raises(InvalidUrlError):
            parse_relay_url(url, entities=hosted)
    else:
        assert parse_relay_url(url, entities=hosted) == expected


def test_hosted_entities_know_their_depth_and_compare_by_ascii_case() -> None:
    hosted = HostedEntities(HOSTED)
    assert hosted.depth == 3
    assert "DEEP/path" in hosted
    assert "hc\u212a1" not in hosted
    assert 1 not in hosted
    assert HostedEntities([]).depth == 0


def test_rendezvous_addresses_name_the_relay_the_sender_suffix_and_query_and_the_id() -> None:
    accept = create_rendezvous_uri(
        "relay.example.com:8443",
        "deep/path",
        action="accept",
        rendezvous_id="a+b/c",
        suffix="/room/7",
        query="user=ada&x=%20",
    )
    assert accept == (
        "wss://relay.example.com:8443/$hc/deep/path/room/7?user=ada&x=%20"
        "&sb-hc-action=accept&sb-hc-id=a%2Bb%2Fc"
    )
    parsed = parse_relay_url(accept, entities=["deep/path"])
    assert (parsed.action, parsed.tracking_id, parsed.suffix) == ("accept", "a+b/c", "/room/7")
    request = create_rendezvous_uri(
        "127.0.0.1:9090", "hc1", action="request", rendezvous_id="id", secure=False
    )
    assert request == "ws://127.0.0.1:9090/$hc/hc1?sb-hc-action=request&sb-hc-id=id"
    with pytest.raises(LocalProtocolError):
        create_rendezvous_uri("a.example", "hc1", action="listen", rendezvous_id="id")

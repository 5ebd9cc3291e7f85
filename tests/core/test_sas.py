"""Tests of hyco_core.sas: our tokens verify, every SDK's tokens verify, forgeries do not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import string
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco_conformance.vectors import load_vectors
from hyco_core import errors
from hyco_core.sas import (
    SAS_PREFIX,
    SasOutcome,
    SasToken,
    SasVerdict,
    create_relay_token,
    create_sas_token,
    encode_component,
    parse_sas_token,
    relay_token_resource,
    verify_sas_token,
)

NS = "contoso.servicebus.windows.net"
RULE = "RootManageSharedAccessKey"
PRIMARY = "SECRETKEY="
SECONDARY = "SECONDARYKEY="
KEYS = {RULE: [PRIMARY, SECONDARY], "SendOnly": ["SENDKEY"]}
EXPIRY = 1_700_000_000
NOW = EXPIRY - 600
DOTNET_RESOURCE = f"http://{NS}/hc1/"
NODE_RESOURCE = f"http://{NS}:443/hc1"

VECTORS = load_vectors("sas_tokens")
KINDS = (
    "encode_component",
    "relay_token_resource",
    "create_sas_token",
    "create_relay_token",
    "parse",
    "verify",
)


def vectors_of(kind: str) -> list[Any]:
    return [pytest.param(vector, id=vector["name"]) for vector in VECTORS if vector["kind"] == kind]


def signed(encoded_resource: str, key: str = PRIMARY, expiry: int = EXPIRY, skn: str = RULE) -> str:
    """Build a token by hand, so tests do not trust the module to build what it checks."""
    digest = hmac.new(
        key.encode("utf-8"), f"{encoded_resource}\n{expiry}".encode(), hashlib.sha256
    ).digest()
    signature = encode_component(base64.b64encode(digest).decode("ascii"))
    return f"{SAS_PREFIX}sr={encoded_resource}&sig={signature}&se={expiry}&skn={skn}"


def verify(token: str, target: str = f"sb://{NS}/hc1", **kwargs: Any) -> SasVerdict:
    options: dict[str, Any] = {"keys": KEYS, "now": NOW}
    options.update(kwargs)
    return verify_sas_token(token, target=target, **options)


# --- conformance vectors -------------------------------------------------------------------------


def test_every_vector_has_a_known_kind_and_a_unique_name() -> None:
    assert {vector["kind"] for vector in VECTORS} == set(KINDS)
    names = [vector["name"] for vector in VECTORS]
    assert len(names) == len(set(names))
    assert all(vector["description"] for vector in VECTORS)


@pytest.mark.parametrize("vector", vectors_of("encode_component"))
def test_encode_component_vector(vector: dict[str, Any]) -> None:
    assert encode_component(vector["input"]["text"]) == vector["expect"]["encoded"]


@pytest.mark.parametrize("vector", vectors_of("relay_token_resource"))
def test_relay_token_resource_vector(vector: dict[str, Any]) -> None:
    uri = vector["input"]["uri"]
    if "error" in vector["expect"]:
        with pytest.raises(getattr(errors, vector["expect"]["error"])):
            relay_token_resource(uri)
    else:
        assert relay_token_resource(uri) == vector["expect"]["resource"]


@pytest.mark.parametrize("vector", vectors_of("create_sas_token"))
def test_create_sas_token_vector(vector: dict[str, Any]) -> None:
    given_input = vector["input"]
    arguments = (
        given_input["resource"],
        given_input["key_name"],
        given_input["key"],
        given_input["expiry"],
    )
    if "error" in vector["expect"]:
        with pytest.raises(getattr(errors, vector["expect"]["error"])):
            create_sas_token(*arguments)
        return
    token = create_sas_token(*arguments)
    assert token == vector["expect"]["token"]
    parsed = parse_sas_token(token)
    assert f"{parsed.encoded_resource}\n{parsed.expiry}" == vector["expect"]["string_to_sign"]
    assert parsed.signature == vector["expect"]["signature"]


@pytest.mark.parametrize("vector", vectors_of("create_relay_token"))
def test_create_relay_token_vector(vector: dict[str, Any]) -> None:
    given_input = vector["input"]
    token = create_relay_token(
        given_input["uri"],
        given_input["key_name"],
        given_input["key"],
        given_input["expiration_seconds"],
        now=given_input["now"],
    )
    assert token == vector["expect"]["token"]


@pytest.mark.parametrize("vector", vectors_of("parse"))
def test_parse_vector(vector: dict[str, Any]) -> None:
    token = vector["input"]["token"]
    expect = vector["expect"]
    if "error" in expect:
        with pytest.raises(getattr(errors, expect["error"])):
            parse_sas_token(token)
        return
    assert parse_sas_token(token) == SasToken(**expect)


@pytest.mark.parametrize("vector", vectors_of("verify"))
def test_verify_vector(vector: dict[str, Any]) -> None:
    given_input = vector["input"]
    verdict = verify_sas_token(
        given_input["token"],
        keys=given_input["keys"],
        target=given_input["target"],
        now=given_input["now"],
        max_lifetime=given_input["max_lifetime"],
    )
    assert verdict.outcome is SasOutcome[vector["expect"]["outcome"]]


def test_known_answer_vector_is_a_real_hmac() -> None:
    # Written out by hand so that the vector does not merely agree with the module.
    string_to_sign = b"http%3A%2F%2Fcontoso.servicebus.windows.net%2Fhc1%2F\n1700000000"
    digest = hmac.new(b"SECRETKEY=", string_to_sign, hashlib.sha256).digest()
    signature = base64.b64encode(digest).decode("ascii")
    expected = (
        "SharedAccessSignature sr=http%3A%2F%2Fcontoso.servicebus.windows.net%2Fhc1%2F"
        f"&sig={signature.replace('+', '%2B').replace('/', '%2F').replace('=', '%3D')}"
        "&se=1700000000&skn=RootManageSharedAccessKey"
    )
    (vector,) = [v for v in VECTORS if v["name"] == "create-known-answer"]
    assert vector["expect"]["signature"] == signature
    assert vector["expect"]["token"] == expected
    assert create_sas_token(DOTNET_RESOURCE, RULE, PRIMARY, EXPIRY) == expected


# --- creating tokens -----------------------------------------------------------------------------


def test_created_token_verifies_for_its_entity() -> None:
    token = create_sas_token(DOTNET_RESOURCE, RULE, PRIMARY, EXPIRY)
    verdict = verify(token)
    assert verdict.valid
    assert verdict.token == parse_sas_token(token)


def test_create_relay_token_signs_the_dotnet_resource_until_now_plus_lifetime() -> None:
    token = create_relay_token(f"wss://{NS}/$hc/hc1?sb-hc-action=connect", RULE, PRIMARY, now=NOW)
    parsed = parse_sas_token(token)
    assert parsed.resource == DOTNET_RESOURCE
    assert parsed.expiry == NOW + 3600
    assert verify(token).valid


@pytest.mark.parametrize("lifetime", [0, -5, True])
def test_create_relay_token_refuses_a_lifetime_that_is_not_positive(lifetime: int) -> None:
    with pytest.raises(errors.LocalProtocolError, match="expiration_seconds"):
        create_relay_token(f"sb://{NS}/hc1", RULE, PRIMARY, lifetime, now=NOW)


@pytest.mark.parametrize("now", [math.nan, math.inf])
def test_create_relay_token_refuses_a_clock_that_is_not_finite(now: float) -> None:
    with pytest.raises(errors.LocalProtocolError, match="now"):
        create_relay_token(f"sb://{NS}/hc1", RULE, PRIMARY, now=now)


@pytest.mark.parametrize(
    "key_name", ["", "a&b", "a=b", "50%", "my rule", "r\u00e8gle", "tab\there"]
)
def test_create_refuses_key_names_that_cannot_travel_verbatim(key_name: str) -> None:
    with pytest.raises(errors.LocalProtocolError, match="key name"):
        create_sas_token(DOTNET_RESOURCE, key_name, PRIMARY, EXPIRY)


def test_a_key_passed_as_key_name_by_mistake_is_not_shown() -> None:
    with pytest.raises(errors.LocalProtocolError) as caught:
        create_sas_token(DOTNET_RESOURCE, PRIMARY, RULE, EXPIRY)
    assert PRIMARY not in str(caught.value)


@pytest.mark.parametrize("expiry", [-1, 2**63, True])
def test_create_refuses_an_expiry_outside_the_se_range(expiry: int) -> None:
    with pytest.raises(errors.LocalProtocolError, match="expiry"):
        create_sas_token(DOTNET_RESOURCE, RULE, PRIMARY, expiry)


def test_create_refuses_missing_or_unencodable_inputs_without_showing_the_key() -> None:
    with pytest.raises(errors.LocalProtocolError, match="resource"):
        create_sas_token("", RULE, PRIMARY, EXPIRY)
    with pytest.raises(errors.LocalProtocolError, match="empty"):
        create_sas_token(DOTNET_RESOURCE, RULE, "", EXPIRY)
    with pytest.raises(errors.LocalProtocolError) as caught:
        create_sas_token(DOTNET_RESOURCE, RULE, "secret\ud800", EXPIRY)
    assert "secret" not in str(caught.value)
    with pytest.raises(errors.LocalProtocolError, match="surrogates"):
        create_sas_token("http://ns/\udc00", RULE, PRIMARY, EXPIRY)


def test_create_accepts_the_largest_expiry() -> None:
    assert parse_sas_token(create_sas_token(DOTNET_RESOURCE, RULE, PRIMARY, 2**63 - 1)).expiry == (
        2**63 - 1
    )


@given(st.text())
def test_encode_component_output_is_unreserved_ascii_that_decodes_back(text: str) -> None:
    try:
        encoded = encode_component(text)
    except errors.LocalProtocolError:
        assert any("\ud800" <= character <= "\udfff" for character in text)
        return
    unreserved = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()%")
    assert set(encoded) <= unreserved
    assert unquote(encoded, errors="strict") == text


@given(st.text(alphabet=string.ascii_letters + string.digits + "-_.!~*'()/:+=%?&# $\u00e9"))
def test_encode_component_fast_path_matches_the_general_one(text: str) -> None:
    """URLs and base64 take a shortcut; it must spell everything as quote() does."""
    assert encode_component(text) == quote(text, safe="!~*'()")


# --- parsing -------------------------------------------------------------------------------------

RESOURCES = st.text(st.characters(codec="utf-8"), min_size=1)
KEY_NAMES = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="&=%"), min_size=1
)
KEYS_TEXT = st.text(st.characters(codec="utf-8"), min_size=1)
EXPIRIES = st.integers(min_value=0, max_value=2**63 - 1)


@given(RESOURCES, KEY_NAMES, KEYS_TEXT, EXPIRIES)
def test_create_then_parse_round_trips(resource: str, key_name: str, key: str, expiry: int) -> None:
    parsed = parse_sas_token(create_sas_token(resource, key_name, key, expiry))
    assert parsed.resource == resource
    assert parsed.encoded_resource == encode_component(resource)
    assert parsed.key_name == key_name
    assert parsed.expiry == expiry


@given(st.text())
def test_parse_returns_a_token_or_raises_invalid_token_error(text: str) -> None:
    try:
        parsed = parse_sas_token(text)
    except errors.InvalidTokenError:
        return
    assert isinstance(parsed, SasToken)


FIELD_TEXT = st.text(st.sampled_from("abAB09%+/=&-. \u00e9"), max_size=8)
TOKEN_LIKE = st.builds(
    lambda prefix, pairs: prefix + "&".join(pairs),
    st.sampled_from([SAS_PREFIX, "sharedaccesssignature ", "SharedAccessSignature", ""]),
    st.lists(
        st.builds(
            lambda name, separator, value: name + separator + value,
            st.sampled_from(["sr", "sig", "se", "skn", "SR", "Se", "skv", ""]),
            st.sampled_from(["=", ""]),
            st.one_of(FIELD_TEXT, st.integers(-5, 2**64).map(str)),
        ),
        max_size=7,
    ),
)


@given(TOKEN_LIKE)
def test_parse_of_token_like_text_returns_a_token_or_raises_invalid_token_error(
    text: str,
) -> None:
    try:
        parsed = parse_sas_token(text)
    except errors.InvalidTokenError:
        return
    assert parsed.expiry >= 0
    assert parsed.encoded_resource
    assert parsed.key_name


def good_fields() -> dict[str, str]:
    return {
        "sr": "http%3A%2F%2Fns%2Fhc1%2F",
        "sig": "SIGNATURE%2Babc%3D",
        "se": "17",
        "skn": "rule",
    }


def token_of(fields: dict[str, str]) -> str:
    return SAS_PREFIX + "&".join(f"{name}={value}" for name, value in fields.items())


@pytest.mark.parametrize("missing", ["sr", "sig", "se", "skn"])
def test_parse_names_a_missing_field(missing: str) -> None:
    fields = good_fields()
    del fields[missing]
    with pytest.raises(errors.InvalidTokenError, match=f"no '{missing}' field") as caught:
        parse_sas_token(token_of(fields))
    assert "SIGNATURE" not in str(caught.value)


@pytest.mark.parametrize("field", ["sr", "sig", "se", "skn"])
def test_parse_names_a_duplicated_field(field: str) -> None:
    token = token_of(good_fields()) + f"&{field.upper()}={good_fields()[field]}"
    with pytest.raises(errors.InvalidTokenError, match=f"more than one '{field}'") as caught:
        parse_sas_token(token)
    assert "SIGNATURE" not in str(caught.value)


@pytest.mark.parametrize("field", ["sr", "sig", "se", "skn"])
def test_parse_names_an_empty_field(field: str) -> None:
    fields = good_fields()
    fields[field] = ""
    with pytest.raises(errors.InvalidTokenError, match=f"'{field}' field is empty") as caught:
        parse_sas_token(token_of(fields))
    assert "SIGNATURE" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("se", "soon", "'se' field must be the expiry"),
        ("se", "-1", "'se' field must be the expiry"),
        ("se", "017", "'se' field must be the expiry"),
        ("se", "9" * 5000, "'se' field must be the expiry"),
        ("se", str(2**63), "'se' field must be the expiry"),
        ("sr", "http%3", "'sr' field has a '%' not followed by two hex digits"),
        ("sr", "http%G0", "'sr' field has a '%' not followed by two hex digits"),
        ("skn", "a%0G", "'skn' field has a '%' not followed by two hex digits"),
        ("sig", "SIGNATURE%FF", "'sig' field does not decode to UTF-8"),
    ],
)
def test_parse_says_which_field_is_bad_and_never_shows_it(
    field: str, value: str, complaint: str
) -> None:
    fields = good_fields()
    fields[field] = value
    with pytest.raises(errors.InvalidTokenError) as caught:
        parse_sas_token(token_of(fields))
    assert complaint in str(caught.value)
    assert "SIGNATURE" not in str(caught.value)
    assert value not in str(caught.value)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
        "SharedAccessSignature",
        "SharedAccessSignaturesr=x&sig=SIGNATURE&se=1&skn=k",
    ],
)
def test_parse_requires_the_prefix(token: str) -> None:
    with pytest.raises(errors.InvalidTokenError, match="must start with") as caught:
        parse_sas_token(token)
    assert "SIGNATURE" not in str(caught.value)


@pytest.mark.parametrize("body", ["sr=a b&sig=SIGNATURE", "sig=SIGNATURE\n", "sig=SIGNATURE\u00e9"])
def test_parse_refuses_spaces_controls_and_raw_non_ascii(body: str) -> None:
    with pytest.raises(errors.InvalidTokenError, match="visible ASCII") as caught:
        parse_sas_token(SAS_PREFIX + body)
    assert "SIGNATURE" not in str(caught.value)


def test_parse_refuses_a_field_without_equals_without_quoting_it() -> None:
    with pytest.raises(errors.InvalidTokenError, match="field 5 of the token has no '='") as caught:
        parse_sas_token(token_of(good_fields()) + "&SIGNATURE")
    assert "SIGNATURE" not in str(caught.value)


def test_parse_keeps_the_resource_text_the_signature_covers() -> None:
    parsed = parse_sas_token(
        "sharedaccesssignature sr=http%3a%2f%2fns%2fhc1&sig=a%2Bb%3D&se=0&skn=my%2Drule&skv=1"
    )
    assert parsed == SasToken(
        encoded_resource="http%3a%2f%2fns%2fhc1",
        resource="http://ns/hc1",
        signature="a+b=",
        expiry=0,
        key_name="my-rule",
    )


def test_repr_of_tokens_and_verdicts_hides_the_signature() -> None:
    token = signed(encode_component(DOTNET_RESOURCE))
    parsed = parse_sas_token(token)
    verdict = verify(token)
    for text in (repr(parsed), str(parsed), repr(verdict)):
        assert parsed.signature not in text
        assert "signature=" not in text
        assert DOTNET_RESOURCE in text


# --- verifying -----------------------------------------------------------------------------------

TARGETS = [
    f"sb://{NS}/hc1",
    f"sb://{NS.upper()}/HC1/",
    f"http://{NS}/hc1/",
    f"https://{NS}:443/hc1",
    f"wss://{NS}/$hc/hc1?sb-hc-action=listen&sb-hc-id=1",
    f"ws://{NS}:80/$HC/hc1#fragment",
    f"{NS}/hc1",
]
FORMS = {
    ".NET": encode_component(DOTNET_RESOURCE),
    "Node": encode_component(NODE_RESOURCE),
    "lowercase hex": "http%3a%2f%2fcontoso.servicebus.windows.net%2fhc1%2f",
    "sb with $hc": encode_component(f"SB://{NS.upper()}/$hc/Hc1"),
    "encoded path": encode_component(f"http://{NS}/h%63%31/"),
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("form", FORMS)
def test_every_sdk_form_of_the_resource_is_valid_for_every_form_of_the_target(
    form: str, target: str
) -> None:
    verdict = verify(signed(FORMS[form]), target)
    assert verdict.outcome is SasOutcome.VALID, verdict.detail
    assert verdict.valid


@pytest.mark.parametrize(
    "target", [f"sb://{NS}/hc1", f"sb://{NS}/other", f"sb://{NS}/", f"sb://{NS}/hc1/deep/path"]
)
def test_namespace_root_token_covers_every_entity(target: str) -> None:
    assert verify(signed(encode_component(f"http://{NS}/")), target).valid


@pytest.mark.parametrize(
    ("resource", "target", "outcome"),
    [
        (f"http://{NS}/hc", f"sb://{NS}/hc", SasOutcome.VALID),
        (f"http://{NS}/hc", f"sb://{NS}/hc/sub", SasOutcome.VALID),
        (f"http://{NS}/hc/", f"wss://{NS}/$hc/hc/sub/x?sb-hc-action=connect", SasOutcome.VALID),
        (f"http://{NS}/hc", f"sb://{NS}/hc1", SasOutcome.WRONG_RESOURCE),
        (f"http://{NS}/hc1", f"sb://{NS}/hc", SasOutcome.WRONG_RESOURCE),
        (f"http://{NS}/hc/sub", f"sb://{NS}/hc", SasOutcome.WRONG_RESOURCE),
        (f"http://{NS}/hc", f"sb://{NS}/", SasOutcome.WRONG_RESOURCE),
        (f"http://{NS}.evil.example/hc", f"sb://{NS}/hc", SasOutcome.WRONG_RESOURCE),
        (f"http://evil@{NS}/hc", f"sb://{NS}/hc", SasOutcome.WRONG_RESOURCE),
        (f"http://{NS}/hc/../hc2", f"sb://{NS}/hc2", SasOutcome.WRONG_RESOURCE),
        (f"http://{NS}/hc/%2E%2E/hc2", f"sb://{NS}/hc2", SasOutcome.WRONG_RESOURCE),
        ("relay", f"sb://{NS}/hc", SasOutcome.WRONG_RESOURCE),
    ],
)
def test_resource_covers_target_only_on_a_segment_boundary_of_the_same_host(
    resource: str, target: str, outcome: SasOutcome
) -> None:
    assert verify(signed(encode_component(resource)), target).outcome is outcome


def test_local_relay_hosts_with_ports_and_ipv6_match() -> None:
    assert verify(signed(encode_component("http://localhost:9000/hc1")), "ws://LocalHost/hc1").valid
    assert verify(signed(encode_component("http://[::1]/hc1/")), "ws://[::1]:9000/$hc/hc1").valid
    wrong = verify(signed(encode_component("http://[::1]/hc1/")), "ws://[::2]:9000/hc1")
    assert wrong.outcome is SasOutcome.WRONG_RESOURCE


def test_key_rotation_accepts_the_secondary_key_and_rejects_a_retired_one() -> None:
    token = signed(encode_component(DOTNET_RESOURCE), key=SECONDARY)
    assert verify(token).valid
    assert verify(token, keys={RULE: [PRIMARY, "NEWKEY"]}).outcome is SasOutcome.BAD_SIGNATURE


def test_each_outcome_is_reported_with_a_detail_that_holds_no_secret() -> None:
    encoded = encode_component(DOTNET_RESOURCE)
    cases = {
        SasOutcome.VALID: verify(signed(encoded)),
        SasOutcome.MALFORMED: verify(f"{SAS_PREFIX}sr={encoded}&sig=abc&se=1"),
        SasOutcome.UNKNOWN_KEY_NAME: verify(signed(encoded, skn="Stranger")),
        SasOutcome.BAD_SIGNATURE: verify(signed(encoded, key="SENDKEY")),
        SasOutcome.WRONG_RESOURCE: verify(signed(encoded), f"sb://{NS}/hc2"),
        SasOutcome.EXPIRED: verify(signed(encoded), now=EXPIRY + 10),
        SasOutcome.NOT_YET_VALID: verify(signed(encoded), now=EXPIRY - 7200, max_lifetime=3600),
    }
    assert set(cases) == set(SasOutcome)
    for outcome, verdict in cases.items():
        assert verdict.outcome is outcome
        assert verdict.valid is (outcome is SasOutcome.VALID)
        assert (verdict.token is None) is (outcome is SasOutcome.MALFORMED)
        assert verdict.detail
        for secret in (PRIMARY, SECONDARY, "SENDKEY"):
            assert secret not in verdict.detail
        if verdict.token is not None:
            assert verdict.token.signature not in verdict.detail
    assert "'Stranger'" in cases[SasOutcome.UNKNOWN_KEY_NAME].detail
    assert "hc2" in cases[SasOutcome.WRONG_RESOURCE].detail
    assert str(EXPIRY) in cases[SasOutcome.EXPIRED].detail
    assert "3600" in cases[SasOutcome.NOT_YET_VALID].detail
    assert "no 'skn' field" in cases[SasOutcome.MALFORMED].detail


def test_checks_run_in_order_so_forgers_learn_nothing_about_resource_or_expiry() -> None:
    forged = signed(encode_component("http://fabrikam.example/"), key="GUESS")
    assert verify(forged, now=EXPIRY + 1).outcome is SasOutcome.BAD_SIGNATURE
    unknown = signed(encode_component("http://fabrikam.example/"), skn="Nobody")
    assert verify(unknown, now=EXPIRY + 1).outcome is SasOutcome.UNKNOWN_KEY_NAME
    elsewhere = signed(encode_component("http://fabrikam.example/"))
    assert verify(elsewhere, now=EXPIRY + 1).outcome is SasOutcome.WRONG_RESOURCE
    too_long = signed(encode_component(DOTNET_RESOURCE))
    expired = verify(too_long, now=EXPIRY, max_lifetime=0)
    assert expired.outcome is SasOutcome.EXPIRED


def test_max_lifetime_is_an_inclusive_bound() -> None:
    token = signed(encode_component(DOTNET_RESOURCE))
    assert verify(token, now=EXPIRY - 3600, max_lifetime=3600).valid
    late = verify(token, now=EXPIRY - 3600.5, max_lifetime=3600)
    assert late.outcome is SasOutcome.NOT_YET_VALID


def test_signature_covers_the_expiry_and_the_resource_text() -> None:
    encoded = encode_component(DOTNET_RESOURCE)
    original = signed(encoded)
    longer = original.replace(f"se={EXPIRY}", f"se={EXPIRY + 86400}")
    assert verify(longer).outcome is SasOutcome.BAD_SIGNATURE
    recased = original.replace("%2F", "%2f")
    assert verify(recased).outcome is SasOutcome.BAD_SIGNATURE


def test_long_key_names_and_resources_are_cut_short_in_details() -> None:
    name = "k" * 5000
    verdict = verify(signed(encode_component(DOTNET_RESOURCE), skn=name))
    assert verdict.outcome is SasOutcome.UNKNOWN_KEY_NAME
    assert len(verdict.detail) < 300
    elsewhere = verify(signed(encode_component(f"http://{NS}/{'a' * 5000}")))
    assert elsewhere.outcome is SasOutcome.WRONG_RESOURCE
    assert len(elsewhere.detail) < 300


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_verify_refuses_a_clock_that_is_not_finite(now: float) -> None:
    with pytest.raises(errors.LocalProtocolError, match="now"):
        verify(signed(encode_component(DOTNET_RESOURCE)), now=now)


@pytest.mark.parametrize("max_lifetime", [-1.0, math.nan, math.inf])
def test_verify_refuses_a_lifetime_that_is_not_finite_and_positive(max_lifetime: float) -> None:
    with pytest.raises(errors.LocalProtocolError, match="max_lifetime"):
        verify(signed(encode_component(DOTNET_RESOURCE)), max_lifetime=max_lifetime)


def test_verify_refuses_a_rule_whose_keys_are_one_string() -> None:
    # A str is a sequence of one-character keys: accepting it would make every character a key.
    with pytest.raises(errors.LocalProtocolError, match="not one string") as caught:
        verify(signed(encode_component(DOTNET_RESOURCE)), keys={RULE: PRIMARY})
    assert PRIMARY not in str(caught.value)


def test_verify_refuses_an_empty_configured_key() -> None:
    with pytest.raises(errors.LocalProtocolError, match="empty"):
        verify(signed(encode_component(DOTNET_RESOURCE)), keys={RULE: [""]})


def test_verify_with_a_rule_without_keys_finds_a_bad_signature() -> None:
    verdict = verify(signed(encode_component(DOTNET_RESOURCE)), keys={RULE: []})
    assert verdict.outcome is SasOutcome.BAD_SIGNATURE


@pytest.mark.parametrize(
    "target",
    [
        "ftp://ns/hc1",
        "sb:///hc1",
        "sb://user:pass@ns/hc1",
        "sb://ns:port/hc1",
        "sb://ns/a/../hc1",
        "sb://[::1/hc1",
        "sb://[]/hc1",
        "sb://[zz]/hc1",
        "sb://[::1]x/hc1",
        "sb://[::1]:x/hc1",
        "sb://n s/hc1",
        "sb://ns\\hc1",
        "",
    ],
)
def test_a_target_that_is_no_relay_uri_is_covered_by_no_token(target: str) -> None:
    # A relay builds the target from the Host a client sent: a verdict, never an exception.
    verdict = verify(signed(encode_component(DOTNET_RESOURCE)), target)
    assert verdict.outcome is SasOutcome.WRONG_RESOURCE
    assert "no relay URI" in verdict.detail
    forged = verify(signed(encode_component(DOTNET_RESOURCE), key="GUESS"), target)
    assert forged.outcome is SasOutcome.BAD_SIGNATURE


def test_a_host_holding_dot_dot_gives_a_verdict() -> None:
    host = "evil/.."
    verdict = verify(signed(encode_component(DOTNET_RESOURCE)), f"http://{host}/hc1")
    assert verdict.outcome is SasOutcome.WRONG_RESOURCE
    assert verify("garbage", f"http://{host}/hc1").outcome is SasOutcome.MALFORMED


@given(st.text(), st.text())
def test_verify_never_raises_for_any_token_and_any_host(token: str, host: str) -> None:
    for candidate in (token, signed(encode_component(DOTNET_RESOURCE))):
        verdict = verify(candidate, f"http://{host}/hc1")
        assert isinstance(verdict, SasVerdict)


@given(st.text(), st.text())
def test_verify_never_raises_for_any_target(token: str, target: str) -> None:
    assert isinstance(verify(token, target), SasVerdict)
    assert isinstance(verify(signed(encode_component(DOTNET_RESOURCE)), target), SasVerdict)


def test_invalid_url_errors_never_quote_the_uri() -> None:
    token = "SharedAccessSignature sr=x&sig=SIGNATURE&se=1&skn=k"
    for uri in (
        f"ftp://ns/hc1?sb-hc-token={token}",
        "sb://user:SIGNATURE@ns/",
        "sb://ns:SIGNATURE/",
        "sb://SIG NATURE/",
    ):
        with pytest.raises(errors.InvalidUrlError) as caught:
            relay_token_resource(uri)
        assert "SIGNATURE" not in str(caught.value)
        assert "SIG NATURE" not in str(caught.value)


def test_relay_token_resource_keeps_an_empty_port_and_inner_path() -> None:
    assert relay_token_resource(f"sb://{NS}:/a//b//") == f"http://{NS}/a//b/"
    assert relay_token_resource(f"{NS}/a://b") == f"http://{NS}/a://b/"
    assert relay_token_resource(f"{NS}") == f"http://{NS}/"
    assert relay_token_resource(f"wss://{NS}/$HC//hc1") == f"http://{NS}/hc1/"


def test_verdict_carries_a_token_unless_malformed() -> None:
    parsed = parse_sas_token(signed(encode_component(DOTNET_RESOURCE)))
    with pytest.raises(errors.LocalProtocolError):
        SasVerdict(outcome=SasOutcome.MALFORMED, token=parsed, detail="x")
    with pytest.raises(errors.LocalProtocolError):
        SasVerdict(outcome=SasOutcome.VALID, token=None, detail="x")


@given(st.text(), st.sampled_from(TARGETS), st.floats(-1e12, 1e12), st.none() | st.floats(0, 1e9))
def test_verify_never_raises_for_any_token(
    token: str, target: str, now: float, max_lifetime: float | None
) -> None:
    verdict = verify(token, target, now=now, max_lifetime=max_lifetime)
    assert verdict.outcome is SasOutcome.MALFORMED or verdict.token is not None


@given(RESOURCES, st.sampled_from(TARGETS))
def test_verify_never_raises_for_signed_tokens_over_any_resource(
    resource: str, target: str
) -> None:
    verdict = verify(signed(encode_component(resource)), target)
    assert verdict.outcome in (SasOutcome.VALID, SasOutcome.WRONG_RESOURCE)


@given(TOKEN_LIKE, st.sampled_from(TARGETS))
def test_verify_never_raises_for_token_like_text(token: str, target: str) -> None:
    assert isinstance(verify(token, target), SasVerdict)


@given(st.text())
def test_relay_token_resource_returns_a_resource_or_raises_invalid_url_error(uri: str) -> None:
    try:
        resource = relay_token_resource(uri)
    except errors.InvalidUrlError:
        return
    assert resource.startswith("http://")
    assert resource.endswith("/")


HOSTS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}", fullmatch=True)
SEGMENTS = st.lists(
    st.text(st.sampled_from("abcXYZ019-_.~$"), min_size=1, max_size=6).filter(
        lambda segment: segment not in (".", "..")
    ),
    max_size=3,
)


@given(
    st.sampled_from(["sb", "https", "wss", "ws", "HTTP"]),
    HOSTS,
    st.none() | st.integers(1, 65535),
    SEGMENTS,
)
def test_relay_tokens_verify_for_their_entity_and_its_sub_paths_only(
    scheme: str, host: str, port: int | None, segments: list[str]
) -> None:
    authority = host if port is None else f"{host}:{port}"
    path = "/".join(segments)
    uri = f"{scheme}://{authority}/{path}"
    token = create_relay_token(uri, RULE, PRIMARY, 60, now=NOW)
    assert verify(token, uri).valid
    assert verify(token, f"wss://{host.upper()}/$hc/{path}/sub?sb-hc-action=connect").valid
    if segments:
        sibling = "/".join([*segments[:-1], segments[-1] + "x"])
        assert verify(token, f"sb://{host}/{sibling}").outcome is SasOutcome.WRONG_RESOURCE


KELVIN = "\u212a"


@pytest.mark.parametrize(
    ("resource", "target"),
    [
        (f"http://{NS}/{KELVIN}elvin", f"sb://{NS}/kelvin"),
        (f"http://{NS}/kelvin", f"sb://{NS}/{KELVIN}elvin"),
        (f"http://{NS}/%E2%84%AAelvin", f"sb://{NS}/kelvin"),
        (f"http://{KELVIN}ontoso/hc1", "sb://kontoso/hc1"),
        ("http://kontoso/hc1", f"sb://{KELVIN}ontoso/hc1"),
    ],
)
def test_a_token_for_a_name_with_the_kelvin_sign_opens_no_ascii_name(
    resource: str, target: str
) -> None:
    # str.lower() turns the Kelvin sign into 'k': names compare by ASCII case only.
    verdict = verify(signed(encode_component(resource)), target)
    assert verdict.outcome is SasOutcome.WRONG_RESOURCE


def test_a_prefix_with_non_ascii_capitals_is_not_the_sas_prefix() -> None:
    token = signed(encode_component(DOTNET_RESOURCE)).replace("Shared", "\u0130hared", 1)
    assert verify(token).outcome is SasOutcome.MALFORMED


def test_relay_token_resource_refuses_a_path_that_starts_with_hc_twice() -> None:
    with pytest.raises(errors.InvalidUrlError, match="twice"):
        relay_token_resource(f"wss://{NS}/$hc/$HC/hc1")


# A primary key as the portal shows it: base64 of 32 bytes, with '+', '/' and '='.
SWAPPED_KEY = "q7+Lw/3kZx9T2mJv8Hn0RbYc5dFgUe1AsWpXoKiN4lE="


@pytest.mark.parametrize(
    ("keys", "key", "outcome"),
    [
        (KEYS, PRIMARY, SasOutcome.UNKNOWN_KEY_NAME),
        ({SWAPPED_KEY: [RULE]}, "GUESS", SasOutcome.BAD_SIGNATURE),
        ({SWAPPED_KEY: [RULE]}, RULE, SasOutcome.VALID),
    ],
)
def test_a_key_given_as_the_key_name_is_never_echoed(
    keys: dict[str, list[str]], key: str, outcome: SasOutcome
) -> None:
    token = signed(encode_component(DOTNET_RESOURCE), key=key, skn=SWAPPED_KEY)
    verdict = verify(token, keys=keys)
    assert verdict.outcome is outcome
    assert SWAPPED_KEY not in verdict.detail
    assert SWAPPED_KEY[:20] not in verdict.detail
    assert verdict.token is not None
    assert SWAPPED_KEY not in repr(verdict.token)
    assert SWAPPED_KEY not in repr(verdict)
    if outcome is SasOutcome.UNKNOWN_KEY_NAME:
        assert "an unknown key name" in verdict.detail


@pytest.mark.parametrize(
    "name",
    ["RootManageSharedAccessKey2", "send-only", "a", "rule_1.x", "A" * 50],
)
def test_a_key_name_shaped_like_a_rule_name_is_echoed(name: str) -> None:
    verdict = verify(signed(encode_component(DOTNET_RESOURCE), skn=name))
    assert verdict.outcome is SasOutcome.UNKNOWN_KEY_NAME
    assert repr(name) in verdict.detail
    assert repr(name) in repr(verdict.token)


@pytest.mark.parametrize(
    "name",
    ["A" * 51, "-rule", "rule-", "rule.", "ru le", "ru!e", "k\u212aey", "abc+def", "abc/def"],
)
def test_a_key_name_not_shaped_like_a_rule_name_is_not_echoed(name: str) -> None:
    verdict = verify(signed(encode_component(DOTNET_RESOURCE), skn=encode_component(name)))
    assert verdict.outcome is SasOutcome.UNKNOWN_KEY_NAME
    assert name not in verdict.detail
    assert "an unknown key name" in verdict.detail


def test_a_misconfigured_rule_named_like_a_key_is_not_echoed_either() -> None:
    with pytest.raises(errors.LocalProtocolError, match="a rule must be") as caught:
        verify(signed(encode_component(DOTNET_RESOURCE)), keys={SWAPPED_KEY: PRIMARY})
    assert SWAPPED_KEY not in str(caught.value)
    with pytest.raises(errors.LocalProtocolError, match=f"rule '{RULE}'"):
        verify(signed(encode_component(DOTNET_RESOURCE)), keys={RULE: PRIMARY})


def test_the_detail_of_a_valid_token_names_its_rule() -> None:
    verdict = verify(signed(encode_component(DOTNET_RESOURCE)))
    assert f"the rights of '{RULE}'" in verdict.detail
    named = verify(signed(encode_component(DOTNET_RESOURCE), skn="x+y"), keys={"x+y": [PRIMARY]})
    assert named.valid
    assert "its rule" in named.detail
    assert "x+y" not in named.detail


@pytest.mark.parametrize(
    ("resource", "target", "outcome"),
    [
        (f"http://{NS}/hc1/", f"http://{NS}//hc1", SasOutcome.VALID),
        (f"http://{NS}/hc1/", f"wss://{NS}//$hc//hc1/x", SasOutcome.VALID),
        (f"http://{NS}/a/b", f"http://{NS}//a", SasOutcome.WRONG_RESOURCE),
        (f"http://{NS}/a/b", f"http://{NS}/a//", SasOutcome.WRONG_RESOURCE),
        (f"http://{NS}//a", f"http://{NS}/a/b", SasOutcome.VALID),
        (f"http://{NS}/hc1/", f"http://{NS}//hc2", SasOutcome.WRONG_RESOURCE),
        (f"http://{NS}/hc1/", f"http://{NS}//hc1/..", SasOutcome.WRONG_RESOURCE),
    ],
)
def test_empty_segments_widen_no_token(resource: str, target: str, outcome: SasOutcome) -> None:
    assert verify(signed(encode_component(resource)), target).outcome is outcome

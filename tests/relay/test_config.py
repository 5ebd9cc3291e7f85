"""Tests of hyco_relay.config: reading, checking and watching the local relay's configuration."""

from __future__ import annotations

import datetime
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco_core.connection_string import parse_connection_string
from hyco_core.errors import ConnectionStringError, HycoError, LocalProtocolError
from hyco_core.sas import SasOutcome, create_relay_token, create_sas_token, verify_sas_token
from hyco_relay.config import (
    AccessRule,
    ConfigError,
    ConfigWatcher,
    EntityConfig,
    NamespaceConfig,
    PublicAddress,
    RelayConfig,
    Right,
    connection_string_for,
    default_config,
    load_config,
    parse_config,
    parse_public_url,
)

KEY = "zQ9-SECRET-primary-Zm9vYmFyYmF6cXV4=="
KEY2 = "zQ9-SECRET-secondary-cXV4YmF6YmFyZm9v=="
KEY3 = "zQ9-SECRET-entity-c2VuZG9ubHlrZXk="
SECRET_MARK = "zQ9-SECRET-"
NS = "contoso.servicebus.windows.net"
NOW = 1_700_000_000

EXAMPLE = f"""
[relay]
host = "10.0.0.1"
port = 0
max_listeners_per_entity = 3
rendezvous_timeout = 5
request_timeout = 2.5

[[namespace]]
name = "Contoso.ServiceBus.Windows.Net"
default = true

  [[namespace.rule]]
  name = "RootManageSharedAccessKey"
  primary_key = "{KEY}"
  secondary_key = "{KEY2}"
  rights = ["Manage"]

  [[namespace.entity]]
  name = "hc1"
  requires_client_authorization = true

    [[namespace.entity.rule]]
    name = "send-only"
    primary_key = "{KEY3}"
    rights = ["Send"]

  [[namespace.entity]]
  name = "open/anonymous"
  requires_client_authorization = false

[[namespace]]
name = "fabrikam.localhost"

  [[namespace.rule]]
  name = "listen-only"
  primary_key = "{KEY}"
  rights = ["listen"]
"""

RULE = f"""
  [[namespace.rule]]
  name = "root"
  primary_key = "{KEY}"
  rights = ["Manage"]
"""


def rule(name: str = "root", rights: Right = Right.MANAGE, key: str = KEY) -> AccessRule:
    return AccessRule(name=name, primary_key=key, rights=rights)


def namespace(name: str = NS, **kwargs: Any) -> NamespaceConfig:
    return NamespaceConfig(name=name, **kwargs)


# --- reading files ---------------------------------------------------------------------------


def test_example_file_loads_with_everything_it_says(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(EXAMPLE, "utf-8")
    config = load_config(path)
    assert (config.host, config.port, config.max_listeners_per_entity) == ("10.0.0.1", 0, 3)
    assert config.rendezvous_timeout == 5.0
    assert isinstance(config.rendezvous_timeout, float)
    assert config.request_timeout == 2.5
    contoso, fabrikam = config.namespaces
    assert contoso.name == NS
    assert contoso.default
    assert not fabrikam.default
    (root,) = contoso.rules
    assert root.name == "RootManageSharedAccessKey"
    assert root.keys == (KEY, KEY2)
    assert root.rights == Right.MANAGE | Right.LISTEN | Right.SEND
    hc1, anonymous = contoso.entities
    assert hc1.name == "hc1"
    assert hc1.requires_client_authorization
    assert hc1.rules == (AccessRule(name="send-only", primary_key=KEY3, rights=Right.SEND),)
    assert anonymous.name == "open/anonymous"
    assert not anonymous.requires_client_authorization
    assert anonymous.rules == ()
    assert fabrikam.rules[0].rights == Right.LISTEN
    assert fabrikam.entities == ()
    assert parse_config(EXAMPLE) == config


def test_relay_table_and_optional_keys_take_their_defaults() -> None:
    config = parse_config(f'[[namespace]]\nname = "{NS}"\n[[namespace.entity]]\nname = "hc"')
    assert config == RelayConfig(
        namespaces=(NamespaceConfig(name=NS, entities=(EntityConfig(name="hc"),)),)
    )
    assert (config.host, config.port) == ("127.0.0.1", 9090)
    assert config.max_listeners_per_entity == 25
    assert (config.rendezvous_timeout, config.request_timeout) == (30.0, 60.0)
    assert not config.namespaces[0].default
    assert config.namespaces[0].entities[0].requires_client_authorization


def test_hardening_settings_and_public_addresses_are_read() -> None:
    config = parse_config(
        "[relay]\n"
        'public_url = "WSS://Relay.Example.com:8443/"\n'
        "write_timeout = 2.5\n"
        "max_connections_per_address = 0\n"
        "max_token_lifetime = 3600\n"
        "stats_requires_manage = true\n" + ns_doc('public_url = "http://[::1]:9000"')
    )
    assert (config.write_timeout, config.max_token_lifetime) == (2.5, 3600.0)
    assert (config.max_connections_per_address, config.stats_requires_manage) == (0, True)
    assert config.public_url is not None
    assert parse_public_url(config.public_url) == PublicAddress(
        secure=True, authority="relay.example.com:8443"
    )
    namespace_url = config.namespaces[0].public_url
    assert namespace_url is not None
    assert parse_public_url(namespace_url) == PublicAddress(secure=False, authority="[::1]:9000")
    assert parse_public_url("sb://a.example").url(True, "/$hc/x") == "wss://a.example/$hc/x"
    assert parse_public_url("ws://a.example:1").url(False, "/x") == "http://a.example:1/x"
    defaults = parse_config(ns_doc())
    assert defaults.public_url is None
    assert defaults.max_connections_per_address is None  # half the descriptor limit
    assert (defaults.max_token_lifetime, defaults.stats_requires_manage) == (0.0, False)


def test_an_empty_secondary_key_counts_as_none() -> None:
    text = RULE.replace('rights = ["Manage"]', 'rights = ["Send"]\nsecondary_key = ""')
    (parsed,) = parse_config(f'[[namespace]]\nname = "a"\n{text}').namespaces[0].rules
    assert parsed.keys == (KEY,)


def test_a_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.encode())
    assert load_config(str(path)) == parse_config(EXAMPLE)


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="cannot be read") as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_bytes(b'[[namespace]]\nname = "\xff"\n')
    with pytest.raises(ConfigError, match="is not UTF-8 text: save it as UTF-8"):
        load_config(path)


def test_config_error_is_a_hyco_error_and_a_value_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("")
    assert isinstance(caught.value, HycoError)
    assert isinstance(caught.value, ValueError)


# --- validation: every rule, located in the file, never showing a key -----------------------


def ns_doc(body: str = "", name: str = "a") -> str:
    return f'[[namespace]]\nname = "{name}"\n{body}\n{RULE}'


def entity_doc(body: str) -> str:
    return ns_doc(f"[[namespace.entity]]\n{body}")


INVALID: list[tuple[str, str, list[str]]] = [
    ("not TOML", 'x = "unterminated', ["is not valid TOML", "toml.io"]),
    ("no namespace", "", ["there is no [[namespace]]"]),
    ("only a relay table", "[relay]\nport = 1", ["there is no [[namespace]]"]),
    ("unknown top-level key", "version = 2\n" + ns_doc(), ["top level: unknown key 'version'"]),
    ("relay not a table", "relay = 1\n" + ns_doc(), ["top level", "'relay' must be a table"]),
    ("namespace as one table", '[namespace]\nname = "a"', ["'namespace' must be tables written"]),
    ("namespace as scalars", "namespace = [1]", ["[[namespace]]"]),
    (
        "entity not tables",
        ns_doc("entity = 1"),
        ["'entity' must be tables", "[[namespace.entity]]"],
    ),
    ("rule not tables", ns_doc().replace(RULE, "rule = [1]"), ["[[namespace.rule]]"]),
    (
        "entity rule not tables",
        entity_doc('name = "hc"\nrule = "x"'),
        ["entity #1 ('hc')", "[[namespace.entity.rule]]"],
    ),
    ("unknown relay key", "[relay]\nprot = 1\n" + ns_doc(), ["[relay]", "unknown key 'prot'"]),
    (
        "unknown namespace keys",
        ns_doc("dfault = true\nentitys = []"),
        [
            "namespace #1 ('a')",
            "unknown keys 'dfault', 'entitys'",
            "name, default, public_url, rule, entity",
        ],
    ),
    ("unknown entity key", entity_doc('name = "hc"\nrequires_auth = false'), ["'requires_auth'"]),
    (
        "unknown rule key: a typo next to a key",
        ns_doc().replace("primary_key", "primary-key"),
        ["rule #1 ('root')", "unknown key 'primary-key'"],
    ),
    (
        "host wrong type",
        "[relay]\nhost = 1\n" + ns_doc(),
        ["'host' must be a string, not an integer"],
    ),
    ("host empty", '[relay]\nhost = ""\n' + ns_doc(), ["[relay]: 'host' must be an address"]),
    ("host padded", '[relay]\nhost = " ::"\n' + ns_doc(), ["'host' must be an address"]),
    (
        "port as string",
        '[relay]\nport = "9090"\n' + ns_doc(),
        ["'port' must be an integer, not a string"],
    ),
    (
        "port as boolean",
        "[relay]\nport = true\n" + ns_doc(),
        ["'port' must be an integer, not a boolean"],
    ),
    ("port as float", "[relay]\nport = 90.5\n" + ns_doc(), ["not a float"]),
    ("port negative", "[relay]\nport = -1\n" + ns_doc(), ["'port' must be from 0 to 65535"]),
    ("port too big", "[relay]\nport = 65536\n" + ns_doc(), ["'port' must be from 0 to 65535"]),
    ("listeners zero", "[relay]\nmax_listeners_per_entity = 0\n" + ns_doc(), ["at least 1"]),
    ("listeners as float", "[relay]\nmax_listeners_per_entity = 2.0\n" + ns_doc(), ["an integer"]),
    ("timeout as string", '[relay]\nrendezvous_timeout = "30"\n' + ns_doc(), ["must be a number"]),
    ("timeout as boolean", "[relay]\nrequest_timeout = true\n" + ns_doc(), ["not a boolean"]),
    ("timeout as table", "[relay]\nrequest_timeout = {}\n" + ns_doc(), ["not a table"]),
    ("timeout as array", "[relay]\nrequest_timeout = []\n" + ns_doc(), ["not an array"]),
    ("timeout as date", "[relay]\nrequest_timeout = 2024-01-01\n" + ns_doc(), ["a date or time"]),
    ("timeout zero", "[relay]\nrendezvous_timeout = 0\n" + ns_doc(), ["above zero"]),
    ("timeout negative", "[relay]\nrequest_timeout = -1.5\n" + ns_doc(), ["above zero"]),
    ("timeout nan", "[relay]\nrequest_timeout = nan\n" + ns_doc(), ["finite"]),
    ("timeout inf", "[relay]\nrequest_timeout = inf\n" + ns_doc(), ["finite"]),
    ("timeout overflowing", "[relay]\nrequest_timeout = 1e400\n" + ns_doc(), ["finite"]),
    ("timeout huge integer", f"[relay]\nrequest_timeout = {10**400}\n" + ns_doc(), ["finite"]),
    (
        "public url without a scheme",
        '[relay]\npublic_url = "relay.example.com"\n' + ns_doc(),
        ["[relay]", "must start with wss://, https:// or sb://"],
    ),
    (
        "public url with a path",
        '[relay]\npublic_url = "wss://relay.example.com/x"\n' + ns_doc(),
        ["no path, query or user name"],
    ),
    (
        "public url with a user",
        '[relay]\npublic_url = "https://me@relay.example.com"\n' + ns_doc(),
        ["no path, query or user name"],
    ),
    (
        "public url with a bad port",
        '[relay]\npublic_url = "ws://relay.example.com:0"\n' + ns_doc(),
        ["not a valid address", "port"],
    ),
    ("public url as number", "[relay]\npublic_url = 1\n" + ns_doc(), ["must be a string"]),
    (
        "namespace public url",
        ns_doc('public_url = "ftp://x"'),
        ["namespace #1", "must start with wss://"],
    ),
    ("write timeout zero", "[relay]\nwrite_timeout = 0\n" + ns_doc(), ["above zero"]),
    (
        "connection cap negative",
        "[relay]\nmax_connections_per_address = -1\n" + ns_doc(),
        ["0 (no limit) or more"],
    ),
    (
        "token lifetime negative",
        "[relay]\nmax_token_lifetime = -5\n" + ns_doc(),
        ["0 for no limit"],
    ),
    (
        "stats option as string",
        '[relay]\nstats_requires_manage = "yes"\n' + ns_doc(),
        ["must be true or false"],
    ),
    (
        "namespace name missing",
        "[[namespace]]\ndefault = true",
        ["namespace #1", "'name' is missing"],
    ),
    ("namespace name wrong type", "[[namespace]]\nname = 1", ["'name' must be a string"]),
    ("namespace name empty", ns_doc(name=""), ["namespace #1: 'name' is not a valid host name"]),
    ("namespace name with space", ns_doc(name="a b"), ["'name' is not a valid host name"]),
    ("namespace name with port", ns_doc(name="a:9090"), ["without a port", "[relay]"]),
    ("namespace IPv6 with port", ns_doc(name="[::1]:9090"), ["without a port"]),
    (
        "namespace default wrong type",
        ns_doc('default = "yes"'),
        ["'default' must be true or false"],
    ),
    (
        "namespaces duplicated",
        ns_doc(name="A.example") + "\n" + ns_doc(name="a.EXAMPLE"),
        ["two namespaces are named 'a.example'", "case-insensitively"],
    ),
    (
        "two defaults",
        ns_doc("default = true", "a") + ns_doc("default = true", "b") + ns_doc(name="c"),
        ["'a', 'b'", "'default = true'"],
    ),
    (
        "entity name missing",
        entity_doc("requires_client_authorization = true"),
        ["entity #1: 'name' is missing"],
    ),
    ("entity name wrong type", entity_doc("name = []"), ["'name' must be a string, not an array"]),
    ("entity name empty", entity_doc('name = ""'), ["entity #1: 'name' is not a valid", "empty"]),
    ("entity empty segment", entity_doc('name = "a//b"'), ["entity #1 ('a//b')", "'//'"]),
    ("entity leading slash", entity_doc('name = "/a"'), ["start or end with '/'"]),
    ("entity trailing slash", entity_doc('name = "a/"'), ["start or end with '/'"]),
    ("entity $hc first", entity_doc('name = "$hc/a"'), ["'$hc'"]),
    ("entity $hc later", entity_doc('name = "a/$hc"'), ["ASCII letters, digits"]),
    ("entity dot segment", entity_doc('name = "a/./b"'), ["'.' or '..'"]),
    ("entity dot-dot", entity_doc('name = ".."'), ["'.' or '..'"]),
    ("entity space", entity_doc('name = "a b"'), ["ASCII letters, digits, '-', '_', '.' and '/'"]),
    (
        "long names are shortened",
        entity_doc(f'name = "{"x" * 70} y"'),
        [f"entity #1 ({'x' * 60!r}...): "],
    ),
    ("entity non-ASCII", entity_doc('name = "caf\u00e9"'), ["ASCII letters"]),
    ("entity query", entity_doc('name = "a?b=1"'), ["ASCII letters"]),
    (
        "entity authorization wrong type",
        entity_doc('name = "hc"\nrequires_client_authorization = "false"'),
        ["'requires_client_authorization' must be true or false, not a string"],
    ),
    (
        "entities duplicated",
        ns_doc('[[namespace.entity]]\nname = "HC/x"\n[[namespace.entity]]\nname = "hc/X"'),
        ["namespace #1 ('a')", "two entities of namespace 'a' are named 'HC/x' and 'hc/X'"],
    ),
    ("rule name missing", ns_doc().replace('name = "root"', ""), ["rule #1: 'name' is missing"]),
    ("rule name wrong type", ns_doc().replace('"root"', "1"), ["'name' must be a string"]),
    ("rule name empty", ns_doc().replace('"root"', '""'), ["rule #1: 'name' is empty"]),
    ("rule name with space", ns_doc().replace('"root"', '"my rule"'), ["visible ASCII"]),
    ("rule name with =", ns_doc().replace('"root"', '"a=b"'), ["'='"]),
    ("rule name with ;", ns_doc().replace('"root"', '"a;b"'), ["';'"]),
    ("rule name non-ASCII", ns_doc().replace('"root"', '"r\u00f6\u00f6t"'), ["visible ASCII"]),
    (
        "primary key missing",
        ns_doc().replace(f'primary_key = "{KEY}"', ""),
        ["'primary_key' is missing"],
    ),
    (
        "primary key wrong type",
        ns_doc().replace(f'"{KEY}"', "42"),
        ["'primary_key' must be a string, not an integer"],
    ),
    (
        "primary key empty",
        ns_doc().replace(f'"{KEY}"', '""'),
        ["rule 'root' has an empty 'primary_key'"],
    ),
    (
        "secondary key wrong type",
        ns_doc().replace("rights", "secondary_key = 1\nrights"),
        ["'secondary_key' must be a string"],
    ),
    ("rights missing", ns_doc().replace('rights = ["Manage"]', ""), ["'rights' is missing"]),
    (
        "rights as a string",
        ns_doc().replace('["Manage"]', '"Manage"'),
        ["'rights' must be an array of strings, not a string"],
    ),
    (
        "rights holding numbers",
        ns_doc().replace('["Manage"]', "[1]"),
        ["'rights' must hold only strings"],
    ),
    ("rights empty", ns_doc().replace('["Manage"]', "[]"), ["rule 'root' has no 'rights'"]),
    (
        "rights unknown",
        ns_doc().replace('"Manage"', '"Read"'),
        ["'Read' is not a right", "Listen, Send and Manage"],
    ),
    (
        "namespace rules duplicated",
        ns_doc(RULE.replace('"root"', '"ROOT"')),
        ["two rules of namespace 'a' are named 'ROOT' and 'root'"],
    ),
    (
        "entity rules duplicated",
        entity_doc(
            'name = "hc"\n' + (RULE + RULE).replace("namespace.rule", "namespace.entity.rule")
        ),
        ["entity #1 ('hc')", "two rules of entity 'hc' are named 'root'"],
    ),
]


@pytest.mark.parametrize(
    ("text", "mentions"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_configuration_is_refused_with_its_place_and_without_keys(
    text: str, mentions: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="relay.toml")
    message = str(caught.value)
    assert message.startswith("relay.toml: ")
    for mention in mentions:
        assert mention in message
    assert SECRET_MARK not in message


def test_the_same_rule_name_may_appear_for_the_namespace_and_for_an_entity() -> None:
    text = entity_doc('name = "hc"\n' + RULE.replace("namespace.rule", "namespace.entity.rule"))
    config = parse_config(text)
    assert config.namespaces[0].rules == config.namespaces[0].entities[0].rules


def test_a_rule_name_may_hold_any_visible_ascii_a_token_can_carry() -> None:
    name = "!#$'()*+,-./09:<>?@AZ[\\]^_`az{|}~"
    assert rule(name=name).name == name
    token = create_sas_token(f"http://{NS}/hc", name, KEY, NOW + 60)
    ns = namespace(rules=(rule(name=name),), entities=(EntityConfig(name="hc"),))
    config = RelayConfig(namespaces=(ns,))
    keys = config.keys_for(ns, ns.entities[0], Right.LISTEN)
    assert verify_sas_token(token, keys=keys, target=f"{NS}/hc", now=NOW).valid


# --- value objects built directly -------------------------------------------------------------


def test_right_parse_is_case_insensitive_and_manage_implies_listen_and_send() -> None:
    assert Right.parse(["Manage"]) == Right.MANAGE | Right.LISTEN | Right.SEND
    assert Right.parse(["LISTEN", "send"]) == Right.LISTEN | Right.SEND
    assert Right.parse(("listen", "Listen")) == Right.LISTEN
    assert Right.parse([]) == Right(0)


@pytest.mark.parametrize("name", ["Read", "", "Listen ", "\u017fend", "MANAGE\u0130"])
def test_right_parse_refuses_other_names(name: str) -> None:
    with pytest.raises(ConfigError, match="is not a right"):
        Right.parse([name])


def test_right_parse_refuses_one_string_instead_of_a_list() -> None:
    with pytest.raises(ConfigError, match="not one string"):
        Right.parse("Send")


def test_access_rule_repr_hides_keys_and_rights_include_what_manage_implies() -> None:
    built = AccessRule(name="root", primary_key=KEY, secondary_key=KEY2, rights=Right.MANAGE)
    assert SECRET_MARK not in repr(built)
    assert "root" in repr(built)
    assert built.rights == Right.MANAGE | Right.LISTEN | Right.SEND
    assert built.keys == (KEY, KEY2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "primary_key": KEY, "rights": Right.SEND}, "'name' is empty"),
        ({"name": "r", "primary_key": "", "rights": Right.SEND}, "empty 'primary_key'"),
        ({"name": "r", "primary_key": KEY, "rights": Right(0)}, "no 'rights'"),
        ({"name": "r", "primary_key": "k\ud800", "rights": Right.SEND}, "lone surrogates"),
        (
            {"name": "r", "primary_key": KEY, "secondary_key": "\udfff", "rights": Right.SEND},
            "lone surrogates",
        ),
    ],
)
def test_access_rule_checks_itself(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        AccessRule(**kwargs)
    assert SECRET_MARK not in str(caught.value)


def test_relay_config_checks_its_settings_when_built_directly() -> None:
    ns = (namespace(),)
    with pytest.raises(ConfigError, match="'port' must be from 0 to 65535"):
        RelayConfig(port=70000, namespaces=ns)
    with pytest.raises(ConfigError, match="'port'"):
        RelayConfig(port=True, namespaces=ns)
    with pytest.raises(ConfigError, match="'max_listeners_per_entity' must be at least 1"):
        RelayConfig(max_listeners_per_entity=False, namespaces=ns)
    with pytest.raises(ConfigError, match="'request_timeout'"):
        RelayConfig(request_timeout=math.nan, namespaces=ns)
    with pytest.raises(ConfigError, match="'rendezvous_timeout'"):
        RelayConfig(rendezvous_timeout=True, namespaces=ns)
    with pytest.raises(ConfigError, match="there is no"):
        RelayConfig(namespaces=())


def test_namespace_names_are_hosts_stored_lower_case() -> None:
    assert namespace("Contoso.ServiceBus.Windows.NET").name == NS
    assert namespace("[::1]").name == "[::1]"
    assert namespace("127.0.0.1").name == "127.0.0.1"


def test_value_objects_are_hashable_and_compare_by_value() -> None:
    first = default_config(key=KEY)
    second = default_config(key=KEY)
    assert first == second
    assert hash(first) == hash(second)
    assert first != default_config(key=KEY2)


# --- looking things up ------------------------------------------------------------------------


def test_entity_lookup_is_case_insensitive_and_exact() -> None:
    hc = EntityConfig(name="Orders/EU")
    ns = namespace(entities=(hc,))
    assert ns.entity("orders/eu") is hc
    assert ns.entity("ORDERS/EU") is hc
    assert ns.entity("orders") is None
    assert ns.entity("orders/eu/x") is None


def test_lookups_do_not_let_non_ascii_letters_alias_ascii_ones() -> None:
    ns = namespace(name="kelvin", entities=(EntityConfig(name="kelvin"),))
    config = RelayConfig(namespaces=(ns, namespace(name="other", default=True)))
    assert ns.entity("\u212aelvin") is None  # KELVIN SIGN lower-cases to 'k'
    assert ns.resolve("\u212aelvin/x") is None
    assert config.namespace("\u212aelvin:9090") is config.namespaces[1]


def test_resolve_picks_the_longest_entity_on_a_segment_boundary() -> None:
    short, long = EntityConfig(name="hc1"), EntityConfig(name="hc1/sub")
    ns = namespace(entities=(short, long))
    assert ns.resolve("hc1") == (short, "")
    assert ns.resolve("hc1/") == (short, "/")
    assert ns.resolve("hc1/other/x") == (short, "/other/x")
    assert ns.resolve("hc1/sub") == (long, "")
    assert ns.resolve("HC1/Sub/x?") == (long, "/x?")
    assert ns.resolve("hc1/subway") == (short, "/subway")
    assert ns.resolve("hc1/sub/\u00fc") == (long, "/\u00fc")
    assert ns.resolve("hc10") is None
    assert ns.resolve("hc") is None
    assert ns.resolve("") is None
    assert ns.resolve("/hc1") is None


segment = st.from_regex(r"[a-cA-C][a-c.]{0,2}", fullmatch=True)
entity_name = st.lists(segment, min_size=1, max_size=3).map("/".join)


@given(
    names=st.lists(entity_name, max_size=6, unique_by=str.lower),
    path=st.lists(segment | st.just(""), max_size=5).map("/".join),
)
def test_resolve_matches_the_longest_prefix_property(names: list[str], path: str) -> None:
    ns = namespace(entities=tuple(EntityConfig(name=name) for name in names))
    matching = [
        name
        for name in names
        if path.lower() == name.lower() or path.lower().startswith(name.lower() + "/")
    ]
    resolved = ns.resolve(path)
    if not matching:
        assert resolved is None
    else:
        assert resolved is not None
        entity, suffix = resolved
        assert entity.name == max(matching, key=len)
        assert path == path[: len(entity.name)] + suffix
        assert suffix == "" or suffix.startswith("/")


def test_namespace_is_chosen_by_the_host_header() -> None:
    contoso = namespace(NS)
    local = namespace("localhost", default=True)
    ipv6 = namespace("[::1]")
    config = RelayConfig(namespaces=(contoso, local, ipv6))
    assert config.namespace(NS) is contoso
    assert config.namespace("CONTOSO.servicebus.windows.net:9090") is contoso
    assert config.namespace("[::1]:9090") is ipv6
    assert config.namespace("[::1]") is ipv6
    assert config.namespace("localhost:80") is local
    assert config.namespace("127.0.0.1:9090") is local
    assert config.namespace("") is local


def test_without_a_default_an_unknown_host_finds_no_namespace() -> None:
    config = RelayConfig(namespaces=(namespace(NS), namespace("other")))
    assert config.namespace("other:1") is config.namespaces[1]
    assert config.namespace("127.0.0.1:9090") is None


def test_a_single_namespace_serves_every_host() -> None:
    config = RelayConfig(namespaces=(namespace(NS),))
    assert config.namespace("127.0.0.1:9090") is config.namespaces[0]


def token(rule_name: str, key: str, entity: str = "hc1") -> str:
    return create_relay_token(f"http://{NS}/{entity}", rule_name, key, 3600, now=NOW)


def verdict(config: RelayConfig, tok: str, right: Right, entity: str = "hc1") -> SasOutcome:
    ns = config.namespace(NS)
    assert ns is not None
    found = ns.entity(entity)
    assert found is not None
    keys = config.keys_for(ns, found, right)
    return verify_sas_token(tok, keys=keys, target=f"{NS}/{entity}", now=NOW).outcome


def test_keys_for_gives_verify_sas_token_exactly_the_rules_granting_the_right() -> None:
    config = parse_config(EXAMPLE)
    contoso = config.namespaces[0]
    hc1, anonymous = contoso.entities
    assert config.keys_for(contoso, hc1, Right.SEND) == {
        "RootManageSharedAccessKey": [KEY, KEY2],
        "send-only": [KEY3],
    }
    assert config.keys_for(contoso, hc1, Right.LISTEN) == {"RootManageSharedAccessKey": [KEY, KEY2]}
    assert config.keys_for(contoso, anonymous, Right.SEND) == {
        "RootManageSharedAccessKey": [KEY, KEY2]
    }
    assert verdict(config, token("send-only", KEY3), Right.SEND) is SasOutcome.VALID
    assert verdict(config, token("send-only", KEY3), Right.LISTEN) is SasOutcome.UNKNOWN_KEY_NAME
    assert verdict(config, token("RootManageSharedAccessKey", KEY2), Right.LISTEN).name == "VALID"
    assert (
        verdict(config, token("send-only", KEY3, "open/anonymous"), Right.SEND, "open/anonymous")
        is SasOutcome.UNKNOWN_KEY_NAME
    )


def test_keys_for_lists_both_rules_when_namespace_and_entity_rule_share_a_name() -> None:
    shared_ns = rule("shared", Right.LISTEN, KEY)
    shared_entity = rule("shared", Right.LISTEN | Right.SEND, KEY3)
    hc = EntityConfig(name="hc1", rules=(shared_entity,))
    ns = namespace(rules=(shared_ns,), entities=(hc,))
    config = RelayConfig(namespaces=(ns,))
    assert config.keys_for(ns, hc, Right.LISTEN) == {"shared": [KEY, KEY3]}
    assert config.keys_for(ns, hc, Right.SEND) == {"shared": [KEY3]}
    assert config.keys_for(ns, hc, Right.MANAGE) == {}
    assert config.keys_for(ns, hc, Right(0)) == {"shared": [KEY, KEY3]}
    assert verdict(config, token("shared", KEY), Right.LISTEN) is SasOutcome.VALID
    assert verdict(config, token("shared", KEY3), Right.LISTEN) is SasOutcome.VALID
    assert verdict(config, token("shared", KEY), Right.SEND) is SasOutcome.BAD_SIGNATURE
    assert config.rights_of(ns, hc, "shared") == Right.LISTEN | Right.SEND
    assert config.rights_of(ns, hc, "other") == Right(0)
    assert config.rights_of(ns, EntityConfig(name="x"), "shared") == Right.LISTEN


def test_rights_of_includes_what_manage_implies() -> None:
    config = parse_config(EXAMPLE)
    contoso = config.namespaces[0]
    root = contoso.rules[0].name
    assert config.rights_of(contoso, contoso.entities[0], root) == (
        Right.MANAGE | Right.LISTEN | Right.SEND
    )
    assert config.rights_of(contoso, contoso.entities[0], "send-only") == Right.SEND
    assert config.rights_of(contoso, contoso.entities[1], "send-only") == Right(0)


# --- defaults and connection strings ----------------------------------------------------------


def test_default_config_uses_injected_randomness_for_its_key() -> None:
    calls: list[int] = []

    def token_bytes(count: int) -> bytes:
        calls.append(count)
        return bytes(range(count))

    config = default_config(host="10.0.0.1", port=0, token_bytes=token_bytes)
    assert calls == [32]
    assert (config.host, config.port) == ("10.0.0.1", 0)
    (ns,) = config.namespaces
    assert ns.name == "localhost"
    assert ns.default
    (hc,) = ns.entities
    assert hc.name == "hyco"
    assert hc.requires_client_authorization
    (root,) = ns.rules
    assert root.name == "RootManageSharedAccessKey"
    assert root.keys == ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",)
    assert root.rights == Right.MANAGE | Right.LISTEN | Right.SEND
    assert default_config(token_bytes=token_bytes) == default_config(token_bytes=token_bytes)


def test_default_config_keys_are_random_unless_given() -> None:
    assert default_config() != default_config()
    assert default_config(key=KEY).namespaces[0].rules[0].keys == (KEY,)
    with pytest.raises(ConfigError, match="'port'"):
        default_config(port=-1)


def test_connection_string_parses_back_and_its_key_is_accepted() -> None:
    config = parse_config(EXAMPLE)
    contoso = config.namespaces[0]
    hc1 = contoso.entities[0]
    send_only = hc1.rules[0]
    text = connection_string_for(config, contoso, hc1, send_only, address="127.0.0.1:9090")
    assert text == (
        f"Endpoint=sb://127.0.0.1:9090/;EntityPath=hc1;SharedAccessKeyName=send-only;"
        f"SharedAccessKey={KEY3};UseDevelopmentEmulator=true"
    )
    parsed = parse_connection_string(text)
    assert parsed.namespace == "127.0.0.1:9090"
    assert parsed.entity_path == hc1.name
    assert parsed.shared_access_key_name == send_only.name
    assert parsed.shared_access_key == KEY3
    assert not parsed.secure
    assert parsed.shared_access_key is not None
    assert parsed.shared_access_key_name is not None
    tok = token(parsed.shared_access_key_name, parsed.shared_access_key)
    assert verdict(config, tok, Right.SEND) is SasOutcome.VALID


def test_connection_string_for_a_namespace_rule_and_a_default_config() -> None:
    config = default_config(key=KEY)
    (ns,) = config.namespaces
    text = connection_string_for(config, ns, ns.entities[0], ns.rules[0], address="[::1]:9")
    parsed = parse_connection_string(text)
    assert (parsed.namespace, parsed.entity_path) == ("[::1]:9", "hyco")
    assert (parsed.shared_access_key_name, parsed.shared_access_key) == (
        "RootManageSharedAccessKey",
        KEY,
    )


def test_connection_string_for_refuses_parts_of_another_configuration() -> None:
    config = parse_config(EXAMPLE)
    contoso, fabrikam = config.namespaces
    hc1 = contoso.entities[0]
    with pytest.raises(LocalProtocolError, match="not part of this configuration"):
        connection_string_for(config, namespace("x"), hc1, contoso.rules[0], address="h:1")
    with pytest.raises(LocalProtocolError, match="'hc1' is not part of the namespace"):
        connection_string_for(config, fabrikam, hc1, fabrikam.rules[0], address="h:1")
    with pytest.raises(LocalProtocolError, match="'listen-only' belongs neither") as caught:
        connection_string_for(config, contoso, hc1, fabrikam.rules[0], address="h:1")
    assert SECRET_MARK not in str(caught.value)


def test_connection_string_for_refuses_what_a_connection_string_cannot_carry() -> None:
    config = default_config(key=f"{KEY};x")
    (ns,) = config.namespaces
    with pytest.raises(ConnectionStringError) as caught:
        connection_string_for(config, ns, ns.entities[0], ns.rules[0], address="h:1")
    assert SECRET_MARK not in str(caught.value)
    with pytest.raises(ConnectionStringError):
        connection_string_for(config, ns, ns.entities[0], ns.rules[0], address="a b")


# --- watching the file ------------------------------------------------------------------------


def write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text, "utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))


def last_error(watcher: ConfigWatcher[RelayConfig]) -> str:
    assert watcher.last_error is not None
    return str(watcher.last_error)


def test_watcher_reloads_on_change_and_keeps_the_last_good_config(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    write(path, EXAMPLE, 1_000_000_000)
    watcher = ConfigWatcher(path)
    first = watcher.config
    assert first == parse_config(EXAMPLE)
    assert watcher.last_error is None
    assert watcher.poll() is None

    changed = EXAMPLE.replace("port = 0", "port = 9191")
    write(path, changed, 2_000_000_000)
    reloaded = watcher.poll()
    assert reloaded is not None
    assert reloaded.port == 9191
    assert watcher.config is reloaded
    assert watcher.poll() is None

    write(path, changed.replace('rights = ["Send"]', 'rights = ["Sned"]'), 3_000_000_000)
    assert watcher.poll() is None
    assert watcher.config is reloaded
    error = last_error(watcher)
    assert "'Sned' is not a right" in error
    assert str(path) in error
    assert SECRET_MARK not in error
    assert watcher.poll() is None
    assert last_error(watcher) == error

    write(path, EXAMPLE, 4_000_000_000)
    assert watcher.poll() == first
    assert watcher.last_error is None


def test_watcher_keeps_the_config_while_the_file_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    write(path, EXAMPLE, 1_000_000_000)
    watcher = ConfigWatcher(str(path))
    path.unlink()
    assert watcher.poll() is None
    assert watcher.config == parse_config(EXAMPLE)
    assert "cannot be read" in last_error(watcher)

    write(path, EXAMPLE, 1_000_000_000)
    assert watcher.poll() == parse_config(EXAMPLE)
    assert watcher.last_error is None


def test_watcher_sees_a_change_of_size_within_the_same_mtime(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    write(path, EXAMPLE, 1_000_000_000)
    watcher = ConfigWatcher(path)
    write(path, EXAMPLE.replace("port = 0", "port = 10"), 1_000_000_000)
    reloaded = watcher.poll()
    assert reloaded is not None
    assert reloaded.port == 10


def test_watcher_asks_the_injected_stat(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(EXAMPLE, "utf-8")
    signatures = iter([(1, 10), (1, 10), (2, 10)])
    seen: list[str] = []

    def stat(name: str) -> os.stat_result:
        seen.append(name)
        mtime_ns, size = next(signatures)
        # st_size sits in the tuple part, st_mtime_ns only among the named extras.
        fields = (0,) * 6 + (size,) + (0,) * 3
        return os.stat_result(fields, {"st_mtime_ns": mtime_ns})

    watcher = ConfigWatcher(path, stat=stat)
    assert watcher.poll() is None
    assert watcher.poll() == parse_config(EXAMPLE)
    assert seen == [str(path)] * 3


def test_watcher_raises_when_the_first_load_fails(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("[relay]\n", "utf-8")
    with pytest.raises(ConfigError, match="there is no"):
        ConfigWatcher(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        ConfigWatcher(tmp_path / "absent.toml")


# --- properties: any input, round trips -------------------------------------------------------


def toml_string(text: str) -> str:
    escaped = "".join(
        f"\\u{ord(char):04x}" if char in '"\\' or ord(char) < 0x20 or ord(char) == 0x7F else char
        for char in text
    )
    return f'"{escaped}"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{toml_string(key)} = {toml_value(item)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    assert isinstance(value, datetime.date)
    return value.isoformat()


def toml_document(document: dict[str, Any]) -> str:
    return "\n".join(f"{toml_string(key)} = {toml_value(value)}" for key, value in document.items())


RIGHT_NAMES = {Right.LISTEN: "Listen", Right.SEND: "Send", Right.MANAGE: "Manage"}


def rights_names(rights: Right) -> list[str]:
    return [name for right, name in RIGHT_NAMES.items() if right in rights]


def rule_document(built: AccessRule) -> dict[str, Any]:
    document: dict[str, Any] = {"name": built.name, "primary_key": built.primary_key}
    if built.secondary_key is not None:
        document["secondary_key"] = built.secondary_key
    document["rights"] = rights_names(built.rights)
    return document


def config_document(config: RelayConfig) -> dict[str, Any]:
    return {
        "relay": {
            "host": config.host,
            "port": config.port,
            "max_listeners_per_entity": config.max_listeners_per_entity,
            "rendezvous_timeout": config.rendezvous_timeout,
            "request_timeout": config.request_timeout,
        },
        "namespace": [
            {
                "name": ns.name,
                "default": ns.default,
                "rule": [rule_document(built) for built in ns.rules],
                "entity": [
                    {
                        "name": entity.name,
                        "requires_client_authorization": entity.requires_client_authorization,
                        "rule": [rule_document(built) for built in entity.rules],
                    }
                    for entity in ns.entities
                ],
            }
            for ns in config.namespaces
        ],
    }


all_rights = st.lists(st.sampled_from(list(RIGHT_NAMES.values())), min_size=1).map(Right.parse)
secret = st.text(max_size=8).map(lambda text: SECRET_MARK + text)
rules = st.lists(
    st.builds(
        AccessRule,
        name=st.from_regex(r"[!-$'-:<>-~]{1,8}", fullmatch=True),
        primary_key=secret,
        secondary_key=st.none() | secret | st.just(""),
        rights=all_rights,
    ),
    max_size=2,
    unique_by=lambda built: built.name.lower(),
).map(tuple)
# A first character other than '.' keeps out the '.' and '..' segments.
entity_segment = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,5}", fullmatch=True)
entities = st.lists(
    st.builds(
        EntityConfig,
        name=st.lists(entity_segment, min_size=1, max_size=3).map("/".join),
        requires_client_authorization=st.booleans(),
        rules=rules,
    ),
    max_size=3,
    unique_by=lambda entity: entity.name.lower(),
).map(tuple)
namespace_names = st.from_regex(r"[A-Za-z0-9_-]{1,8}(\.[A-Za-z0-9_-]{1,8}){0,2}", fullmatch=True)


@st.composite
def configs(draw: st.DrawFn) -> RelayConfig:
    names = draw(st.lists(namespace_names, min_size=1, max_size=3, unique_by=str.lower))
    default = draw(st.none() | st.integers(0, len(names) - 1))
    seconds = st.floats(min_value=0, exclude_min=True, allow_infinity=False)
    return RelayConfig(
        host=draw(st.sampled_from(["127.0.0.1", "10.0.0.1", "::1", "localhost"])),
        port=draw(st.integers(0, 65535)),
        max_listeners_per_entity=draw(st.integers(1, 10**6)),
        rendezvous_timeout=draw(seconds),
        request_timeout=draw(seconds),
        namespaces=tuple(
            NamespaceConfig(
                name=name,
                default=index == default,
                rules=draw(rules),
                entities=draw(entities),
            )
            for index, name in enumerate(names)
        ),
    )


@given(configs())
def test_every_valid_config_written_as_toml_reads_back_equal(config: RelayConfig) -> None:
    assert parse_config(toml_document(config_document(config))) == config


toml_values = st.recursive(
    st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.dates()
    | st.sampled_from(["Listen", "Send", "Manage", "hc", "a/b", ""]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


def mutated(data: st.DataObject, node: Any) -> Any:
    if isinstance(node, list) and node and data.draw(st.booleans()):
        items = list(node)
        index = data.draw(st.integers(0, len(items) - 1))
        items[index] = mutated(data, items[index])
        return items
    if not isinstance(node, dict):
        return data.draw(toml_values)
    copy = dict(node)
    nested = sorted(key for key, value in copy.items() if isinstance(value, (dict, list)))
    action = data.draw(st.sampled_from(["set", "delete", "descend"]))
    if action == "descend" and nested:
        key = data.draw(st.sampled_from(nested))
        copy[key] = mutated(data, copy[key])
    elif action == "delete" and copy:
        del copy[data.draw(st.sampled_from(sorted(copy)))]
    else:
        existing = st.sampled_from(sorted(copy)) if copy else st.nothing()
        key = data.draw(existing | st.text(max_size=6))
        copy[key] = data.draw(toml_values)
    return copy


@given(config=configs(), data=st.data())
def test_any_damaged_document_gives_a_config_or_a_config_error_without_keys(
    config: RelayConfig, data: st.DataObject
) -> None:
    document = config_document(config)
    for _ in range(data.draw(st.integers(1, 3))):
        document = mutated(data, document)
    try:
        shown = repr(parse_config(toml_document(document), source="relay.toml"))
    except ConfigError as error:
        shown = str(error)
        assert shown.startswith("relay.toml: ")
    assert SECRET_MARK not in shown


@given(st.text())
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        shown = repr(parse_config(text))
    except ConfigError as error:
        shown = str(error)
        assert shown.startswith("<string>: ")
    assert shown

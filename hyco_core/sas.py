"""Shared access signature (SAS) tokens: minted for clients, parsed and verified for relays.

A token reads ``SharedAccessSignature sr={urlenc(resource)}&sig={urlenc(base64(hmac))}&se={expiry}``
``&skn={key name}``. Its HMAC-SHA256 is keyed with the UTF-8 bytes of the key string and signs
``urlenc(resource) + "\\n" + se`` exactly as the token spells them. The official SDKs spell the
resource of one entity differently, so verification compares resources by meaning (host and path
segments), never by text. Clocks are passed in as ``now`` (Unix seconds).
"""

from __future__ import annotations

import base64
import enum
import hmac
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, unquote_to_bytes

from .errors import InvalidTokenError, InvalidUrlError, LocalProtocolError
from .names import ascii_lower

__all__ = [
    "SAS_PREFIX",
    "SasOutcome",
    "SasToken",
    "SasVerdict",
    "create_relay_token",
    "create_sas_token",
    "encode_component",
    "parse_sas_token",
    "relay_token_resource",
    "verify_sas_token",
]

SAS_PREFIX = "SharedAccessSignature "

# JavaScript's encodeURIComponent leaves these unescaped besides letters, digits and "-_.~",
# which quote() never escapes.
_COMPONENT_SAFE = "!~*'()"
_ASCII_COMPONENT = {
    code: f"%{code:02X}"
    for code in range(128)
    if not (chr(code).isalnum() or chr(code) in "-_." + _COMPONENT_SAFE)
}
# Text of these characters only, a URL or base64 in practice, needs just ':' and '/' (and '+'
# and '=') replaced: a few str.replace calls instead of a lookup per character.
_URL_OR_BASE64 = re.compile(r"[A-Za-z0-9\-_.!~*'()/:+=]*")
# `se` is a signed 64-bit count of seconds in the .NET SDK; bounding it also keeps int() cheap
# on hostile input.
_MAX_EXPIRY = 2**63 - 1
_MAX_EXPIRY_DIGITS = len(str(_MAX_EXPIRY))
_FIELDS = ("sr", "sig", "se", "skn")
_SCHEMES = frozenset({"sb", "http", "https", "ws", "wss"})
_HOST_FORBIDDEN = frozenset(' \\@/?#[]<>"{}|^`%')
_IPV6_CHARACTERS = frozenset("0123456789abcdefABCDEF:.")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
# Key names travel verbatim in tokens and tokens travel in HTTP headers.
_KEY_NAME_FORBIDDEN = frozenset("&=%")
_SHOWN_LIMIT = 80
# Azure's naming rule for the authorization rules of Relay namespaces and hybrid connections:
# 1 to 50 letters, digits, '.', '-' and '_', starting and ending with a letter or digit. Only a
# key name of that shape is ever quoted in a message: other SDKs take name and key in either
# order, so what a token carries as its key name may be a key.
_RULE_NAME_SHAPE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,48}[A-Za-z0-9])?")


def encode_component(text: str) -> str:
    """Percent-encode ``text`` the way JavaScript's ``encodeURIComponent`` does.

    Everything but ``A-Z a-z 0-9 - _ . ! ~ * ' ( )`` becomes ``%XX`` (uppercase hex) over the
    UTF-8 bytes. Raises :class:`LocalProtocolError` for text with lone surrogates, which has no
    UTF-8 form.
    """
    if _URL_OR_BASE64.fullmatch(text):
        return text.replace(":", "%3A").replace("/", "%2F").replace("+", "%2B").replace("=", "%3D")
    if text.isascii():
        return text.translate(_ASCII_COMPONENT)
    try:
        return quote(text, safe=_COMPONENT_SAFE)
    except UnicodeEncodeError:
        raise LocalProtocolError("text with lone surrogates cannot be percent-encoded") from None


def create_sas_token(resource: str, key_name: str, key: str, expiry: int) -> str:
    """Return a SAS token granting ``key_name``'s rights on ``resource`` until ``expiry``.

    ``resource`` is signed as given; use :func:`relay_token_resource` to get the form the .NET
    SDK signs. ``expiry`` is in Unix seconds. Raises :class:`LocalProtocolError` for an empty
    resource or key, a key name that cannot travel verbatim in a token (it must be visible ASCII
    without ``&``, ``=`` or ``%``), or an expiry outside ``0..2**63-1``.
    """
    if not resource:
        raise LocalProtocolError("the resource to sign is empty")
    _check_key_name(key_name)
    key_bytes = _key_bytes(key)
    if isinstance(expiry, bool) or not 0 <= expiry <= _MAX_EXPIRY:
        raise LocalProtocolError(
            f"expiry must be Unix seconds between 0 and {_MAX_EXPIRY}, got {expiry!r}"
        )
    encoded_resource = encode_component(resource)
    signature = _sign(key_bytes, encoded_resource, str(expiry))
    return (
        f"{SAS_PREFIX}sr={encoded_resource}&sig={encode_component(signature.decode('ascii'))}"
        f"&se={expiry}&skn={key_name}"
    )


def relay_token_resource(uri: str) -> str:
    """Return the resource a client signs for the relay address ``uri``, as the .NET SDK does.

    The scheme becomes ``http``, the host is lower-cased, port, query and fragment are dropped,
    a leading ``$hc/`` segment is removed and the path ends in exactly one ``/``:
    ``wss://NS:443/$hc/hc1?sb-hc-action=listen`` gives ``http://ns/hc1/``. ``uri`` may use the
    schemes sb, http, https, ws and wss, or be a bare ``host/path``. Raises
    :class:`InvalidUrlError` for anything else, including URIs a relay would refuse to match
    (user information, ``.`` or ``..`` path segments, a path starting with ``$hc`` twice).
    """
    host, path = _split_uri(uri)
    if _segments_of(path)[:1] == ("$hc",):
        # No entity path starts with '$hc'; the resource would lose it once more when verified.
        raise InvalidUrlError("the URI's path starts with '$hc' twice")
    entity = path.strip("/")
    first, _, remainder = entity.partition("/")
    if ascii_lower(first) == "$hc":
        entity = remainder.lstrip("/")
    return f"http://{host}/{entity}/" if entity else f"http://{host}/"


def create_relay_token(
    uri: str, key_name: str, key: str, expiration_seconds: int = 3600, *, now: float
) -> str:
    """Return a token for the relay address ``uri`` valid ``expiration_seconds`` from ``now``.

    This is the Node SDK's ``createRelayToken`` with the clock passed in, signing the .NET form
    of the resource (see :func:`relay_token_resource`). Raises :class:`InvalidUrlError` for a bad
    ``uri`` and :class:`LocalProtocolError` for a non-positive lifetime, a clock that is not a
    finite number, or the mistakes :func:`create_sas_token` refuses.
    """
    if isinstance(expiration_seconds, bool) or expiration_seconds <= 0:
        raise LocalProtocolError(
            f"expiration_seconds must be a positive number of seconds, got {expiration_seconds!r}"
        )
    if not math.isfinite(now):
        raise LocalProtocolError(f"now must be finite Unix seconds, got {now!r}")
    return create_sas_token(relay_token_resource(uri), key_name, key, int(now) + expiration_seconds)


@dataclass(frozen=True, kw_only=True, slots=True, repr=False)
class SasToken:
    """The fields of a well-formed SAS token; see :func:`parse_sas_token`.

    ``repr`` shows neither the signature nor a key name that does not look like a rule name.
    """

    encoded_resource: str
    """The ``sr`` value exactly as the token spells it; the signature covers this text."""
    resource: str
    """``sr`` percent-decoded: the URI of the namespace or entity the token grants access to."""
    signature: str = field(repr=False)
    """``sig`` percent-decoded: the base64 HMAC-SHA256."""
    expiry: int
    """``se``: the Unix second from which the token is no longer valid."""
    key_name: str
    """``skn``: the name of the authorization rule whose key signed the token."""

    def __repr__(self) -> str:
        return (
            f"SasToken(resource={self.resource!r}, expiry={self.expiry}, "
            f"key_name={_plausible_key_name(self.key_name) or '<not shown>'})"
        )


def parse_sas_token(token: str) -> SasToken:
    """Split a SAS token into its fields, without checking its signature or its expiry.

    The ``SharedAccessSignature`` prefix is matched case-insensitively and must be followed by
    one space, then ``name=value`` fields separated by ``&`` and made of visible ASCII. Each
    field is split on its first ``=`` (unencoded base64 holds ``=``); field names are
    case-insensitive, as in the .NET SDK; empty fields and unknown fields are ignored. ``sr``,
    ``sig``, ``se`` and ``skn`` must each appear exactly once and be non-empty; ``se`` must be
    digits without leading zeros (the signature covers its text, so only one spelling is
    accepted) and at most ``2**63-1``. ``sr``, ``sig`` and ``skn`` are percent-decoded; ``+``
    stays ``+``, since base64 signatures contain it.

    Raises :class:`InvalidTokenError` naming the faulty field; the message never contains the
    token or any field value.
    """
    if ascii_lower(token[: len(SAS_PREFIX)]) != ascii_lower(SAS_PREFIX):
        raise InvalidTokenError(f"a shared access signature must start with {SAS_PREFIX!r}")
    body = token[len(SAS_PREFIX) :]
    if not (body.isascii() and body.isprintable()) or " " in body:
        raise InvalidTokenError(
            "a shared access signature holds only visible ASCII characters after its prefix"
        )
    values: dict[str, str] = {}
    for position, pair in enumerate(body.split("&"), start=1):
        if not pair:
            continue
        name, separator, value = pair.partition("=")
        if not separator:
            raise InvalidTokenError(f"field {position} of the token has no '=' after its name")
        name = ascii_lower(name)
        if name not in _FIELDS:
            continue
        if name in values:
            raise InvalidTokenError(f"the token has more than one {name!r} field")
        values[name] = value
    for name in _FIELDS:
        if name not in values:
            raise InvalidTokenError(f"the token has no {name!r} field")
        if not values[name]:
            raise InvalidTokenError(f"the token's {name!r} field is empty")
    expiry_text = values["se"]
    if (
        not expiry_text.isdigit()
        or (expiry_text[0] == "0" and len(expiry_text) > 1)
        or len(expiry_text) > _MAX_EXPIRY_DIGITS
        or int(expiry_text) > _MAX_EXPIRY
    ):
        raise InvalidTokenError(
            "the token's 'se' field must be the expiry in Unix seconds: decimal digits without "
            f"leading zeros, at most {_MAX_EXPIRY}"
        )
    encoded_resource = values["sr"]
    return SasToken(
        encoded_resource=encoded_resource,
        resource=_percent_decode(encoded_resource, "sr"),
        signature=_percent_decode(values["sig"], "sig"),
        expiry=int(expiry_text),
        key_name=_percent_decode(values["skn"], "skn"),
    )


class SasOutcome(enum.Enum):
    """What verifying a token found, from the first check that failed (or ``VALID``)."""

    VALID = "valid"
    MALFORMED = "malformed"
    UNKNOWN_KEY_NAME = "unknown key name"
    BAD_SIGNATURE = "bad signature"
    WRONG_RESOURCE = "wrong resource"
    EXPIRED = "expired"
    NOT_YET_VALID = "not yet valid"


@dataclass(frozen=True, kw_only=True, slots=True)
class SasVerdict:
    """The result of :func:`verify_sas_token`: an outcome, the parsed token and an explanation."""

    outcome: SasOutcome
    token: SasToken | None
    """The parsed token; ``None`` exactly when the outcome is ``MALFORMED``."""
    detail: str
    """A sentence for logs and error replies; it never contains a signature or a key."""

    def __post_init__(self) -> None:
        if (self.token is None) != (self.outcome is SasOutcome.MALFORMED):
            raise LocalProtocolError("a verdict carries a token unless the token is malformed")

    @property
    def valid(self) -> bool:
        """Whether the token grants access to the target now."""
        return self.outcome is SasOutcome.VALID


def verify_sas_token(
    token: str,
    *,
    keys: Mapping[str, Sequence[str]],
    target: str,
    now: float,
    max_lifetime: float | None = None,
) -> SasVerdict:
    """Decide whether ``token`` grants access to the entity ``target`` at time ``now``.

    ``keys`` maps each authorization rule's key name to its keys (primary and secondary: any
    may have signed). ``target`` is the entity's URI in any scheme among sb, http, https, ws and
    wss, or as a bare ``host/path``, with or without ``$hc/``. The checks run in this order, and
    the first that fails gives the outcome, so that a forger learns nothing about resources or
    expiry: ``MALFORMED``, ``UNKNOWN_KEY_NAME``, ``BAD_SIGNATURE`` (the HMAC of the token's own
    ``sr`` and ``se`` text under each key of the rule, compared in constant time),
    ``WRONG_RESOURCE``, ``EXPIRED`` (``now >= expiry``), ``NOT_YET_VALID``, then ``VALID``.

    The token's resource covers the target when their hosts are equal and its path segments are
    a prefix of the target's: a namespace root (``http://ns/``) covers every entity, and
    ``http://ns/hc`` covers ``ns/hc/sub`` but not ``ns/hc1``. Scheme, port, query, a leading
    ``$hc`` segment, empty segments and the case and percent-encoding of host and path do not
    matter, so the .NET form (``http://ns/hc1/``), the Node form (``http://ns:443/hc1``) and
    lowercase-hex tokens all match.

    ``max_lifetime`` (seconds) is the longest validity the issuer grants. A token that expires
    further from ``now`` than that cannot have been minted honestly yet (or its issuer's clock
    is wrong), so it is ``NOT_YET_VALID``; without ``max_lifetime`` this check is skipped.

    A ``target`` that is no relay URI (a relay builds it from the ``Host`` a client sent, so it
    may hold anything) is covered by no token: ``WRONG_RESOURCE``, in its place in the order.

    A key name is quoted in ``detail`` only when it has the shape of an Azure rule name (1 to
    50 letters, digits, ``.``, ``-`` and ``_``, starting and ending with a letter or digit):
    anything else may be a key given in its place.

    Never raises for any ``token`` or ``target``. Raises :class:`LocalProtocolError` for a
    clock or lifetime that is not a finite number (a negative lifetime included), a rule whose
    keys are given as one string, or an empty key; these are mistakes of the caller.
    """
    if not math.isfinite(now):
        raise LocalProtocolError(f"now must be finite Unix seconds, got {now!r}")
    if max_lifetime is not None and not 0 <= max_lifetime < math.inf:
        raise LocalProtocolError(
            f"max_lifetime must be a finite number of seconds >= 0, got {max_lifetime!r}"
        )
    for name, configured in keys.items():
        if isinstance(configured, str):
            rule = _plausible_key_name(name)
            raise LocalProtocolError(
                f"the keys of {f'rule {rule}' if rule else 'a rule'} must be a sequence of "
                "strings, not one string"
            )

    try:
        parsed = parse_sas_token(token)
    except InvalidTokenError as error:
        return SasVerdict(
            outcome=SasOutcome.MALFORMED, token=None, detail=f"The token is malformed: {error}."
        )
    rule = _plausible_key_name(parsed.key_name)
    rule_keys = keys.get(parsed.key_name)
    if rule_keys is None:
        return SasVerdict(
            outcome=SasOutcome.UNKNOWN_KEY_NAME,
            token=parsed,
            detail=(
                f"The token names the key {rule}, which is not configured."
                if rule
                else "The token names an unknown key name."
            ),
        )
    given = parsed.signature.encode("utf-8")
    matched = False
    # Every key is tried, so the time taken does not tell which key (if any) matched.
    for key in rule_keys:
        expected = _sign(_key_bytes(key), parsed.encoded_resource, str(parsed.expiry))
        matched = hmac.compare_digest(expected, given) or matched
    if not matched:
        return SasVerdict(
            outcome=SasOutcome.BAD_SIGNATURE,
            token=parsed,
            detail=f"The signature matches no key of {rule or 'the rule the token names'}.",
        )
    try:
        target_entity = _entity_of(target)
    except InvalidUrlError as error:
        return SasVerdict(
            outcome=SasOutcome.WRONG_RESOURCE,
            token=parsed,
            detail=(
                f"The token is for {_shown(parsed.resource)}; the target is no relay URI: {error}."
            ),
        )
    if not _covers(parsed.resource, target_entity):
        return SasVerdict(
            outcome=SasOutcome.WRONG_RESOURCE,
            token=parsed,
            detail=(
                f"The token is for {_shown(parsed.resource)}, which does not cover "
                f"{_shown(_describe_entity(target_entity))}."
            ),
        )
    if now >= parsed.expiry:
        return SasVerdict(
            outcome=SasOutcome.EXPIRED,
            token=parsed,
            detail=f"The token expired at {parsed.expiry} (Unix seconds); it is now {now:.0f}.",
        )
    if max_lifetime is not None and parsed.expiry - now > max_lifetime:
        return SasVerdict(
            outcome=SasOutcome.NOT_YET_VALID,
            token=parsed,
            detail=(
                f"The token expires {parsed.expiry - now:.0f} s from now, more than the "
                f"longest lifetime allowed ({max_lifetime:g} s)."
            ),
        )
    return SasVerdict(
        outcome=SasOutcome.VALID,
        token=parsed,
        detail=(
            f"The token grants the rights of {rule or 'its rule'} on "
            f"{_shown(parsed.resource)} until {parsed.expiry} (Unix seconds)."
        ),
    )


def _sign(key: bytes, encoded_resource: str, expiry_text: str) -> bytes:
    digest = hmac.digest(key, f"{encoded_resource}\n{expiry_text}".encode(), "sha256")
    return base64.b64encode(digest)


def _key_bytes(key: str) -> bytes:
    if not key:
        raise LocalProtocolError("a key is empty")
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError("a key contains lone surrogates and has no UTF-8 form") from None


def _check_key_name(key_name: str) -> None:
    if not key_name:
        raise LocalProtocolError("the key name is empty")
    if (
        not (key_name.isascii() and key_name.isprintable())
        or " " in key_name
        or not _KEY_NAME_FORBIDDEN.isdisjoint(key_name)
    ):
        # The name is not quoted: a key passed by mistake in its place must not reach a log.
        raise LocalProtocolError(
            "the key name must be visible ASCII without '&', '=' or '%', "
            "since it goes into the token verbatim"
        )


def _percent_decode(text: str, name: str) -> str:
    if "%" not in text:
        return text
    for piece in text.split("%")[1:]:
        if len(piece) < 2 or piece[0] not in _HEX_DIGITS or piece[1] not in _HEX_DIGITS:
            raise InvalidTokenError(
                f"the token's {name!r} field has a '%' not followed by two hex digits"
            )
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidTokenError(f"the token's {name!r} field does not decode to UTF-8") from None


def _split_uri(uri: str) -> tuple[str, str]:
    """Return the lower-cased host (without port) and the path of a relay URI or ``host/path``."""
    uri = uri.partition("#")[0].partition("?")[0]
    scheme, separator, rest = uri.partition("://")
    if not separator or "/" in scheme:
        rest = uri
    elif ascii_lower(scheme) not in _SCHEMES:
        raise InvalidUrlError(
            f"unsupported scheme {_shown(scheme)}: a relay URI uses sb, http, https, ws or wss"
        )
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        raise InvalidUrlError("a relay URI carries no user information ('user@host')")
    if authority.startswith("["):
        host, bracket, port_part = authority[1:].partition("]")
        if not bracket or not host or not _IPV6_CHARACTERS.issuperset(host):
            raise InvalidUrlError("the URI's IPv6 host is not of the form [address]")
        host = f"[{host}]"
        if port_part and not port_part.startswith(":"):
            raise InvalidUrlError("the URI's IPv6 host is followed by something other than a port")
        port = port_part[1:]
    else:
        host, _, port = authority.partition(":")
        if not host or not host.isprintable() or not _HOST_FORBIDDEN.isdisjoint(host):
            raise InvalidUrlError("the URI has no valid host")
    if port and not (port.isascii() and port.isdigit()):
        raise InvalidUrlError("the URI's port is not a number")
    return ascii_lower(host), slash + path


def _entity_of(uri: str) -> tuple[str, tuple[str, ...]]:
    """Reduce a resource or target URI to what identifies its entity: host and path segments.

    Segments are percent-decoded and ASCII lower-cased (entity names are case-insensitive); empty
    segments and a leading ``$hc`` are dropped. ``.`` and ``..`` are refused rather than
    resolved: a token for ``ns/a`` must not reach ``ns/a/../b``.
    """
    host, path = _split_uri(uri)
    return host, _segments_of(path)


def _segments_of(path: str) -> tuple[str, ...]:
    segments: list[str] = []
    for raw in path.split("/"):
        if not raw:
            continue
        segment = ascii_lower(unquote(raw) if "%" in raw else raw)
        if segment in (".", ".."):
            raise InvalidUrlError("the URI's path has a '.' or '..' segment")
        segments.append(segment)
    if segments and segments[0] == "$hc":
        del segments[0]
    return tuple(segments)


def _covers(resource: str, target: tuple[str, tuple[str, ...]]) -> bool:
    try:
        host, segments = _entity_of(resource)
    except InvalidUrlError:
        return False
    target_host, target_segments = target
    return host == target_host and target_segments[: len(segments)] == segments


def _describe_entity(entity: tuple[str, tuple[str, ...]]) -> str:
    host, segments = entity
    return "/".join((host, *segments))


def _plausible_key_name(name: str) -> str | None:
    """``name`` quoted for a message when it looks like a rule name, else ``None``."""
    return repr(name) if _RULE_NAME_SHAPE.fullmatch(name) else None


def _shown(text: str) -> str:
    """Quote untrusted text for a message, cut short so a hostile token cannot flood logs."""
    if len(text) > _SHOWN_LIMIT:
        return repr(text[:_SHOWN_LIMIT]) + "..."
    return repr(text)

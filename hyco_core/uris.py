"""Relay addresses: building and reading the URLs of listeners, senders and rejects.

Every function here is pure text processing, so a client, a relay and another language's port
can agree on the same addresses. The rules:

- The *namespace* is ``host[:port]``: a DNS name (letters, digits, ``-`` and ``_`` in
  dot-separated labels) or a bracketed IPv6 address, and an optional port from 1 to 65535. The
  host is lower-cased; a port is kept exactly when it is given.
- The *entity* (the hybrid connection path) is plain text: ``/`` separates its segments, which
  must be non-empty and neither ``.`` nor ``..`` (HTTP clients would resolve those away); the
  first must not be ``$hc``. Building encodes every character but ``A-Z a-z 0-9 - . _ ~`` and
  ``/`` as ``%XX`` over UTF-8 (uppercase hex), ``%`` included; reading decodes it again.
- A *suffix* (the path after the entity) and a *user query* are URL text, already encoded, and
  are taken as given. Only characters that may not appear there raw (space, non-ASCII, ``#``,
  ``%`` not starting an escape, ...) are encoded; ``%XX`` escapes are kept, so nothing is ever
  encoded twice. Reading returns them exactly as they are in the URL.
- Relay parameter values (``sb-hc-id``, ``sb-hc-token``, ``sb-hc-statusDescription``) are
  encoded like JavaScript's ``encodeURIComponent``. Reading decodes them as form values: ``+``
  is a space, as .NET's ``WebUtility.UrlEncode`` and Python's ``urlencode`` write one (a real
  ``+`` is always ``%2B``). User query items are never decoded.
- A query item is a relay parameter when it has an ``=`` and its percent-decoded name starts
  with ``sb-hc-``, compared ASCII case-insensitively. The relay strips those before forwarding,
  and keeps every other item verbatim.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import quote, unquote, unquote_to_bytes

from .errors import InvalidUrlError, LocalProtocolError
from .names import ascii_lower
from .sas import create_relay_token, encode_component

__all__ = [
    "HostedEntities",
    "RelayUrl",
    "append_relay_token",
    "create_reject_uri",
    "create_relay_http_uri",
    "create_relay_listen_uri",
    "create_relay_send_uri",
    "create_rendezvous_uri",
    "normalize_namespace",
    "parse_relay_url",
    "redact_url",
    "strip_relay_query",
    "validate_entity_path",
]

_HC_SEGMENT = "$hc"
_RELAY_PREFIX = "sb-hc-"
_ACTIONS = frozenset({"listen", "connect", "accept", "request"})
_RENDEZVOUS_ACTIONS = frozenset({"accept", "request"})
_WEBSOCKET_SCHEMES = frozenset({"ws", "wss"})
_SCHEMES = _WEBSOCKET_SCHEMES | {"http", "https"}
_SECURE_SCHEMES = frozenset({"wss", "https"})
# Names whose values are secrets: the token parameter, and the signature field of a raw SAS
# token that was put in a query without being encoded first.
_SECRET_NAMES = frozenset({"sb-hc-token", "sig"})
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_URL = re.compile(
    r"(?P<scheme>[^:/?#]*)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)"
    r"(?:\?(?P<query>[^#]*))?(?:#(?P<fragment>.*))?",
    re.DOTALL,
)
# An escape to keep, or a character that must be encoded (RFC 3986 path and query characters).
_PATH_REQUOTE = re.compile(r"%[0-9A-Fa-f]{2}|[^A-Za-z0-9\-._~!$&'()*+,;=:@/]")
_QUERY_REQUOTE = re.compile(r"%[0-9A-Fa-f]{2}|[^A-Za-z0-9\-._~!$&'()*+,;=:@/?]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DELIMITERS = re.compile(r"([?&#])")
_SHOWN_LIMIT = 160
_MIN_STATUS, _MAX_STATUS = 100, 999


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayUrl:
    """The parts of a relay address; see :func:`parse_relay_url`."""

    scheme: str
    """Lower-cased: ``wss``, ``ws``, ``https`` or ``http``."""
    namespace: str
    """``host[:port]`` with the host lower-cased; the port only when the URL names one."""
    entity: str
    """The hybrid connection path, percent-decoded, spelled as in the URL; empty segments
    before and inside it (``//hc1``, ``/$hc//hc1``) are left out."""
    suffix: str
    """The path after the entity, as in the URL: empty or starting with ``/``."""
    action: str | None
    """``sb-hc-action`` lower-cased (listen, connect, accept or request), or ``None``."""
    tracking_id: str | None
    """``sb-hc-id``, decoded (``+`` is a space)."""
    token: str | None = field(repr=False)
    """``sb-hc-token``, decoded (``+`` is a space)."""
    relay_parameters: Mapping[str, str] = field(repr=False, hash=False)
    """Every ``sb-hc-*`` parameter: lower-cased name to value, decoded as a form value (``+``
    is a space, ``%XX`` a UTF-8 byte); the token included."""
    query: str
    """The user query as the relay forwards it (see :func:`strip_relay_query`), without ``?``."""
    is_http: bool
    """Whether this is the plain-HTTP sender form, which has no ``$hc`` segment."""

    @property
    def secure(self) -> bool:
        """Whether the scheme uses TLS (``wss`` or ``https``)."""
        return self.scheme in _SECURE_SCHEMES


def normalize_namespace(namespace: str) -> str:
    """Check ``host[:port]`` and return it with the host lower-cased.

    Raises :class:`InvalidUrlError` saying what is wrong (the message does not repeat the text).
    """
    if not namespace.isascii():
        raise InvalidUrlError(
            "the namespace must be ASCII; write an international domain name in its "
            "punycode (xn--) form"
        )
    if namespace.startswith("["):
        address, bracket, rest = namespace[1:].partition("]")
        if not bracket:
            raise InvalidUrlError("the namespace's IPv6 address has no closing ']'")
        if "%" in address:
            raise InvalidUrlError("the namespace's IPv6 address must not carry a zone ('%...')")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise InvalidUrlError("the namespace's host is not a valid IPv6 address") from None
        host = f"[{ascii_lower(address)}]"
        if rest and not rest.startswith(":"):
            raise InvalidUrlError("the namespace's IPv6 address may only be followed by ':port'")
        separator, port = rest[:1], rest[1:]
    else:
        host, separator, port = namespace.partition(":")
        if not host:
            raise InvalidUrlError("the namespace has no host")
        if not _HOST_NAME.fullmatch(host):
            raise InvalidUrlError(
                "the namespace's host may only hold letters, digits, '-' and '_' in labels "
                "separated by single dots"
            )
        host = ascii_lower(host)
    if not separator:
        return host
    if not port.isdigit() or len(port) > 5 or not 1 <= int(port) <= 65535:
        raise InvalidUrlError("the namespace's port must be a number from 1 to 65535")
    return f"{host}:{port}"


def validate_entity_path(path: str) -> None:
    """Check that ``path`` can name a hybrid connection (see the module's rules).

    Raises :class:`InvalidUrlError` saying what is wrong.
    """
    if not path:
        raise InvalidUrlError("the hybrid connection path is empty")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidUrlError(
            "the hybrid connection path holds lone surrogates and has no UTF-8 form"
        ) from None
    segments = path.split("/")
    if "" in segments:
        raise InvalidUrlError(
            "the hybrid connection path must not start or end with '/' or contain '//'"
        )
    if "." in segments or ".." in segments:
        raise InvalidUrlError("the hybrid connection path must not have '.' or '..' segments")
    if ascii_lower(segments[0]) == _HC_SEGMENT:
        raise InvalidUrlError(
            "the hybrid connection path must not start with '$hc', which the relay reserves"
        )


def create_relay_listen_uri(
    namespace: str,
    path: str,
    token: str | None = None,
    tracking_id: str | None = None,
    *,
    secure: bool = True,
) -> str:
    """Return the address of a listener's control channel for the hybrid connection ``path``.

    ``wss://{namespace}/$hc/{path}?sb-hc-action=listen[&sb-hc-id={id}][&sb-hc-token={token}]``;
    ``secure=False`` gives ``ws://`` for a local development relay. Prefer sending the token in
    the ``ServiceBusAuthorization`` header; the query is for clients that cannot set headers.
    Raises :class:`InvalidUrlError` for a bad namespace or path.
    """
    base = _address(namespace, path, websocket=True, secure=secure, suffix="")
    items = ["sb-hc-action=listen", *_relay_items(tracking_id=tracking_id, token=token)]
    return f"{base}?{'&'.join(items)}"


def create_relay_send_uri(
    namespace: str,
    path: str,
    token: str | None = None,
    tracking_id: str | None = None,
    *,
    suffix: str = "",
    query: str = "",
    secure: bool = True,
) -> str:
    """Return the address a sender opens a WebSocket to.

    ``wss://{namespace}/$hc/{path}[/{suffix}]?[{query}&]sb-hc-action=connect[&sb-hc-id={id}]``
    ``[&sb-hc-token={token}]``. ``suffix`` and ``query`` (one leading ``/`` or ``?`` is
    optional) reach the listener in the accept address; the query must not hold ``sb-hc-*``
    parameters, since the relay would strip them. Raises :class:`InvalidUrlError` for a bad
    namespace, path or query.
    """
    base = _address(namespace, path, websocket=True, secure=secure, suffix=suffix)
    user_query = _user_query(query)
    items = [
        *([user_query] if user_query else []),
        "sb-hc-action=connect",
        *_relay_items(tracking_id=tracking_id, token=token),
    ]
    return f"{base}?{'&'.join(items)}"


def create_rendezvous_uri(
    namespace: str,
    path: str,
    *,
    action: str,
    rendezvous_id: str,
    suffix: str = "",
    query: str = "",
    secure: bool = True,
) -> str:
    """Return the address a relay hands a listener to meet a sender (``action`` ``accept``,
    in an ``accept`` message) or to read an HTTP request (``request``).

    ``wss://{namespace}/$hc/{path}[{suffix}]?[{query}&]sb-hc-action={action}&sb-hc-id={id}``.
    ``namespace`` is where the relay itself is reached (its public address), never a
    sender's ``Host``, which would let a sender steer listeners to a host of its choice.
    ``suffix`` and ``query`` are the sender's, already encoded, as :func:`parse_relay_url`
    read them. Raises :class:`LocalProtocolError` for another action and
    :class:`InvalidUrlError` for a bad namespace, path or query.
    """
    if action not in _RENDEZVOUS_ACTIONS:
        raise LocalProtocolError(f"a rendezvous action is accept or request, not {action!r}")
    base = _address(namespace, path, websocket=True, secure=secure, suffix=suffix)
    user_query = _user_query(query)
    items = [
        *([user_query] if user_query else []),
        f"sb-hc-action={action}",
        *_relay_items(tracking_id=rendezvous_id, token=None),
    ]
    return f"{base}?{'&'.join(items)}"


def create_relay_http_uri(
    namespace: str,
    path: str,
    token: str | None = None,
    *,
    suffix: str = "",
    query: str = "",
    secure: bool = True,
) -> str:
    """Return the address of a plain HTTP request to the hybrid connection ``path``.

    ``https://{namespace}/{path}[/{suffix}][?{query}][&sb-hc-token={token}]``: no ``$hc``
    segment and no action. ``suffix`` and ``query`` follow the rules of
    :func:`create_relay_send_uri`. Raises :class:`InvalidUrlError` for a bad namespace, path or
    query.
    """
    base = _address(namespace, path, websocket=False, secure=secure, suffix=suffix)
    user_query = _user_query(query)
    items = [
        *([user_query] if user_query else []),
        *_relay_items(tracking_id=None, token=token),
    ]
    return f"{base}?{'&'.join(items)}" if items else base


def append_relay_token(
    uri: str, key_name: str, key: str, expiration_seconds: int = 3600, *, now: float
) -> str:
    """Return ``uri`` with an ``sb-hc-token`` parameter holding a fresh token.

    The token is signed for the hybrid connection the address names (its first path segment,
    without any suffix), which covers every address of that entity. Raises
    :class:`InvalidUrlError` when ``uri`` is not a relay address or already carries a token,
    and :class:`LocalProtocolError` for the mistakes :func:`~hyco_core.sas.create_relay_token`
    refuses.
    """
    parsed = parse_relay_url(uri)
    if parsed.token is not None:
        raise InvalidUrlError(f"the relay address {_shown(redact_url(uri))} already has a token")
    resource = f"{parsed.scheme}://{parsed.namespace}/{quote(parsed.entity, safe='/')}"
    token = create_relay_token(resource, key_name, key, expiration_seconds, now=now)
    separator = "" if uri.endswith(("?", "&")) else "&" if "?" in uri else "?"
    return f"{uri}{separator}sb-hc-token={encode_component(token)}"


def create_reject_uri(accept_address: str, status_code: int, description: str) -> str:
    """Return the address that rejects the sender of an ``accept`` with a status and reason.

    ``{accept_address}&sb-hc-statusCode={status_code}&sb-hc-statusDescription={description}``,
    the description encoded like ``encodeURIComponent``; the accept address is used verbatim.
    Raises :class:`LocalProtocolError` when ``status_code`` is outside 100..999.
    """
    if not _MIN_STATUS <= status_code <= _MAX_STATUS:
        raise LocalProtocolError(
            f"a reject status code must be from {_MIN_STATUS} to {_MAX_STATUS}, got {status_code}"
        )
    separator = "&" if "?" in accept_address else "?"
    return (
        f"{accept_address}{separator}sb-hc-statusCode={status_code}"
        f"&sb-hc-statusDescription={encode_component(description)}"
    )


def strip_relay_query(query: str) -> str:
    """Return the query the relay forwards to the listener, without a leading ``?``.

    Drops every ``&``-separated item that has an ``=`` and whose percent-decoded name starts
    with ``sb-hc-`` (ASCII case-insensitive), and keeps every other item verbatim and in order:
    ``sb-hc-id=1&custom=value`` gives ``custom=value``; ``sb-hc-undefined`` and ``a=1&a=2&``
    are kept as they are. One leading ``?`` is optional.
    """
    return _without_relay_items(query.removeprefix("?"))


class HostedEntities:
    """The hybrid connections a relay hosts, indexed once for :func:`parse_relay_url`, so that
    a relay with thousands of them resolves each address in time that depends on the address,
    not on their number. Names compare by ASCII case only."""

    __slots__ = ("_folded", "depth")

    def __init__(self, names: Iterable[str]) -> None:
        self._folded = frozenset(ascii_lower(name) for name in names)
        self.depth = max((name.count("/") + 1 for name in self._folded), default=0)
        """How many path segments the deepest name has."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and ascii_lower(name) in self._folded


def parse_relay_url(
    url: str, *, entities: Collection[str] | HostedEntities | None = None
) -> RelayUrl:
    """Read a relay address into its parts.

    WebSocket addresses (``ws``, ``wss``) must start their path with ``$hc``; ``http`` and
    ``https`` addresses are the plain-HTTP sender form without it (if they have it anyway,
    ``is_http`` is false). Without ``entities`` the entity is the first path segment after
    ``$hc``; with them (the hybrid connections a relay hosts) it is the longest run of leading
    segments that, decoded, equals one of them ASCII case-insensitively, and the rest is the
    suffix. Empty segments before ``$hc``, before the entity and inside it are skipped
    (``wss://ns//$hc//hc1`` names ``hc1``); ``.`` and ``..`` segments are refused.

    Raises :class:`InvalidUrlError` naming the problem: characters that must be encoded, a
    missing host, an unsupported scheme, a bad port, a fragment, no entity (or none of
    ``entities``), a ``%`` not followed by two hex digits in the path or in a relay parameter,
    a relay parameter given twice, or an unknown ``sb-hc-action``. The address is quoted in the
    message with its token replaced by ``***``.
    """
    if not url.isascii() or not url.isprintable() or " " in url:
        raise _invalid(url, "holds a space, a control or a non-ASCII character: percent-encode it")
    match = _URL.fullmatch(url)
    if match is None:
        raise _invalid(url, "is not an absolute URL of the form scheme://namespace/path")
    scheme = ascii_lower(match["scheme"])
    if scheme not in _SCHEMES:
        raise _invalid(url, "does not use wss or ws (WebSocket), or https or http (plain HTTP)")
    if match["fragment"] is not None:
        raise _invalid(url, "has a fragment ('#...'), which a relay address never carries")
    try:
        namespace = normalize_namespace(match["authority"])
    except InvalidUrlError as error:
        raise _invalid(url, f"is wrong: {error}") from None
    path = match["path"]
    if _BAD_ESCAPE.search(path):
        raise _invalid(url, "has a '%' in its path that is not followed by two hex digits")
    segments = _from_first_named(path.split("/")[1:])
    is_http = not (segments and ascii_lower(unquote(segments[0])) == _HC_SEGMENT)
    if not is_http:
        segments = _from_first_named(segments[1:])
    elif scheme in _WEBSOCKET_SCHEMES:
        raise _invalid(url, "does not start its path with /$hc/, as WebSocket addresses must")
    entity, suffix = _resolve_entity(url, segments, entities)
    query = match["query"] or ""
    parameters = _relay_parameters(url, query)
    action = parameters.get("sb-hc-action")
    if action is not None:
        action = ascii_lower(action)
        if action not in _ACTIONS:
            raise _invalid(url, "has an sb-hc-action other than listen, connect, accept or request")
    return RelayUrl(
        scheme=scheme,
        namespace=namespace,
        entity=entity,
        suffix=suffix,
        action=action,
        tracking_id=parameters.get("sb-hc-id"),
        token=parameters.get("sb-hc-token"),
        relay_parameters=MappingProxyType(parameters),
        query=_without_relay_items(query),
        is_http=is_http,
    )


def redact_url(url: str) -> str:
    """Return ``url`` with the value of every ``sb-hc-token`` parameter replaced by ``***``.

    Meant for logs and error messages, and safe on any text: items are found between ``?``,
    ``&`` and ``#``, names are compared percent-decoded and case-insensitively, and a hidden
    value runs to the next ``&`` or ``#``. The ``sig`` field of a SAS token pasted into a query
    unencoded is hidden too.
    """
    pieces = _DELIMITERS.split(url)
    shown: list[str] = []
    hiding = False
    for index, piece in enumerate(pieces):
        if index % 2:
            if hiding and piece == "?":
                continue
            hiding = False
            shown.append(piece)
        elif not hiding:
            name, separator, _ = piece.partition("=")
            # Looser than how a relay reads names (spaces, full Unicode case folding): hiding
            # too much in a log costs nothing, hiding too little leaks a token.
            hiding = bool(separator) and unquote(name).strip().lower() in _SECRET_NAMES
            shown.append(f"{name}=***" if hiding else piece)
    return "".join(shown)


def _address(namespace: str, path: str, *, websocket: bool, secure: bool, suffix: str) -> str:
    if websocket:
        scheme = "wss" if secure else "ws"
        prefix = f"/{_HC_SEGMENT}/"
    else:
        scheme = "https" if secure else "http"
        prefix = "/"
    validate_entity_path(path)
    host = normalize_namespace(namespace)
    if suffix:
        suffix = _requote(suffix, _PATH_REQUOTE, "suffix")
        if not suffix.startswith("/"):
            suffix = f"/{suffix}"
    return f"{scheme}://{host}{prefix}{quote(path, safe='/')}{suffix}"


def _user_query(query: str) -> str:
    query = _requote(query.removeprefix("?"), _QUERY_REQUOTE, "query")
    if _without_relay_items(query) != query:
        raise InvalidUrlError(
            "the query must not hold sb-hc-* parameters: the relay reserves them and strips "
            "them; pass the token and the tracking id as arguments"
        )
    return query


def _relay_items(*, tracking_id: str | None, token: str | None) -> list[str]:
    items = []
    if tracking_id is not None:
        items.append(f"sb-hc-id={encode_component(tracking_id)}")
    if token is not None:
        items.append(f"sb-hc-token={encode_component(token)}")
    return items


def _requote(text: str, pattern: re.Pattern[str], what: str) -> str:
    try:
        return pattern.sub(_encode_unless_escape, text)
    except UnicodeEncodeError:
        raise InvalidUrlError(f"the {what} holds lone surrogates and has no UTF-8 form") from None


def _encode_unless_escape(match: re.Match[str]) -> str:
    piece = match.group()
    return piece if len(piece) == 3 else quote(piece, safe="")


def _relay_name(name: str) -> str | None:
    """The lower-cased decoded name of a relay parameter, or ``None`` for a user parameter."""
    decoded = unquote(name)
    prefix = decoded[: len(_RELAY_PREFIX)]
    if ascii_lower(prefix) == _RELAY_PREFIX:
        return ascii_lower(decoded)
    return None


def _without_relay_items(query: str) -> str:
    kept = []
    for item in query.split("&"):
        name, separator, _ = item.partition("=")
        if not separator or _relay_name(name) is None:
            kept.append(item)
    return "&".join(kept)


def _relay_parameters(url: str, query: str) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for item in query.split("&"):
        name, separator, value = item.partition("=")
        relay_name = _relay_name(name) if separator else None
        if relay_name is None:
            continue
        if relay_name in parameters:
            raise _invalid(url, f"has more than one {_shown(relay_name)} parameter")
        if _BAD_ESCAPE.search(value):
            raise _invalid(url, f"has a '%' not followed by two hex digits in {_shown(relay_name)}")
        try:
            # Form encoding: senders write a space as '+' and a real '+' as %2B.
            parameters[relay_name] = unquote_to_bytes(value.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid(
                url, f"has a {_shown(relay_name)} that does not decode to UTF-8"
            ) from None
    return parameters


def _resolve_entity(
    url: str, segments: list[str], entities: Collection[str] | HostedEntities | None
) -> tuple[str, str]:
    """Split the path segments after ``$hc`` into the entity and the suffix.

    ``segments`` starts with a non-empty one (if any). Empty segments inside an entity name
    are skipped as well; the suffix keeps its own as they are.
    """
    if entities is None:
        return _entity_segment(url, segments[0] if segments else ""), _suffix_of(segments[1:])
    hosted = entities if isinstance(entities, HostedEntities) else HostedEntities(entities)
    # Only as many segments as the deepest entity has can match, so a hostile path with many
    # segments costs no more than a short one.
    depth = hosted.depth
    decoded: list[str] = []
    ends: list[int] = []
    for index, raw in enumerate(segments):
        if len(decoded) == depth:
            break
        if not raw:
            continue
        try:
            decoded.append(_entity_segment(url, raw))
        except InvalidUrlError:
            break
        ends.append(index + 1)
    for count in range(len(decoded), 0, -1):
        entity = "/".join(decoded[:count])
        if entity in hosted:
            return entity, _suffix_of(segments[ends[count - 1] :])
    raise _invalid(url, "names no hybrid connection hosted here")


def _from_first_named(segments: list[str]) -> list[str]:
    """``segments`` from the first non-empty one: portal connection strings end in ``/``, so
    clients send ``//entity`` and ``/$hc//entity``, and those empty segments mean nothing."""
    for index, segment in enumerate(segments):
        if segment:
            return segments[index:]
    return []


def _entity_segment(url: str, raw: str) -> str:
    if not raw:
        raise _invalid(url, "names no hybrid connection where its path should (empty segment)")
    try:
        segment = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid(url, "has a hybrid connection path that does not decode to UTF-8") from None
    if "/" in segment:
        raise _invalid(url, "has an encoded '/' (%2F) in its hybrid connection path")
    if segment in (".", ".."):
        raise _invalid(url, "has a '.' or '..' segment in its hybrid connection path")
    return segment


def _suffix_of(segments: list[str]) -> str:
    return "".join(f"/{segment}" for segment in segments)


def _invalid(url: str, problem: str) -> InvalidUrlError:
    return InvalidUrlError(f"the relay address {_shown(redact_url(url))} {problem}")


def _shown(text: str) -> str:
    """Quote untrusted text for a message, cut short so hostile input cannot flood logs."""
    if len(text) > _SHOWN_LIMIT:
        return repr(text[:_SHOWN_LIMIT]) + "..."
    return repr(text)

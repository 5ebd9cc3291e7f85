"""Connection strings: the ``Endpoint=sb://...;SharedAccessKeyName=...`` text of the Azure portal.

Reading follows the .NET and Java SDKs: items are separated by ``;`` and split on their first
``=`` (keys and signatures hold ``=`` and ``&``); keys are case-insensitive; keys and values are
trimmed; empty items are ignored. Unlike those SDKs, every inconsistency is an error at once,
and no error message ever repeats a value: a key or signature pasted in the wrong place must
not end up in a log.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction

from .errors import ConnectionStringError, InvalidUrlError
from .uris import normalize_namespace, validate_entity_path

__all__ = ["ConnectionString", "parse_connection_string"]

_ENDPOINT = "Endpoint"
_ENTITY_PATH = "EntityPath"
_KEY_NAME = "SharedAccessKeyName"
_KEY = "SharedAccessKey"
_SIGNATURE = "SharedAccessSignature"
_AUTHENTICATION = "Authentication"
_OPERATION_TIMEOUT = "OperationTimeout"
_EMULATOR = "UseDevelopmentEmulator"
_KNOWN_KEYS = {
    name.lower(): name
    for name in (
        _ENDPOINT,
        _ENTITY_PATH,
        _KEY_NAME,
        _KEY,
        _SIGNATURE,
        _AUTHENTICATION,
        _OPERATION_TIMEOUT,
        _EMULATOR,
    )
}
_MANAGED_IDENTITY = "Managed Identity"
_ENDPOINT_SCHEMES = frozenset({"sb", "https", "http", "ws", "wss"})
# Unknown keys are named in errors only when they look like key names and follow no secret:
# anything else may be a piece of a key or signature that a stray ';' cut off.
_PLAUSIBLE_KEY = re.compile(r"[A-Za-z][A-Za-z ]{0,39}")
# OperationTimeout is a .NET TimeSpan: 100 ns ticks, at most TimeSpan.MaxValue.
_TICKS_PER_SECOND = 10_000_000
_MAX_TICKS = 2**63 - 1
_TIMEOUT_RANGE = (
    f"{_OPERATION_TIMEOUT} must be above zero (at least 100 ns) and at most about 10675199 days "
    "(the largest .NET TimeSpan)"
)
_SECONDS = re.compile(r"(?P<seconds>[0-9]{1,12})(?:\.(?P<fraction>[0-9]{1,7}))?")
_TIME_SPANS = (
    # The .NET "c" format, [d.]hh:mm[:ss[.fffffff]] ...
    re.compile(
        r"(?:(?P<days>[0-9]{1,8})\.)?(?P<hours>[0-9]{1,2}):(?P<minutes>[0-9]{1,2})"
        r"(?::(?P<seconds>[0-9]{1,2})(?:\.(?P<fraction>[0-9]{1,7}))?)?"
    ),
    # ... and the "g" format, whose days end in ':' and which then needs the seconds.
    re.compile(
        r"(?P<days>[0-9]{1,8}):(?P<hours>[0-9]{1,2}):(?P<minutes>[0-9]{1,2})"
        r":(?P<seconds>[0-9]{1,2})(?:\.(?P<fraction>[0-9]{1,7}))?"
    ),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionString:
    """A checked connection string; :meth:`format` writes it and :func:`parse_connection_string`
    reads it back equal.

    The constructor checks what the parser checks and raises :class:`ConnectionStringError`:
    the key name and key come together, a signature excludes them, managed identity excludes
    all three, and every text value must be non-empty, without ``;`` and without surrounding
    whitespace (a connection string could not carry it otherwise). It lower-cases the host of
    ``namespace`` and spells managed identity ``"Managed Identity"``.
    """

    namespace: str
    """``host[:port]`` of the relay namespace, from ``Endpoint``."""
    entity_path: str | None = None
    """The hybrid connection path."""
    shared_access_key_name: str | None = None
    shared_access_key: str | None = field(default=None, repr=False)
    shared_access_signature: str | None = field(default=None, repr=False)
    """A ready-made SAS token, used instead of a key."""
    authentication: str | None = None
    """``"Managed Identity"`` for Entra ID tokens of the host's managed identity, or ``None``."""
    operation_timeout: float | None = None
    """Seconds, as written in ``OperationTimeout``; ``None`` for the client's default."""
    use_development_emulator: bool = False
    """Whether the namespace is a local development relay reached without TLS."""

    def __post_init__(self) -> None:
        try:
            namespace = normalize_namespace(self.namespace)
        except InvalidUrlError as error:
            raise ConnectionStringError(
                f"{_ENDPOINT} names no valid namespace: {error}. Write it as "
                f"{_ENDPOINT}=sb://<namespace>.servicebus.windows.net/"
            ) from None
        object.__setattr__(self, "namespace", namespace)
        for name, value in (
            (_ENTITY_PATH, self.entity_path),
            (_KEY_NAME, self.shared_access_key_name),
            (_KEY, self.shared_access_key),
            (_SIGNATURE, self.shared_access_signature),
        ):
            if value is not None and (not value or value != value.strip() or ";" in value):
                raise ConnectionStringError(
                    f"{name} must be non-empty text without ';' and without whitespace at "
                    "either end, as a connection string cannot carry anything else"
                )
        if self.entity_path is not None:
            try:
                validate_entity_path(self.entity_path)
            except InvalidUrlError as error:
                raise ConnectionStringError(f"{_ENTITY_PATH} is not valid: {error}") from None
        if self.authentication is not None:
            if _squeezed(self.authentication) != _squeezed(_MANAGED_IDENTITY):
                raise ConnectionStringError(
                    f"{_AUTHENTICATION} must be '{_MANAGED_IDENTITY}'; for a key or a "
                    f"signature, remove it and give {_KEY_NAME} and {_KEY}, or {_SIGNATURE}"
                )
            object.__setattr__(self, "authentication", _MANAGED_IDENTITY)
        self._check_credentials()
        if self.operation_timeout is not None:
            _check_timeout(self.operation_timeout)

    def _check_credentials(self) -> None:
        has_name = self.shared_access_key_name is not None
        has_key = self.shared_access_key is not None
        if self.authentication is not None and (
            has_name or has_key or self.shared_access_signature is not None
        ):
            raise ConnectionStringError(
                f"{_AUTHENTICATION}={_MANAGED_IDENTITY} takes no {_KEY_NAME}, {_KEY} or "
                f"{_SIGNATURE}: remove them, or remove {_AUTHENTICATION}"
            )
        if self.shared_access_signature is not None and (has_name or has_key):
            raise ConnectionStringError(
                f"{_SIGNATURE} replaces {_KEY_NAME} and {_KEY}: give either the signature or "
                "the key name and key, not both"
            )
        if has_name != has_key:
            raise ConnectionStringError(
                f"{_KEY_NAME} and {_KEY} go together: give both, or neither"
            )

    @property
    def secure(self) -> bool:
        """Whether connections use TLS: always, except for the development emulator."""
        return not self.use_development_emulator

    @property
    def endpoint(self) -> str:
        """The ``Endpoint`` value, ``sb://{namespace}/``."""
        return f"sb://{self.namespace}/"

    def format(self) -> str:
        """Return the connection string's text: ``Endpoint`` first, then the items that are set.

        ``OperationTimeout`` is written as a .NET TimeSpan (``[d.]hh:mm:ss[.fffffff]``),
        rounded to 100 ns. The text holds the key or signature, so keep it out of logs.
        """
        items = [f"{_ENDPOINT}={self.endpoint}"]
        for name, value in (
            (_ENTITY_PATH, self.entity_path),
            (_KEY_NAME, self.shared_access_key_name),
            (_KEY, self.shared_access_key),
            (_SIGNATURE, self.shared_access_signature),
            (_AUTHENTICATION, self.authentication),
        ):
            if value is not None:
                items.append(f"{name}={value}")
        if self.operation_timeout is not None:
            items.append(f"{_OPERATION_TIMEOUT}={_format_timeout(self.operation_timeout)}")
        if self.use_development_emulator:
            items.append(f"{_EMULATOR}=true")
        return ";".join(items)

    def with_entity_path(self, path: str) -> ConnectionString:
        """Return a copy for the hybrid connection ``path``."""
        return replace(self, entity_path=path)


def parse_connection_string(text: str) -> ConnectionString:
    """Read a connection string.

    ``Endpoint`` is required: a URL with the scheme sb (or https, http, ws, wss), a namespace
    and no path beyond ``/``. The other keys are ``EntityPath``, ``SharedAccessKeyName`` with
    ``SharedAccessKey``, or ``SharedAccessSignature``, or ``Authentication=Managed Identity``
    (also ``ManagedIdentity``, in any case); ``OperationTimeout`` as a .NET TimeSpan
    (``[d.]hh:mm[:ss[.f]]`` or ``d:hh:mm:ss[.f]``) or plain seconds (``90``, ``2.5``; .NET
    would read a bare number as days), above zero; ``UseDevelopmentEmulator`` as ``true`` or
    ``false``.

    Raises :class:`ConnectionStringError` saying what is wrong and what to do; the message
    names keys but never repeats a value.
    """
    values: dict[str, str] = {}
    position = 0
    after_secret = False
    for item in text.split(";"):
        if not item.strip():
            continue
        position += 1
        raw_key, separator, raw_value = item.partition("=")
        if not separator:
            raise ConnectionStringError(
                f"item {position} of the connection string has no '=': write every item as "
                "Key=Value, separated by ';'"
            )
        key, value = raw_key.strip(), raw_value.strip()
        name = _KNOWN_KEYS.get(key.lower())
        if name is None:
            raise ConnectionStringError(_unknown_key(key, position, show=not after_secret))
        if name in values:
            raise ConnectionStringError(f"{name} appears more than once: keep one")
        if not value:
            raise ConnectionStringError(f"{name} has no value: give one, or remove the item")
        values[name] = value
        after_secret = after_secret or name in (_KEY, _SIGNATURE)
    if _ENDPOINT not in values:
        raise ConnectionStringError(
            f"the connection string has no {_ENDPOINT}: it must start with "
            f"{_ENDPOINT}=sb://<namespace>.servicebus.windows.net/"
        )
    timeout = values.get(_OPERATION_TIMEOUT)
    return ConnectionString(
        namespace=_namespace_of(values[_ENDPOINT]),
        entity_path=values.get(_ENTITY_PATH),
        shared_access_key_name=values.get(_KEY_NAME),
        shared_access_key=values.get(_KEY),
        shared_access_signature=values.get(_SIGNATURE),
        authentication=values.get(_AUTHENTICATION),
        operation_timeout=None if timeout is None else _parse_timeout(timeout),
        use_development_emulator=_parse_flag(values.get(_EMULATOR, "false")),
    )


def _unknown_key(key: str, position: int, *, show: bool) -> str:
    known = ", ".join(_KNOWN_KEYS.values())
    if show and _PLAUSIBLE_KEY.fullmatch(key):
        what = f"the key {key!r}"
    else:
        what = f"item {position} has a key that"
    return f"{what} is not a connection string key (known keys: {known})"


def _namespace_of(endpoint: str) -> str:
    scheme, separator, rest = endpoint.partition("://")
    if not separator or scheme.lower() not in _ENDPOINT_SCHEMES:
        raise ConnectionStringError(
            f"{_ENDPOINT} must be a URL like sb://<namespace>.servicebus.windows.net/ "
            "(the schemes sb, https, http, ws and wss are accepted)"
        )
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if rest[len(authority) :] not in ("", "/"):
        raise ConnectionStringError(
            f"{_ENDPOINT} must end after the namespace (a final '/' is fine): put the hybrid "
            f"connection name in {_ENTITY_PATH}"
        )
    return authority


def _parse_flag(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise ConnectionStringError(f"{_EMULATOR} must be true or false")
    return lowered == "true"


def _parse_timeout(text: str) -> float:
    match = _SECONDS.fullmatch(text)
    if match is not None:
        ticks = int(match["seconds"]) * _TICKS_PER_SECOND + _fraction_ticks(match["fraction"])
    else:
        match = _TIME_SPANS[0].fullmatch(text) or _TIME_SPANS[1].fullmatch(text)
        if match is None:
            raise ConnectionStringError(
                f"{_OPERATION_TIMEOUT} must be seconds (like 90 or 2.5) or a .NET TimeSpan "
                "(like 00:01:30, 1.00:00:00 or 00:00:02.5)"
            )
        hours, minutes = int(match["hours"]), int(match["minutes"])
        seconds = int(match["seconds"] or 0)
        if hours > 23 or minutes > 59 or seconds > 59:
            raise ConnectionStringError(
                f"{_OPERATION_TIMEOUT} has more than 23 hours, or more than 59 minutes or "
                "seconds: carry them over into the next field"
            )
        total = ((int(match["days"] or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
        ticks = total * _TICKS_PER_SECOND + _fraction_ticks(match["fraction"])
    if ticks > _MAX_TICKS:
        raise ConnectionStringError(_TIMEOUT_RANGE)
    return ticks / _TICKS_PER_SECOND


def _fraction_ticks(fraction: str | None) -> int:
    return int(fraction.ljust(7, "0")) if fraction else 0


def _ticks(seconds: float) -> int:
    # Fraction is exact, so a value read from a TimeSpan gives back its ticks.
    return round(Fraction(seconds) * _TICKS_PER_SECOND)


def _check_timeout(seconds: float) -> None:
    if not math.isfinite(seconds) or not 0 < _ticks(seconds) <= _MAX_TICKS:
        raise ConnectionStringError(_TIMEOUT_RANGE)


def _format_timeout(seconds: float) -> str:
    whole, fraction = divmod(_ticks(seconds), _TICKS_PER_SECOND)
    minutes, whole_seconds = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    text = f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}"
    if days:
        text = f"{days}.{text}"
    if fraction:
        text = f"{text}.{fraction:07d}"
    return text


def _squeezed(text: str) -> str:
    return text.replace(" ", "").lower()

"""The interface a transport implements to run the conformance suite.

A driver is small and blocking on purpose: any integration (hyco's own transports, or a stack
that vendors ``hyco_core``) can implement it in a few dozen lines. The suite starts the local
relay, gives the driver connection strings, and checks from the outside, with reference clients
nobody here wrote (``websockets``, ``httpx``), that the driver's listener and sender behave as the
protocol says.

What a listener opened by :meth:`Driver.open_listener` must do:

- accept or reject each sender as :attr:`ListenerSpec.decide` says (a :class:`Decision`); with no
  ``decide``, accept without a subprotocol;
- echo every message of an accepted WebSocket back unchanged (text as text, binary as binary),
  except a text message ``"close <code> <reason>"``, on which it closes with that code and reason;
- record how each accepted connection ended (:meth:`ListenerHandle.closes`);
- answer HTTP requests with :attr:`ListenerSpec.answer` (no ``answer``: no request handler at all);
- stay online: reconnect after losses, renew its token (``token_lifetime``), detect dead
  connections by ping (``ping_interval``, ``pong_timeout``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "AcceptInfo",
    "Decision",
    "Driver",
    "HttpAnswer",
    "HttpCall",
    "ListenerHandle",
    "ListenerSpec",
    "Refused",
    "SenderClosed",
    "SenderHandle",
]


class Refused(Exception):
    """A handshake was refused: raise it from :meth:`Driver.connect` or ``open_listener``."""

    def __init__(self, status_code: int, reason: str = "") -> None:
        super().__init__(f"refused with {status_code}: {reason}")
        self.status_code = status_code
        self.reason = reason


class SenderClosed(Exception):
    """The sender's WebSocket is closed: raise it from :meth:`SenderHandle.recv`."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, kw_only=True, slots=True)
class AcceptInfo:
    """What a listener learns about a sender before deciding."""

    headers: Mapping[str, str]
    suffix: str
    query: str
    subprotocols: tuple[str, ...]
    remote_address: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """Accept (optionally choosing a subprotocol), reject, or fail as a buggy handler would."""

    subprotocol: str | None = None
    reject_status: int | None = None
    reject_description: str = ""
    fail: bool = False

    @classmethod
    def accept(cls, subprotocol: str | None = None) -> Decision:
        return cls(subprotocol=subprotocol)

    @classmethod
    def reject(cls, status: int, description: str) -> Decision:
        return cls(reject_status=status, reject_description=description)

    @classmethod
    def failure(cls) -> Decision:
        """The accept handler raises: the listener must reject with 502."""
        return cls(fail=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class HttpCall:
    """An HTTP request as the listener's handler sees it (``path`` after the entity name)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class HttpAnswer:
    """What the handler answers. ``streamed`` sends ``body`` in pieces of unknown total length;
    ``fail`` makes the handler raise (the listener must answer 500 without the error text)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = field(default=b"", repr=False)
    streamed: bool = False
    fail: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class ListenerSpec:
    decide: Callable[[AcceptInfo], Decision] | None = None
    answer: Callable[[HttpCall], HttpAnswer] | None = None
    tracking_id: str | None = None
    token_lifetime: int | None = None
    ping_interval: float | None = None
    pong_timeout: float | None = None


class ListenerHandle(abc.ABC):
    @abc.abstractmethod
    def statuses(self) -> list[str]:
        """Every status so far, oldest first: connecting, online, offline, closed."""

    @abc.abstractmethod
    def accepted(self) -> list[AcceptInfo]:
        """Every sender the listener was asked about, oldest first."""

    @abc.abstractmethod
    def closes(self) -> list[tuple[int, str]]:
        """How each accepted connection ended: the close code and reason the sender sent."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the listener (gracefully) and release everything it holds."""


class SenderHandle(abc.ABC):
    subprotocol: str | None

    @abc.abstractmethod
    def send(self, message: str | bytes) -> None: ...

    @abc.abstractmethod
    def recv(self, timeout: float) -> str | bytes:
        """The next message; :class:`SenderClosed` once closed; ``TimeoutError`` on timeout."""

    @abc.abstractmethod
    def close(self, code: int = 1000, reason: str = "") -> None: ...


class Driver(abc.ABC):
    """One transport under test. ``name`` appears in the report."""

    name: str = "driver"

    @abc.abstractmethod
    def open_listener(self, connection_string: str, spec: ListenerSpec) -> ListenerHandle:
        """Open a listener and return once it is online; :class:`Refused` if the relay refuses."""

    @abc.abstractmethod
    def connect(
        self,
        connection_string: str,
        *,
        subprotocols: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        suffix: str = "",
        query: str = "",
        token_in_query: bool = False,
    ) -> SenderHandle:
        """Open a sender's WebSocket; :class:`Refused` with the relay's status if refused."""

    def close(self) -> None:  # noqa: B027 - optional to override: most drivers hold nothing
        """Release whatever the driver holds (event loops, threads). Called once at the end."""

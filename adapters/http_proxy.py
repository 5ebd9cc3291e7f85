"""A reverse proxy through a hybrid connection: ``hyco expose --http URL`` puts any local HTTP
server behind the relay, as a front door (like ``azbridge -H`` or ngrok).

Each HTTP request a sender makes to the hybrid connection is sent on to the upstream server,
its body streamed both ways whatever its size: the relay's path after the hybrid connection's
name (and its query) lands under the upstream URL's own path, ``/`` for the hybrid connection's
root; with ``strip_prefix=False`` the upstream sees the whole path, the hybrid connection's name
included. Dot segments are resolved before the path is joined to the upstream's, so that no
request reaches above it (``..%2F`` and the like are refused with 400).

The upstream hears who asked: ``X-Forwarded-For`` (the sender's address, appended),
``X-Forwarded-Proto``, ``X-Forwarded-Host`` (the relay's host, which the sender addressed) and
RFC 7239 ``Forwarded``; ``Host`` is the upstream's own unless ``preserve_host``. Hop-by-hop
headers are passed neither way. Failures are the proxy's to answer: an upstream that cannot be
reached gives 502, one that does not start answering before the relay would give up gives 504
(both with a JSON body naming the upstream), and a response cut in the middle of its body is
cut for the sender too, never passed off as complete.

WebSocket upgrades are carried through: the sender's subprotocols are offered upstream and the
one chosen there is accepted for the sender; an upstream refusing the upgrade refuses the
sender with its status; messages, text and binary, and close codes travel both ways.

The upstream side uses httpx for HTTP (one ``AsyncClient`` per proxy: a bounded pool of kept-
alive connections, no redirects followed, bodies passed through as raw bytes, never decoded)
and the ``websockets`` asyncio client for WebSockets: a well-kept client that negotiates
subprotocols, answers pings and applies backpressure on its own, which a client on hyco's own
wsproto layer would have to grow (hyco's WebSocket code speaks the relay's protocol, not plain
WebSockets to any server). It runs on asyncio, as the ``hyco`` command does; on trio,
WebSocket upgrades are refused with 502.

:func:`parse_upstream` is the one check of an upstream URL, for the command line and for any
other place options come from.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import anyio
import anyio.abc
import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import ConnectionClosed as UpstreamClosed
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from hyco_core import (
    HOP_BY_HOP_HEADERS,
    INLINE_BODY_LIMIT,
    ConnectionClosed,
    ConnectionLostError,
    HycoError,
    ListenerObserver,
    LocalProtocolError,
    RemoteEndpoint,
    split_request_target,
)
from hyco_core.service import relayed_close
from hyco_transports.anyio import AcceptContext, HttpRequest, HttpResponse, Listener, WebSocket
from hyco_transports.anyio.websocket import DEFAULT_MAX_MESSAGE_SIZE
from hyco_transports.auth import RelayEndpoint

from .draining import WorkUnderWay, serve_until_cancelled
from .hosting import StatusHandler, header_bytes, relayed_response_headers

__all__ = ["InvalidUpstreamError", "Upstream", "expose_http", "parse_upstream"]

logger = logging.getLogger("hyco.adapters.http_proxy")

# Headers the proxy sets itself, or that a hop (the relay, this proxy) has already acted on.
_NOT_FORWARDED = HOP_BY_HOP_HEADERS | {
    "expect",
    "proxy-authorization",
    "x-forwarded-host",
    "x-forwarded-proto",
}
# The sender's own WebSocket handshake: the upstream handshake has its own.
_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
# Bytes that go on the wire as they are in a request target; anything else is percent-encoded.
_TARGET_SAFE = "".join(chr(code) for code in range(0x21, 0x7F))
_SEPARATORS = re.compile(r"[/\\]")
_DOT_SEGMENTS = frozenset({".", ".."})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# How long before the relay's own deadline the proxy answers 504, so that its answer arrives.
_DEADLINE_MARGIN = 1.0
# How long an accepted WebSocket's upstream connection waits for the relay's rendezvous.
_RENDEZVOUS_WAIT = 30.0
# A streamed response whose upstream sends nothing for this long is cut (the relay's own limit).
_STALL_TIMEOUT = 60.0


class InvalidUpstreamError(HycoError, ValueError):
    """The upstream URL cannot be proxied to; the message says what to give instead."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where the proxy sends requests: ``scheme://host[:port]``, under ``base_path``."""

    scheme: str
    host: str
    port: int | None
    base_path: str
    """The URL's path without its trailing ``/`` (``""`` for none)."""

    @property
    def authority(self) -> str:
        """``host[:port]`` as a ``Host`` header names it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.base_path}"

    @property
    def secure(self) -> bool:
        return self.scheme == "https"


def parse_upstream(text: str) -> Upstream:
    """The upstream ``http://`` or ``https://`` URL ``text`` names, with a host, an optional port
    and an optional base path; raises :class:`InvalidUpstreamError` saying what to fix."""
    example = "such as http://127.0.0.1:8080 or https://intranet.local/app"
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise InvalidUpstreamError(
            f"{text!r} is not a URL with a valid port: give an http:// or https:// URL, {example}"
        ) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidUpstreamError(
            f"{text!r} is not an http:// or https:// URL with a host: give one, {example}"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidUpstreamError(
            "the upstream URL holds a user name or password: give it without them (the "
            "senders' own Authorization headers are passed on)"
        )
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise InvalidUpstreamError(
            f"the upstream URL {parts.scheme}://{parts.netloc}{parts.path} must not have a "
            "?query or #fragment: give only scheme, host, port and path"
        )
    if _contained_path(parts.path or "/") != (parts.path or "/"):
        raise InvalidUpstreamError("the upstream URL's path must not hold '.' or '..' segments")
    return Upstream(
        scheme=parts.scheme.lower(),
        host=parts.hostname,
        port=port,
        base_path=parts.path.rstrip("/"),
    )


def _contained_path(path: str) -> str | None:
    """``path`` with its dot segments resolved, never climbing above ``/``; ``None`` when it
    cannot be made safe: not a path, or a segment that would climb once decoded (``..%2F``)."""
    if not path.startswith("/"):
        return None
    kept: list[str] = []
    segments = path[1:].split("/")
    for segment in segments:
        decoded = unquote(segment)
        if decoded in _DOT_SEGMENTS:
            if decoded == ".." and kept:
                kept.pop()
            continue
        if _DOT_SEGMENTS.intersection(_SEPARATORS.split(decoded)):
            return None
        kept.append(segment)
    # "/a/b/.." is "/a/", as RFC 3986 resolves it.
    trailing = "/" if kept and unquote(segments[-1]) in _DOT_SEGMENTS else ""
    return "/" + "/".join(kept) + trailing


class _Refusal(Exception):
    """A request the proxy answers itself, with ``status`` and a JSON reason."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class HttpProxy:
    """The listener's handlers: each HTTP request and WebSocket of a sender, carried upstream."""

    def __init__(
        self,
        endpoint: RelayEndpoint,
        upstream: Upstream,
        *,
        strip_prefix: bool,
        preserve_host: bool,
        response_timeout: float | None,
        connect_timeout: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._endpoint = endpoint
        self._upstream = upstream
        self._strip_prefix = strip_prefix
        self._preserve_host = preserve_host
        self._response_timeout = response_timeout
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._client = httpx.AsyncClient(
            base_url=upstream.url,
            cookies=_NoCookies(),
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment must not reroute a local upstream
            verify=self._ssl_context,
            timeout=httpx.Timeout(connect_timeout, read=_STALL_TIMEOUT, pool=None),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max(1, max_connections // 4),
            ),
        )
        self._base_url = httpx.URL(upstream.url)
        # Upstream WebSockets awaiting their sender's rendezvous, by accept id.
        self._pending: dict[str, ClientConnection] = {}
        self._tasks: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> HttpProxy:
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._tasks is not None
        self._tasks.cancel_scope.cancel()
        await self._tasks.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            for upstream in list(self._pending.values()):
                await upstream.close(1001, "the proxy is stopping")
            await self._client.aclose()

    # -- what the upstream is asked ----------------------------------------------------------

    def _target(self, path: str, query: str, original: str) -> str:
        """The upstream's request target for a sender's path after the hybrid connection."""
        if not path.startswith("/"):
            # An absolute-form target (http://host/entity/x): only its path counts.
            parts = urlsplit(original)
            path, _ = split_request_target(parts.path or "/", self._endpoint.path)
            query = parts.query
        contained = _contained_path(path)
        if contained is None:
            raise _Refusal(400, f"the path {path[:200]!r} climbs out of the proxied location")
        prefix = self._upstream.base_path
        if not self._strip_prefix:
            prefix += "/" + self._endpoint.path
        target = quote(prefix + contained, safe=_TARGET_SAFE)
        return target + "?" + quote(query, safe=_TARGET_SAFE) if query else target

    @property
    def _host(self) -> str:
        """The ``Host`` the upstream is asked for."""
        return self._endpoint.namespace if self._preserve_host else self._upstream.authority

    def _headers(
        self, headers: Mapping[str, str], remote: RemoteEndpoint | None, *, websocket: bool
    ) -> list[tuple[bytes, bytes]]:
        """The sender's headers as the upstream gets them, less ``Host``."""
        dropped = _NOT_FORWARDED | _HANDSHAKE if websocket else _NOT_FORWARDED
        pairs: list[tuple[bytes, bytes]] = []
        forwarded_for: str | None = None
        forwarded: str | None = None
        for name, value in headers.items():
            lowered = name.lower()
            if lowered in dropped:
                continue
            if _FORBIDDEN_IN_VALUE.search(value):
                raise _Refusal(400, f"request header {name[:64]!r} holds a control character")
            if lowered == "x-forwarded-for":
                forwarded_for = value
            elif lowered == "forwarded":
                forwarded = value
            else:
                pairs.append((header_bytes(name), header_bytes(value)))
        address = remote.address if remote is not None else None
        if address is not None:
            forwarded_for = f"{forwarded_for}, {address}" if forwarded_for else address
        proto = "https" if self._endpoint.secure else "http"
        host = self._endpoint.namespace
        hop = f"for={_forwarded_node(address)};host={_forwarded_value(host)};proto={proto}"
        added: list[tuple[str, str]] = [
            ("X-Forwarded-Proto", proto),
            ("X-Forwarded-Host", host),
            ("Forwarded", f"{forwarded}, {hop}" if forwarded else hop),
        ]
        if forwarded_for is not None:
            added.append(("X-Forwarded-For", forwarded_for))
        return [(header_bytes(name), header_bytes(value)) for name, value in added] + pairs

    # -- HTTP --------------------------------------------------------------------------------

    async def answer(self, request: HttpRequest) -> HttpResponse:
        """The listener's request handler: the upstream's answer, or the proxy's own."""
        try:
            return await self._forward(request)
        except ConnectionLostError:
            # The upstream saw the body cut off too; no one is left to read an answer.
            logger.info("%s %s: the sender went away", request.method, request.path[:200])
            return HttpResponse(400)
        except _Refusal as refusal:
            if refusal.status >= 500:
                logger.warning("%s %s: %s", request.method, request.path[:200], refusal.error)
            body = {"error": refusal.error, "upstream": self._upstream.url}
            return HttpResponse(
                refusal.status,
                headers=[("Content-Type", "application/json")],
                body=json.dumps(body).encode(),
            )

    async def _forward(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request.path, request.query, request.target)
        headers = self._headers(request.headers, request.remote_endpoint, websocket=False)
        headers.insert(0, (b"Host", header_bytes(self._host)))
        body = await _request_body(request)
        try:
            outgoing = self._client.build_request(
                request.method,
                self._base_url.copy_with(raw_path=target.encode("ascii")),
                headers=headers,
                content=body,
            )
        except (httpx.InvalidURL, httpx.LocalProtocolError) as error:
            raise _Refusal(400, f"the request cannot be sent on: {error}") from None
        allowed = max(0.0, request.time_left() - _DEADLINE_MARGIN)
        if self._response_timeout is not None:
            allowed = min(allowed, self._response_timeout)
        with anyio.move_on_after(allowed) as waiting:
            try:
                response = await self._client.send(outgoing, stream=True)
            except httpx.TimeoutException as error:
                raise _Refusal(
                    504, f"the upstream did not answer in time ({_why(error)})"
                ) from None
            except httpx.ConnectError as error:
                raise _Refusal(502, f"could not connect to the upstream ({_why(error)})") from None
            except httpx.HTTPError as error:
                raise _Refusal(502, f"the upstream failed to answer ({_why(error)})") from None
            try:
                return await self._response(request, response)
            except BaseException:
                await response.aclose()
                raise
        assert waiting.cancelled_caught
        raise _Refusal(
            504, f"the upstream did not answer within {allowed:.3g} s, as the relay requires"
        )

    async def _response(self, request: HttpRequest, response: httpx.Response) -> HttpResponse:
        """The upstream's response as the relay carries it: small bodies of a declared length
        whole (they can travel inline), any other streamed."""
        try:
            pairs, length = relayed_response_headers(
                _without_connection_options(response.headers.multi_items()), logger
            )
        except LocalProtocolError as error:
            raise _Refusal(502, f"the upstream's response cannot be relayed: {error}") from None
        reason = response.reason_phrase or None
        if length is not None and length <= INLINE_BODY_LIMIT:
            try:
                whole = b"".join([piece async for piece in response.aiter_raw()])
            except httpx.HTTPError as error:
                raise _Refusal(502, f"the upstream's response broke off ({_why(error)})") from None
            finally:
                await response.aclose()
            return HttpResponse(response.status_code, headers=pairs, body=whole, reason=reason)
        return HttpResponse(
            response.status_code, headers=pairs, body=_streamed(response), reason=reason
        )

    # -- WebSockets --------------------------------------------------------------------------

    async def decide(self, context: AcceptContext) -> None:
        """The listener's accept handler: open the upstream WebSocket first, then accept the
        sender with the subprotocol the upstream chose, or refuse it as the upstream did."""
        try:
            upstream = await self._open_upstream_websocket(context)
        except _Refusal as refusal:
            logger.warning("WebSocket %s: %s", context.suffix[:200] or "/", refusal.error)
            context.reject(refusal.status, refusal.error[:500])
            return
        key = context.accept_message.id
        self._pending[key] = upstream
        assert self._tasks is not None
        self._tasks.start_soon(self._drop_if_unclaimed, key)
        context.accept(upstream.subprotocol)

    async def _open_upstream_websocket(self, context: AcceptContext) -> ClientConnection:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise _Refusal(502, "WebSockets are proxied on asyncio only") from None
        target = self._target(context.suffix or "/", context.query, context.suffix or "/")
        headers = self._headers(context.headers, context.remote_endpoint, websocket=True)
        scheme = "wss" if self._upstream.secure else "ws"
        options: dict[str, Any] = {"host": self._upstream.host, "port": self._port()}
        if self._upstream.secure:
            options.update(ssl=self._ssl_context, server_hostname=self._upstream.host)
        try:
            return await _UpstreamWebSocket(
                # The URI names the Host to ask for; the socket goes to the upstream.
                f"{scheme}://{self._host}{target}",
                subprotocols=[Subprotocol(offered) for offered in context.subprotocols] or None,
                additional_headers=[
                    (name.decode("latin-1"), value.decode("latin-1")) for name, value in headers
                ],
                user_agent_header=None,
                proxy=None,
                compression=None,
                open_timeout=self._connect_timeout,
                max_size=DEFAULT_MAX_MESSAGE_SIZE,
                **options,
            )
        except InvalidStatus as refused:
            status = refused.response.status_code
            phrase = _printable(refused.response.reason_phrase) or "Refused"
            raise _Refusal(
                status if 200 <= status <= 999 else 502, f"{phrase} (the upstream refused)"
            ) from None
        except (OSError, TimeoutError, InvalidHandshake) as error:
            raise _Refusal(
                502, f"could not open a WebSocket to the upstream ({_why(error)})"
            ) from None

    def _port(self) -> int:
        if self._upstream.port is not None:
            return self._upstream.port
        return 443 if self._upstream.secure else 80

    async def _drop_if_unclaimed(self, key: str) -> None:
        """Close the upstream side of an accepted WebSocket whose rendezvous never came."""
        await anyio.sleep(_RENDEZVOUS_WAIT)
        upstream = self._pending.pop(key, None)
        if upstream is not None:
            await upstream.close(1011, "the sender never arrived")

    async def carry(self, websocket: WebSocket) -> None:
        """The listener's connection handler: messages both ways until one side closes, and
        that side's close code and reason passed to the other."""
        accept = websocket.accept
        upstream = self._pending.pop(accept.id, None) if accept is not None else None
        if upstream is None:
            await websocket.close(1011, "the upstream connection was given up")
            return

        async def up() -> None:
            try:
                async for message in websocket:
                    await upstream.send(message)
            except ConnectionClosed:
                pass
            except UpstreamClosed:
                return
            code, reason = relayed_close(websocket.close_code or 1005, websocket.close_reason or "")
            await upstream.close(code, reason)

        async def down() -> None:
            try:
                async for message in upstream:
                    await websocket.send(message)
            except UpstreamClosed:
                pass
            except ConnectionClosed:
                return
            code, reason = relayed_close(upstream.close_code or 1005, upstream.close_reason or "")
            await websocket.close(code, reason)

        try:
            async with anyio.create_task_group() as pumps:
                pumps.start_soon(up)
                pumps.start_soon(down)
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.close(1001, "the proxy is stopping")


class _NoCookies(http.cookiejar.CookieJar):
    """The upstream client's cookie jar, which keeps nothing: a cookie the upstream sets is the
    sender's, passed back in the response, never one for the next sender's requests."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return


class _UpstreamWebSocket(websocket_connect):
    """The ``websockets`` client, told not to follow redirects: a proxy passes them on."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


async def _request_body(request: HttpRequest) -> bytes | AsyncIterator[bytes]:
    """The body to send upstream: bytes when it is already whole (the upstream gets its
    length), else a stream (the upstream gets it chunked)."""
    pieces = request.stream()
    first = await anext(pieces, None)
    if first is None:
        return b""
    # A body that came inline ends at once; one streamed over a rendezvous goes on.
    second = await anext(pieces, None)
    if second is None:
        return first

    async def rest() -> AsyncIterator[bytes]:
        yield first
        yield second
        async for piece in pieces:
            yield piece

    return rest()


async def _streamed(response: httpx.Response) -> AsyncIterator[bytes]:
    """The upstream's body as it comes; a failure raises, so that the transport cuts the
    sender's response instead of ending it."""
    try:
        async for piece in response.aiter_raw():
            yield piece
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()


def _without_connection_options(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers less those the ``Connection`` header names, which are for this hop only."""
    pairs = list(headers)
    named = {
        option.strip().lower()
        for name, value in pairs
        if name.lower() == "connection"
        for option in value.split(",")
    }
    return [(name, value) for name, value in pairs if name.lower() not in named]


def _forwarded_node(address: str | None) -> str:
    if address is None:
        return "unknown"
    return f'"[{address}]"' if ":" in address else address


def _forwarded_value(value: str) -> str:
    return value if _TOKEN.fullmatch(value) else '"' + value.replace('"', "") + '"'


def _printable(text: str) -> str:
    return _FORBIDDEN_IN_VALUE.sub("", text)[:200]


def _why(error: BaseException) -> str:
    """An upstream failure in a few words, without a traceback: the system's reason when an
    OS error lies beneath (``connection refused``), else the error's own text."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        cause = cause.__cause__ or cause.__context__
    return (str(error) or type(error).__name__)[:300]


async def expose_http(
    connection_string: str | RelayEndpoint,
    upstream: str | Upstream,
    *,
    strip_prefix: bool = True,
    preserve_host: bool = False,
    on_status: StatusHandler | None = None,
    response_timeout: float | None = None,
    connect_timeout: float = 10.0,
    max_connections: int = 100,
    ssl_context: ssl.SSLContext | None = None,
    drain_timeout: float = 10.0,
    observer: ListenerObserver | None = None,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the hybrid connection as a reverse proxy to ``upstream`` until cancelled, and then
    drain for up to ``drain_timeout`` seconds (see :mod:`hyco_adapters.draining`).

    ``upstream`` is an ``http://`` or ``https://`` URL (checked by :func:`parse_upstream`,
    which raises :class:`InvalidUpstreamError`); its path is the base every request lands
    under. ``on_status`` hears each change of the listener's status, ``observer`` what it does
    (see :class:`~hyco_core.ListenerObserver`). ``task_status.started()``
    is called once the listener is online; the relay's reason is raised when the listener ends
    for good (the hybrid connection was deleted).

    ``response_timeout`` bounds how long the upstream may take to start its response (504
    after it); it is never later than shortly before the relay's own deadline (60 s).
    ``connect_timeout`` bounds each new upstream connection, ``max_connections`` how many are
    open at once; ``ssl_context`` checks an ``https://`` upstream (default: the system's CAs,
    ``SSL_CERT_FILE`` included).
    """
    target = parse_upstream(upstream) if isinstance(upstream, str) else upstream
    endpoint = RelayEndpoint.of(connection_string)
    proxy = HttpProxy(
        endpoint,
        target,
        strip_prefix=strip_prefix,
        preserve_host=preserve_host,
        response_timeout=response_timeout,
        connect_timeout=connect_timeout,
        max_connections=max_connections,
        ssl_context=ssl_context,
    )
    work = WorkUnderWay()

    async def carry(websocket: WebSocket) -> None:
        with work.one():
            await proxy.carry(websocket)

    listener = Listener(
        endpoint,
        accept_handler=proxy.decide,
        connection_handler=carry,
        request_handler=proxy.answer,
        on_status=on_status,
        drain_timeout=drain_timeout,
        observer=observer,
    )
    async with proxy:
        logger.info("proxying %s to %s", endpoint.http_url, target.url)
        await serve_until_cancelled(
            listener, work, drain_timeout=drain_timeout, task_status=task_status
        )

"""One fuzz target per parser of the kernel and the relay: a function of bytes, and its contract.

The contract: fed any bytes, a target returns. Inside, it calls the parser the way hyco's own
callers do and catches, at each call, exactly the errors that call documents for bad input (a
:class:`~hyco_core.errors.HycoError` subclass, or the relay's ``ConfigError``); ``errors``
lists them. Anything that escapes is a crash: a foreign exception (``KeyError``,
``RecursionError``, an h11 or wsproto error), a documented error where the documentation says
the call never raises, or an ``AssertionError`` from an invariant checked on the way (a secret
in a message or ``repr``, a round trip that does not come back equal, a channel that does not
end with exactly one terminal event).

Several targets read their first byte as options (how to cut the stream into reads, which
channel to drive) and the rest as the input itself, so every target is a pure function of one
byte string: a corpus file, a hypothesis example and an atheris input are the same thing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace

from hyco_core import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Accept,
    AcceptContext,
    AcceptRequested,
    ChannelClosed,
    ChannelConfig,
    ChannelState,
    ConnectionStringError,
    ControlChannel,
    ControlMessage,
    Event,
    HandshakeRefused,
    Headers,
    HttpRendezvous,
    InvalidTokenError,
    InvalidUrlError,
    KeepAlive,
    LocalProtocolError,
    MessageReceived,
    RejectDelivered,
    RelayedWebSocket,
    RemoteProtocolError,
    RenewToken,
    Request,
    RequestReceived,
    Response,
    TokenRenewalDue,
    UnknownMessage,
    WebSocketChannel,
    create_relay_send_uri,
    create_relay_token,
    decode_message,
    encode_message,
    parse_connection_string,
    parse_relay_url,
    parse_sas_token,
    redact_url,
    reject_connection,
    relay_token_resource,
    split_request_target,
)
from hyco_core.http import Phase
from hyco_core.service import (
    BodyEnd,
    BodyPiece,
    HttpServer,
    IncomingRequest,
    PingReceived,
    ServerWebSocket,
    ServiceControlChannel,
    ServiceHttpRendezvous,
    normalize_namespace,
    strip_relay_query,
    validate_entity_path,
    verify_sas_token,
)
from hyco_relay.config import AccessRule, ConfigError, RelayConfig, parse_config

__all__ = [
    "KEYS",
    "MARKER",
    "NONCE",
    "TARGETS",
    "TARGET_URI",
    "Target",
    "check",
]

#: Rules and keys the SAS target verifies against (those of the conformance vectors).
KEYS = {"RootManageSharedAccessKey": ["SECRETKEY=", "SECONDARYKEY="], "SendOnly": ["SENDKEY"]}
#: The entity the SAS target's tokens are verified for.
TARGET_URI = "sb://contoso.servicebus.windows.net/hc1"
NOW = 1_699_999_400
#: A secret that structured inputs plant where only keys, signatures and tokens go: wherever a
#: target finds it only in such places, it must not come out in a message or a ``repr``.
MARKER = "S3cr3tM4rk3r"
#: The WebSocket key nonce of every client channel, so inputs can carry the matching answer.
NONCE = bytes(range(16))
ENTITIES = ("hc1", "hc1/sub", "a/b/c", "hyco")

# Reads of 1, 2, 3, ... bytes: where a parser keeps state between reads, the cut matters.
_CHUNKS = (1 << 30, 1, 2, 3, 7, 64, 1000, 1 << 30)
_TOKEN_ITEMS = re.compile(r"[?&](?:sb-hc-token|sig)=[^&#]*", re.IGNORECASE)
_QUERY_TOKEN_ITEMS = re.compile(r"(?:^|&)sb-hc-token=[^&#?]*", re.IGNORECASE)
_SIGNATURE_FIELDS = re.compile(r"(?:^|[ &])sig=[^&]*", re.IGNORECASE)
_CONNECTION_STRING_SECRETS = re.compile(r"SharedAccess(?:Key|Signature)\s*=[^;]*", re.IGNORECASE)
_CONFIG_KEYS = re.compile(r"(?:primary|secondary)_key\s*=\s*\"[^\"\n]*", re.IGNORECASE)
_SECRET_HEADERS = ("servicebusauthorization", "authorization")


@dataclass(frozen=True)
class Target:
    """A parser under fuzzing: ``run`` takes the input; ``errors`` are those it may meet."""

    name: str
    run: Callable[[bytes], None]
    errors: tuple[type[Exception], ...]
    summary: str


def check(target: Target, data: bytes) -> None:
    """Run ``target`` on ``data``: it returns when the parser kept its contract, else raises."""
    target.run(data)


def _text(data: bytes) -> str:
    # Invalid UTF-8 becomes lone surrogates: text a str API can be handed but not encode.
    return data.decode("utf-8", "surrogateescape")


def _options(data: bytes) -> tuple[int, bytes]:
    return (data[0], data[1:]) if data else (0, b"")


def _only_inside(text: str, secret: str, places: re.Pattern[str]) -> bool:
    """Whether ``secret`` occurs in ``text``, and only inside matches of ``places``."""
    if secret not in text:
        return False
    spans = [match.span() for match in places.finditer(text)]
    start = text.find(secret)
    while start != -1:
        end = start + len(secret)
        if not any(low <= start and end <= high for low, high in spans):
            return False
        start = text.find(secret, start + 1)
    return True


def _assert_hidden(secret: str, *shown: str) -> None:
    for text in shown:
        assert secret not in text, f"a secret came out in {text[:200]!r}"


# -- SAS tokens --------------------------------------------------------------------------------


def fuzz_sas(data: bytes) -> None:
    """The input as a SAS token (parse and verify), then as a URI to mint a token for."""
    text = _text(data)
    planted = _only_inside(text, MARKER, _SIGNATURE_FIELDS)
    try:
        parsed = parse_sas_token(text)
    except InvalidTokenError as error:
        parsed = None
        if planted:
            _assert_hidden(MARKER, str(error))
    # Documented never to raise, whatever the token.
    verdict = verify_sas_token(text, keys=KEYS, target=TARGET_URI, now=NOW, max_lifetime=3600)
    assert verdict.token == parsed
    if parsed is not None:
        if planted:
            _assert_hidden(MARKER, verdict.detail, repr(verdict), repr(parsed))
        signature = parsed.signature
        visible = f"{parsed.resource} {parsed.key_name} {TARGET_URI}"
        if len(signature) >= 24 and signature not in visible:
            _assert_hidden(signature, verdict.detail, repr(verdict))
    try:
        relay_token_resource(text)
    except InvalidUrlError:
        return
    try:
        token = create_relay_token(text, "SendOnly", "SENDKEY", now=NOW)
    except LocalProtocolError:
        return  # text with lone surrogates has no percent-encoded form
    # A token minted for an address grants access to that address: client and relay agree.
    minted = verify_sas_token(token, keys=KEYS, target=text, now=NOW)
    assert minted.valid, minted.detail


# -- relay addresses ---------------------------------------------------------------------------


def fuzz_uris(data: bytes) -> None:
    """The input as a relay address: parse (with and without hosted entities), redact, rebuild."""
    text = _text(data)
    planted = _only_inside(text, MARKER, _TOKEN_ITEMS)
    redacted = redact_url(text)
    if planted:
        _assert_hidden(MARKER, redacted)
    strip_relay_query(text)
    # Planted in sb-hc-token values of the query (not in a path that merely looks like one).
    before, question, query = text.partition("?")
    query_only = (
        bool(question) and MARKER not in before and _only_inside(query, MARKER, _QUERY_TOKEN_ITEMS)
    )
    for entities in (None, ENTITIES):
        try:
            url = parse_relay_url(text, entities=entities)
        except InvalidUrlError as error:
            if planted:
                _assert_hidden(MARKER, str(error))
            continue
        assert url.suffix == "" or url.suffix.startswith("/")
        assert normalize_namespace(url.namespace) == url.namespace
        assert url.token == url.relay_parameters.get("sb-hc-token")
        if query_only:
            _assert_hidden(MARKER, repr(url))
        if entities is None:
            _rebuild(url.namespace, url.entity, url.suffix, url.query, secure=url.secure)
    for check_text in (normalize_namespace, validate_entity_path):
        with suppress(InvalidUrlError):
            check_text(text)


def _rebuild(namespace: str, entity: str, suffix: str, query: str, *, secure: bool) -> None:
    """Build a sender's address from parsed parts: it reads back to the same entity."""
    try:
        validate_entity_path(entity)
    except InvalidUrlError:
        return  # '$hc' as the entity: a URL may say so, a builder must not
    # The builder takes one leading '?' as optional: give it one, the query may start with '?'.
    built = create_relay_send_uri(
        namespace, entity, suffix=suffix, query=f"?{query}", secure=secure
    )
    again = parse_relay_url(built)
    assert (again.namespace, again.entity, again.action) == (namespace, entity, "connect")


# -- connection strings ------------------------------------------------------------------------


def fuzz_connection_string(data: bytes) -> None:
    """The input as a connection string: parse, format, parse again."""
    text = _text(data)
    planted = _only_inside(text, MARKER, _CONNECTION_STRING_SECRETS)
    try:
        parsed = parse_connection_string(text)
    except ConnectionStringError as error:
        if planted:
            _assert_hidden(MARKER, str(error))
        return
    shown = repr(parsed)
    # The same connection string without credentials: what the repr may show anyway.
    bare = replace(
        parsed,
        shared_access_key_name=None,
        shared_access_key=None,
        shared_access_signature=None,
    )
    visible = f"{bare!r} {parsed.shared_access_key_name}"
    for secret in (parsed.shared_access_key, parsed.shared_access_signature):
        if secret is not None and len(secret) >= 6 and secret not in visible:
            _assert_hidden(secret, shown)
    assert parse_connection_string(parsed.format()) == parsed


# -- control messages --------------------------------------------------------------------------


def fuzz_messages(data: bytes) -> None:
    """The input as a control message, as bytes and as text: both read the same; re-encoding
    reads back equal; a message over the size limit is refused before it is parsed."""
    outcomes = [_decode(data)]
    try:
        outcomes.append(_decode(data.decode("utf-8")))
    except UnicodeDecodeError:
        pass
    else:
        assert outcomes[0] == outcomes[1]
    if data:
        assert _decode(data, max_size=len(data) - 1) == 1008
    decoded = outcomes[0]
    if isinstance(decoded, int):
        return
    message = decoded[0]
    _check_message_repr(message)
    if isinstance(message, UnknownMessage):
        return
    try:
        text = encode_message(message)
    except LocalProtocolError:
        return  # a response the relay must refuse (hop-by-hop header, empty request id)
    again = decode_message(text)
    assert again.message == message
    assert again.ignored_fields == ()


def _decode(
    source: str | bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> tuple[ControlMessage, tuple[str, ...]] | int:
    """The message and its ignored fields, or the close code of the refusal."""
    try:
        decoded = decode_message(source, max_size=max_size)
    except RemoteProtocolError as error:
        code = error.close_code
    else:
        return decoded.message, decoded.ignored_fields
    assert code in (1002, 1007, 1008)
    return code


def _check_message_repr(message: object) -> None:
    if isinstance(message, RenewToken):
        assert repr(message) == "RenewToken()"
        return
    if isinstance(message, Accept):
        headers = message.connect_headers
        others = repr(replace(message, connect_headers=headers.without(_SECRET_HEADERS)))
        _check_headers_repr(headers, repr(message), others)
    elif isinstance(message, Request):
        headers = message.request_headers
        others = repr(replace(message, request_headers=headers.without(_SECRET_HEADERS)))
        _check_headers_repr(headers, repr(message), others)


def _check_headers_repr(headers: Headers, shown: str, visible: str) -> None:
    """No credential header's value in ``shown``, unless ``visible`` (the same object without
    those headers) holds it anyway."""
    for name in _SECRET_HEADERS:
        value = headers.get(name)
        if value is not None and len(value) >= 8 and value not in visible:
            _assert_hidden(value, shown)


# -- the relay's HTTP server side --------------------------------------------------------------


def fuzz_http_server(data: bytes) -> None:
    """Option byte, then what a client sends the relay: requests, bodies, an upgrade, frames.

    The server reads it as the relay does: the head, then the body or the switch to WebSocket
    (whose frames go to a :class:`ServerWebSocket`), an answer, the next request.
    """
    options, stream = _options(data)
    chunk = _CHUNKS[options & 7]
    server = HttpServer(max_header_bytes=4096 if options & 0x08 else 64 * 1024)
    pieces = [stream[start : start + chunk] for start in range(0, len(stream), chunk)]
    for index, piece in enumerate([*pieces, b""]):
        server.receive_data(piece)
        try:
            switched = _serve(server, options)
        except RemoteProtocolError:
            return  # the relay drops the connection
        if switched is None:
            return
        if isinstance(switched, ServerWebSocket):
            rest = b"".join(pieces[index + 1 :])
            _drive(switched, [rest[i : i + chunk] for i in range(0, len(rest), chunk)], options)
            return


def _serve(server: HttpServer, options: int) -> ServerWebSocket | bool | None:
    """Answer what has arrived: a WebSocket once switched, ``True`` to read on, ``None`` at
    the end of the connection."""
    while (event := server.next_event()) is not None:
        if isinstance(event, IncomingRequest):
            _check_request(event)
            if options & 0x10 or event.method == "CONNECT":
                # As the relay refuses (a bad token, CONNECT, no listener...), then closes.
                server.refuse(405, "Refused", body=b'{"error": "refused"}')
                return None
            if event.is_websocket:
                subprotocol = event.subprotocols[0] if event.subprotocols else None
                try:
                    _answer, trailing = server.accept_websocket(subprotocol=subprotocol)
                except LocalProtocolError:
                    # The relay switches right after the head: an upgrade whose declared body
                    # has not all come yet cannot switch, and the relay drops it.
                    assert _declares_body(event)
                    return None
                return ServerWebSocket(
                    now=0.0, trailing=trailing, passes_pings=bool(options & 0x20)
                )
            server.continue_if_expected()
        elif isinstance(event, BodyPiece):
            assert event.data
        else:
            assert isinstance(event, BodyEnd)
            length = None if options & 0x40 else 2
            server.start_response(
                200, "OK", [("Content-Type", "text/plain")], content_length=length
            )
            server.send_body(b"ok")
            server.end_response()
            if not server.start_next_request():
                return None
    return True


def _declares_body(request: IncomingRequest) -> bool:
    length = request.headers.get("content-length", "0").strip()
    return "transfer-encoding" in request.headers or length.strip("0") != ""


def _check_request(request: IncomingRequest) -> None:
    assert request.method
    assert request.target
    visible = repr(request.headers.without(_SECRET_HEADERS))
    _check_headers_repr(request.headers, repr(request.headers), visible)


# -- WebSocket channels ------------------------------------------------------------------------

_TERMINAL = (ChannelClosed, HandshakeRefused, RejectDelivered)
_ADDRESS = "ws://contoso.servicebus.windows.net/$hc/hc1"
_TOKEN = f"SharedAccessSignature sr=x&sig={MARKER}&se=1&skn=k"


def fuzz_client_channel(data: bytes) -> None:
    """Option byte, then what the relay answers a client channel: the upgrade answer, frames.

    The option picks the channel (a sender's or accepted WebSocket, a listener's control
    channel, an HTTP rendezvous, a rejection), how reads are cut and whether timers fire.
    """
    options, stream = _options(data)
    chunk = _CHUNKS[(options >> 2) & 7]
    channel = _client_channel(options & 3)
    channel.data_to_send()
    _drive(
        channel, [stream[start : start + chunk] for start in range(0, len(stream), chunk)], options
    )


def _client_channel(kind: int) -> WebSocketChannel:
    config = ChannelConfig(keepalive=KeepAlive(ping_interval=10.0, pong_timeout=5.0))
    if kind == 0:
        return RelayedWebSocket(
            url=f"{_ADDRESS}?sb-hc-action=connect",
            now=0.0,
            nonce=NONCE,
            subprotocols=["a", "b"],
            config=config,
        )
    if kind == 1:
        return ControlChannel(
            url=f"{_ADDRESS}?sb-hc-action=listen",
            now=0.0,
            nonce=NONCE,
            token=_TOKEN,
            token_expires_at=600.0,
            config=config,
        )
    if kind == 2:
        return HttpRendezvous(
            address=f"{_ADDRESS}?sb-hc-action=request&sb-hc-id=1", now=0.0, nonce=NONCE
        )
    accept = Accept(
        address=f"{_ADDRESS}?sb-hc-action=accept&sb-hc-id=1", id="1", connect_headers=Headers()
    )
    return reject_connection(accept, status_code=403, description="no", now=0.0, nonce=NONCE)


def fuzz_server_websocket(data: bytes) -> None:
    """Option byte, then the frames a client sends the relay after the upgrade.

    The option picks the relay's end (a relayed WebSocket answering or passing pings, a
    listener's control channel, an HTTP rendezvous) and how reads are cut.
    """
    options, stream = _options(data)
    chunk = _CHUNKS[(options >> 2) & 7]
    pieces = [stream[start : start + chunk] for start in range(0, len(stream), chunk)]
    trailing = pieces.pop(0) if pieces and options & 0x40 else b""
    kind = options & 3
    channel: ServerWebSocket
    if kind < 2:
        channel = ServerWebSocket(now=0.0, trailing=trailing, passes_pings=kind == 1)
    elif kind == 2:
        control = ServiceControlChannel(now=0.0, trailing=trailing)
        if control.state is ChannelState.OPEN:
            control.send_accept(
                Accept(address=f"{_ADDRESS}?sb-hc-action=accept", id="1", connect_headers=Headers())
            )
            control.send_request(_request(body=True), b"hello")
        channel = control
    else:
        rendezvous = ServiceHttpRendezvous(now=0.0, trailing=trailing)
        if rendezvous.state is ChannelState.OPEN:
            rendezvous.send_request(_request(body=True))
            rendezvous.send_body(b"hello", final=True)
        channel = rendezvous
    _drive(channel, pieces, options)


def _request(*, body: bool | None) -> Request:
    return Request(
        address=f"{_ADDRESS}?sb-hc-action=request&sb-hc-id=1",
        id="1",
        request_target="/hc1/x",
        method="POST",
        request_headers=Headers({"Content-Type": "text/plain"}),
        body=body,
    )


def _drive(channel: WebSocketChannel, pieces: list[bytes], options: int) -> None:
    """Feed ``pieces``, then the end of the stream, acting on events as an application would.

    Nothing may escape the channel; it ends CLOSED having reported exactly one terminal event,
    and nothing after it.
    """
    terminal: list[Event] = []
    now = 0.0

    def drain() -> None:
        for event in channel.events():
            assert not terminal, f"{event!r} came after the channel ended"
            if isinstance(event, _TERMINAL):
                terminal.append(event)
                assert channel.state is ChannelState.CLOSED
            elif channel.state is ChannelState.OPEN:
                _react(channel, event, now)
        channel.data_to_send()

    drain()
    for piece in pieces:
        now += 1.0
        channel.receive_data(piece, now)
        drain()
        timer = channel.get_timer()
        if options & 0x80 and timer is not None:
            now = max(now, timer)
            channel.handle_timer(now)
            drain()
    channel.receive_eof()
    drain()
    assert channel.state is ChannelState.CLOSED
    assert len(terminal) == 1, terminal
    assert channel.get_timer() is None


def _react(channel: WebSocketChannel, event: Event, now: float) -> None:
    """What an application does with an event, through the channel's public actions."""
    if isinstance(channel, RelayedWebSocket) and isinstance(event, MessageReceived):
        channel.send_message(event.data, final=event.final)
    elif isinstance(event, PingReceived) and isinstance(channel, ServerWebSocket):
        channel.pong(event.payload)
    elif isinstance(channel, ControlChannel):
        if isinstance(event, RequestReceived):
            response = Response(request_id=event.request.id or "1", status_code=200)
            channel.send_response(response, b"ok")
        elif isinstance(event, TokenRenewalDue):
            channel.renew_token(_TOKEN, now=now, expires_at=now + 600.0)
        elif isinstance(event, AcceptRequested):
            _check_message_repr(event.accept)
            with suppress(InvalidUrlError):  # the relay sent an address no sender can have
                AcceptContext(event.accept)
    elif (
        isinstance(channel, HttpRendezvous)
        and isinstance(event, RequestReceived)
        and channel.response_phase is Phase.IDLE
    ):
        split_request_target(event.request.request_target, "hc1")
        response = Response(request_id=event.request.id or "1", status_code=200, body=True)
        channel.send_response(response)
        channel.send_body(b"ok", final=True)


# -- the relay's configuration -----------------------------------------------------------------


def fuzz_relay_config(data: bytes) -> None:
    """The input as the relay's TOML configuration file."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return  # load_config refuses it before parsing
    planted = _only_inside(text, MARKER, _CONFIG_KEYS)
    try:
        config = parse_config(text, source="relay.toml")
    except ConfigError as error:
        if planted:
            _assert_hidden(MARKER, str(error))
        return
    shown = repr(config)
    visible = repr(_without_keys(config))
    for namespace in config.namespaces:
        for rule in (*namespace.rules, *(r for e in namespace.entities for r in e.rules)):
            for key in rule.keys:
                if len(key) >= 6 and key not in visible:
                    _assert_hidden(key, shown)


def _without_keys(config: RelayConfig) -> RelayConfig:
    """The same configuration with every key replaced: what its repr may show anyway."""

    def bare(rules: tuple[AccessRule, ...]) -> tuple[AccessRule, ...]:
        return tuple(replace(rule, primary_key="-", secondary_key=None) for rule in rules)

    namespaces = tuple(
        replace(
            namespace,
            rules=bare(namespace.rules),
            entities=tuple(replace(e, rules=bare(e.rules)) for e in namespace.entities),
        )
        for namespace in config.namespaces
    )
    return replace(config, namespaces=namespaces)


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target(
            "sas",
            fuzz_sas,
            (InvalidTokenError, InvalidUrlError, LocalProtocolError),
            "hyco_core.sas: parse_sas_token, verify_sas_token, relay_token_resource, minting",
        ),
        Target(
            "uris",
            fuzz_uris,
            (InvalidUrlError,),
            "hyco_core.uris: parse_relay_url, redact_url, strip_relay_query, rebuilding",
        ),
        Target(
            "connection_string",
            fuzz_connection_string,
            (ConnectionStringError,),
            "hyco_core.connection_string: parse_connection_string, format",
        ),
        Target(
            "messages",
            fuzz_messages,
            (RemoteProtocolError, LocalProtocolError),
            "hyco_core.messages: decode_message, encode_message",
        ),
        Target(
            "http_server",
            fuzz_http_server,
            (RemoteProtocolError,),
            "hyco_core.service.HttpServer, then ServerWebSocket after an upgrade",
        ),
        Target(
            "client_channel",
            fuzz_client_channel,
            (),
            "RelayedWebSocket, ControlChannel, HttpRendezvous, RejectChannel (handshake, frames)",
        ),
        Target(
            "server_websocket",
            fuzz_server_websocket,
            (),
            "ServerWebSocket, ServiceControlChannel, ServiceHttpRendezvous (frames)",
        ),
        Target(
            "relay_config",
            fuzz_relay_config,
            (ConfigError,),
            "hyco_relay.config.parse_config (TOML)",
        ),
    )
}

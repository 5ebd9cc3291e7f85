"""hyco_core: the sans-IO kernel of Azure Relay Hybrid Connections.

Pure protocol logic: bytes and time in, events and bytes out. No sockets, clocks, threads or
randomness: transports (``hyco_transports``) or any other I/O stack drive it. This package
exports the client role, what a listener, a sender or a transport needs; the relay's role is in
:mod:`hyco_core.service`.
"""

from __future__ import annotations

# Channels: the client WebSocket every connection is built on, and a listener's answer to an accept.
from .channel import (
    RENDEZVOUS_CONFIG,
    SENDER_CONFIG,
    ChannelConfig,
    ChannelState,
    MessageAssembly,
    RejectChannel,
    RelayedWebSocket,
    TextCollector,
    WebSocketChannel,
    accept_connection,
    connection_closed,
    handshake_outcome,
    reject_connection,
    sender_channel,
)

# Connection strings, as the portal shows them.
from .connection_string import (
    ConnectionString,
    parse_connection_string,
)

# A listener's control channel.
from .control import (
    ControlChannel,
    message_kind,
)

# Errors, and how a relay's status or close code maps onto them.
from .errors import (
    AuthorizationError,
    CertificateError,
    ConnectionClosed,
    ConnectionLostError,
    ConnectionStringError,
    EndpointNotFoundError,
    HycoError,
    InvalidTokenError,
    InvalidUrlError,
    ListenerUnavailableError,
    LocalProtocolError,
    QuotaExceededError,
    RejectedError,
    RelayError,
    RelayServerError,
    RelayTimeoutError,
    RemoteProtocolError,
    TooManyRequestsError,
    error_from_close,
    error_from_status,
    tracking_id_of,
)

# Events a client's channels and lifecycle report.
from .events import (
    AcceptRequested,
    ChannelClosed,
    Event,
    HandshakeRefused,
    ListenerStatus,
    ListenerStatusChanged,
    MessageReceived,
    Opened,
    RejectDelivered,
    RendezvousRequested,
    RequestBodyReceived,
    RequestReceived,
    TokenRenewalDue,
    UnknownContentIgnored,
)

# What every transport shares around the application: accept decisions, HTTP answers.
from .handling import (
    AcceptContext,
    offered_subprotocols,
    response_head,
    split_request_target,
)

# HTTP exchanges a listener answers over a rendezvous.
from .http import (
    RESPONSE_PIECE,
    HttpRendezvous,
    Phase,
    body_pieces,
    fits_inline,
)

# A listener's reconnect policy and status, and every decision of its life.
from .lifecycle import (
    ListenerLifecycle,
)
from .listener import (
    AnswerRequest,
    DefaultAnswer,
    ListenerSupervisor,
    OfferSender,
    RefreshToken,
    ServeRendezvous,
    Work,
    tracking_id_from,
)

# The control messages and their codec, which both roles speak.
from .messages import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HOP_BY_HOP_HEADERS,
    INLINE_BODY_LIMIT,
    Accept,
    ControlMessage,
    Decoded,
    Headers,
    RemoteEndpoint,
    RenewToken,
    Request,
    Response,
    UnknownMessage,
    decode_message,
    encode_message,
    reason_phrase,
)

# What a listener reports for metrics.
from .observer import ListenerObserver, Traffic

# SAS tokens: creating and reading them.
from .sas import (
    SAS_PREFIX,
    SasToken,
    create_relay_token,
    create_sas_token,
    encode_component,
    parse_sas_token,
    relay_token_resource,
)

# Backoff, token renewal and keep-alive timing.
from .timing import (
    DEFAULT_RECONNECT_SCHEDULE,
    Backoff,
    KeepAlive,
    renewal_time,
)

# Relay addresses: building, reading and redacting them.
from .uris import (
    RelayUrl,
    append_relay_token,
    create_reject_uri,
    create_relay_http_uri,
    create_relay_listen_uri,
    create_relay_send_uri,
    parse_relay_url,
    redact_url,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_RECONNECT_SCHEDULE",
    "HOP_BY_HOP_HEADERS",
    "INLINE_BODY_LIMIT",
    "RENDEZVOUS_CONFIG",
    "RESPONSE_PIECE",
    "SAS_PREFIX",
    "SENDER_CONFIG",
    "Accept",
    "AcceptContext",
    "AcceptRequested",
    "AnswerRequest",
    "AuthorizationError",
    "Backoff",
    "CertificateError",
    "ChannelClosed",
    "ChannelConfig",
    "ChannelState",
    "ConnectionClosed",
    "ConnectionLostError",
    "ConnectionString",
    "ConnectionStringError",
    "ControlChannel",
    "ControlMessage",
    "Decoded",
    "DefaultAnswer",
    "EndpointNotFoundError",
    "Event",
    "HandshakeRefused",
    "Headers",
    "HttpRendezvous",
    "HycoError",
    "InvalidTokenError",
    "InvalidUrlError",
    "KeepAlive",
    "ListenerLifecycle",
    "ListenerObserver",
    "ListenerStatus",
    "ListenerStatusChanged",
    "ListenerSupervisor",
    "ListenerUnavailableError",
    "LocalProtocolError",
    "MessageAssembly",
    "MessageReceived",
    "OfferSender",
    "Opened",
    "Phase",
    "QuotaExceededError",
    "RefreshToken",
    "RejectChannel",
    "RejectDelivered",
    "RejectedError",
    "RelayError",
    "RelayServerError",
    "RelayTimeoutError",
    "RelayUrl",
    "RelayedWebSocket",
    "RemoteEndpoint",
    "RemoteProtocolError",
    "RendezvousRequested",
    "RenewToken",
    "Request",
    "RequestBodyReceived",
    "RequestReceived",
    "Response",
    "SasToken",
    "ServeRendezvous",
    "TextCollector",
    "TokenRenewalDue",
    "TooManyRequestsError",
    "Traffic",
    "UnknownContentIgnored",
    "UnknownMessage",
    "WebSocketChannel",
    "Work",
    "__version__",
    "accept_connection",
    "append_relay_token",
    "body_pieces",
    "connection_closed",
    "create_reject_uri",
    "create_relay_http_uri",
    "create_relay_listen_uri",
    "create_relay_send_uri",
    "create_relay_token",
    "create_sas_token",
    "decode_message",
    "encode_component",
    "encode_message",
    "error_from_close",
    "error_from_status",
    "fits_inline",
    "handshake_outcome",
    "message_kind",
    "offered_subprotocols",
    "parse_connection_string",
    "parse_relay_url",
    "parse_sas_token",
    "reason_phrase",
    "redact_url",
    "reject_connection",
    "relay_token_resource",
    "renewal_time",
    "response_head",
    "sender_channel",
    "split_request_target",
    "tracking_id_from",
    "tracking_id_of",
]

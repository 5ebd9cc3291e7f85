"""Where the kernel's public names live: the client role at ``hyco_core``, the relay's service
role at ``hyco_core.service``."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import hyco_core
from hyco_core import service

CLIENT_ROLE = frozenset(
    {
        "Accept",
        "AnswerRequest",
        "AcceptContext",
        "AcceptRequested",
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
        "DEFAULT_MAX_MESSAGE_SIZE",
        "DEFAULT_RECONNECT_SCHEDULE",
        "Decoded",
        "DefaultAnswer",
        "EndpointNotFoundError",
        "Event",
        "HOP_BY_HOP_HEADERS",
        "HandshakeRefused",
        "Headers",
        "HttpRendezvous",
        "HycoError",
        "INLINE_BODY_LIMIT",
        "InvalidTokenError",
        "InvalidUrlError",
        "KeepAlive",
        "ListenerLifecycle",
        "ListenerObserver",
        "ListenerSupervisor",
        "ListenerStatus",
        "ListenerStatusChanged",
        "ListenerUnavailableError",
        "LocalProtocolError",
        "MessageAssembly",
        "MessageReceived",
        "OfferSender",
        "Opened",
        "Phase",
        "QuotaExceededError",
        "RENDEZVOUS_CONFIG",
        "RESPONSE_PIECE",
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
        "SAS_PREFIX",
        "SENDER_CONFIG",
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
        "connection_closed",
        "append_relay_token",
        "body_pieces",
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
        "sender_channel",
        "relay_token_resource",
        "renewal_time",
        "response_head",
        "split_request_target",
        "tracking_id_of",
        "tracking_id_from",
    }
)

SERVICE_ROLE = frozenset(
    {
        "AUTHORIZATION_HEADERS",
        "BodyEnd",
        "BodyPiece",
        "HostedEntities",
        "HttpServer",
        "INLINE_HEADERS_LIMIT",
        "IncomingRequest",
        "InvalidRequestError",
        "ListenerResponseError",
        "PingReceived",
        "PongReceived",
        "RELAY_CONFIG",
        "ResponseBodyReceived",
        "ResponseReceived",
        "SasOutcome",
        "SasVerdict",
        "ServerWebSocket",
        "ServiceControlChannel",
        "ServiceHttpRendezvous",
        "TokenRenewed",
        "add_via",
        "ascii_lower",
        "check_listener_response",
        "create_rendezvous_uri",
        "forwarded_connect_headers",
        "forwarded_request_headers",
        "listener_reject_status",
        "normalize_namespace",
        "relayed_close",
        "request_fits_inline",
        "request_token",
        "strip_relay_query",
        "validate_entity_path",
        "verify_sas_token",
    }
)

# Names both places export on purpose. None: a name both roles need is exported by the root only,
# and a relay imports it from there.
SHARED: frozenset[str] = frozenset()

PLACES = [("hyco_core", CLIENT_ROLE), ("hyco_core.service", SERVICE_ROLE)]


def test_the_root_exports_exactly_the_client_role() -> None:
    assert set(hyco_core.__all__) == CLIENT_ROLE


def test_the_service_module_exports_exactly_the_service_role() -> None:
    assert set(service.__all__) == SERVICE_ROLE


@pytest.mark.parametrize(("module_name", "names"), PLACES, ids=["root", "service"])
def test_every_listed_name_is_importable_from_its_module(
    module_name: str, names: frozenset[str]
) -> None:
    module = importlib.import_module(module_name)
    assert [name for name in sorted(names) if not hasattr(module, name)] == []


@pytest.mark.parametrize("module", [hyco_core, service], ids=["root", "service"])
def test_all_lists_each_name_once(module: ModuleType) -> None:
    assert len(module.__all__) == len(set(module.__all__))


def test_the_root_exports_no_service_role_name() -> None:
    service_only = [getattr(service, name) for name in SERVICE_ROLE - SHARED]
    for name in hyco_core.__all__:
        value = getattr(hyco_core, name)
        assert name in SHARED or name not in SERVICE_ROLE, name
        assert all(value is not other for other in service_only), name
        assert getattr(value, "__module__", None) != service.__name__, name


def test_no_name_is_exported_from_both_places_unless_shared() -> None:
    assert set(hyco_core.__all__) & set(service.__all__) == SHARED


def test_every_public_name_of_a_kernel_module_is_exported_from_one_of_the_two_places() -> None:
    exported = {name: module for module in (service, hyco_core) for name in module.__all__}
    listed = {"__version__"}
    for info in pkgutil.iter_modules(hyco_core.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"hyco_core.{info.name}")
        listed.update(module.__all__)
        for name in module.__all__:
            assert getattr(exported[name], name) is getattr(module, name), name
    assert set(exported) == listed

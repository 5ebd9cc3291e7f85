"""Authorization: checking the SAS tokens clients present against the configured rules."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

from hyco_core.service import IncomingRequest, SasOutcome, request_token, verify_sas_token

from .config import EntityConfig, NamespaceConfig, RelayConfig, Right
from .incoming import Incoming
from .refusals import Refusal

_RIGHT_NAMES = {Right.LISTEN: "Listen", Right.SEND: "Send", Right.MANAGE: "Manage"}


def authorize(
    config: RelayConfig, incoming: Incoming, right: Right, *, http: bool = False
) -> tuple[str | None, float | None]:
    """Check the request's token for ``right``; return the header it came in and its expiry."""
    if right is Right.SEND and not incoming.entity.requires_client_authorization:
        # Anonymous senders: nothing to check, and an Authorization header is the app's.
        return None, None
    token, header = request_token(
        incoming.request.headers, incoming.url.relay_parameters, http=http
    )
    if not token:
        raise Refusal(
            401,
            "A token is required (ServiceBusAuthorization header or sb-hc-token)",
            code="TokenMissingOrInvalid",
        )
    expiry = verify(config, token, incoming.host, incoming.namespace, incoming.entity, right)
    return header, expiry


def verify(
    config: RelayConfig,
    token: str,
    host: str,
    namespace: NamespaceConfig,
    entity: EntityConfig,
    right: Right,
) -> float:
    """Check a token for ``right``; return its expiry.

    The token's resource must name the host the client addressed (a token for another
    namespace does not open this one) and this entity, or the namespace root.
    """
    target = f"http://{host}/{entity.name}"
    granting = config.keys_for(namespace, entity, right)
    now = time.time()
    verdict = verify_sas_token(token, keys=granting, target=target, now=now)
    if verdict.valid:
        assert verdict.token is not None
        _check_lifetime(config, verdict.token.expiry, now)
        return float(verdict.token.expiry)
    # Signed by a rule without the right, or for another path (403), or not validly signed
    # at all (401)?
    every_rule = config.keys_for(namespace, entity, Right(0))
    verdict = verify_sas_token(token, keys=every_rule, target=target, now=time.time())
    if verdict.valid:
        granted = _RIGHT_NAMES.get(right, "access")
        raise Refusal(403, f"The token's rule does not grant {granted} here")
    if verdict.outcome is SasOutcome.WRONG_RESOURCE:  # validly signed, for another path
        raise Refusal(403, f"The token does not grant access here: {verdict.detail}")
    raise Refusal(401, f"Invalid token: {verdict.detail}", code="TokenMissingOrInvalid")


def verify_namespace(
    config: RelayConfig, token: str, host: str, namespace: NamespaceConfig
) -> None:
    """Check a token for Manage on the whole namespace."""
    keys: dict[str, list[str]] = {}
    for rule in namespace.rules:
        if Right.MANAGE in rule.rights:
            keys.setdefault(rule.name, []).extend(rule.keys)
    now = time.time()
    verdict = verify_sas_token(token, keys=keys, target=f"http://{host}/", now=now)
    if not verdict.valid:
        raise Refusal(
            401, f"A namespace Manage token is required: {verdict.detail}", code="Unauthorized"
        )
    assert verdict.token is not None
    _check_lifetime(config, verdict.token.expiry, now)


def _check_lifetime(config: RelayConfig, expiry: int, now: float) -> None:
    """Refuse a valid token that expires further ahead than ``max_token_lifetime``: a
    stolen token is then worth that long at most."""
    limit = config.max_token_lifetime
    if limit and expiry - now > limit:
        raise Refusal(
            401,
            f"The token expires in {expiry - now:.0f} s; this relay accepts tokens that "
            f"expire within {limit:g} s: ask for a shorter-lived token",
            code="TokenMissingOrInvalid",
        )


def query_parameters(request: IncomingRequest) -> dict[str, str]:
    return {k.lower(): v for k, v in parse_qsl(request.target.partition("?")[2])}


def operations_token(request: IncomingRequest) -> str:
    """The Manage token an operations request (``/$presence``, ``/stats``) carries."""
    token, _header = request_token(request.headers, query_parameters(request), http=True)
    if not token:
        raise Refusal(401, "A Manage token is required", code="TokenMissingOrInvalid")
    return token

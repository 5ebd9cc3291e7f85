"""Accept decisions, response heads and request paths, as every transport uses them."""

from __future__ import annotations

import pytest

from hyco_core import (
    Accept,
    AcceptContext,
    Headers,
    LocalProtocolError,
    RemoteEndpoint,
    Request,
    offered_subprotocols,
    response_head,
    split_request_target,
)

ACCEPT = Accept(
    address="wss://ns.example/$hc/hc1/room/7?user=ann&sb-hc-action=accept&sb-hc-id=a1",
    id="a1",
    connect_headers=Headers({"Sec-WebSocket-Protocol": "chat, superchat", "X-A": "1"}),
    remote_endpoint=RemoteEndpoint(address="10.0.0.1", port=5),
)


def test_context_describes_the_sender() -> None:
    context = AcceptContext(ACCEPT)
    assert (context.suffix, context.query) == ("/room/7", "user=ann")
    assert context.subprotocols == ("chat", "superchat") == offered_subprotocols(ACCEPT)
    assert context.headers["x-a"] == "1"
    assert context.remote_endpoint == RemoteEndpoint(address="10.0.0.1", port=5)
    assert repr(context) == "<AcceptContext suffix='/room/7' query='user=ann'>"


def test_decisions() -> None:
    context = AcceptContext(ACCEPT)
    context.reject(451, "No")
    assert context.rejection == (451, "No")
    later = AcceptContext(ACCEPT)
    later.reject(451, "No")
    later.accept("superchat")  # a later accept wins
    assert later.subprotocol == "superchat"
    assert later.rejection is None
    with pytest.raises(LocalProtocolError, match="did not offer"):
        context.accept("other")
    context.reject()
    assert context.rejection == (400, "Rejected by user code")


def test_response_head_drops_hop_by_hop_headers_and_fills_the_reason() -> None:
    request = Request(
        address="a",
        id="r1",
        request_target="/hc1",
        method="GET",
        request_headers=Headers(),
        body=False,
    )
    head = response_head(
        request, status=404, headers={"Content-Length": "3", "X-Kept": "y"}, has_body=True
    )
    assert (head.request_id, head.status_code, head.status_description) == ("r1", 404, "Not Found")
    assert dict(head.response_headers) == {"X-Kept": "y"}
    assert head.body
    anonymous = Request(
        address="a", id=None, request_target=None, method=None, request_headers=Headers(), body=None
    )
    assert response_head(anonymous, status=299, reason="Custom", has_body=False).request_id == ""


@pytest.mark.parametrize(
    ("target", "entity", "expected"),
    [
        ("/hc1/items/7?x=1", "hc1", ("/items/7", "x=1")),
        ("/HC1", "hc1", ("/", "")),
        ("/hc10/x", "hc1", ("/hc10/x", "")),
        (None, "hc1", ("/", "")),
        ("/deep/path/a", "deep/path", ("/a", "")),
    ],
)
def test_request_paths_lose_the_entity_prefix(
    target: str | None, entity: str, expected: tuple[str, str]
) -> None:
    assert split_request_target(target, entity) == expected


def test_split_request_target_compares_the_entity_by_ascii_case_only() -> None:
    assert split_request_target("/HC1/a?x=1", "hc1") == ("/a", "x=1")
    assert split_request_target("/\u212aelvin/a", "kelvin") == ("/\u212aelvin/a", "")

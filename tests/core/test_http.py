"""HTTP exchanges over a rendezvous WebSocket against a scripted relay."""

from __future__ import annotations

import json

import pytest

from hyco_core.channel import ChannelState
from hyco_core.errors import LocalProtocolError, RemoteProtocolError
from hyco_core.events import (
    ChannelClosed,
    Opened,
    RequestBodyReceived,
    RequestReceived,
    UnknownContentIgnored,
)
from hyco_core.http import RESPONSE_PIECE, HttpRendezvous, Phase, body_pieces, fits_inline
from hyco_core.messages import Headers, Request, Response, decode_message

from .scripted_relay import NONCE, ScriptedRelay, connect, flush

ADDRESS = "wss://contoso.servicebus.windows.net/$hc/hc1?sb-hc-action=request&sb-hc-id=R1"


def request_message(request_id: str, *, body: bool) -> str:
    return json.dumps(
        {
            "request": {
                "address": ADDRESS,
                "id": request_id,
                "requestTarget": "/hc1/upload",
                "method": "PUT",
                "requestHeaders": {"Content-Type": "application/octet-stream"},
                "body": body,
            }
        }
    )


def rendezvous(request: Request | None = None) -> tuple[HttpRendezvous, ScriptedRelay]:
    channel, relay = (
        HttpRendezvous(address=ADDRESS, now=0.0, nonce=NONCE, request=request),
        ScriptedRelay(),
    )
    connect(channel, relay)
    assert [type(e) for e in channel.events()] == [Opened]
    return channel, relay


def phases(channel: HttpRendezvous) -> tuple[Phase, Phase]:
    """The request and response phases, read afresh (each call into the channel moves them)."""
    return channel.request_phase, channel.response_phase


def test_inline_size_rule() -> None:
    assert fits_inline(0)
    assert fits_inline(65536)
    assert not fits_inline(65537)
    assert not fits_inline(None)


def test_streamed_request_and_streamed_response_then_a_second_exchange() -> None:
    channel, relay = rendezvous()
    assert channel.get_timer() is not None
    channel.receive_data(relay.send(request_message("R1", body=True)), 1.0)
    (head,) = channel.events()
    assert isinstance(head, RequestReceived)
    assert head.body is None
    assert head.request.method == "PUT"
    assert phases(channel)[0] == Phase.BODY

    channel.receive_data(relay.send(b"a" * 100_000, final=False), 1.0)
    channel.receive_data(relay.send(b"b" * 10), 1.0)
    pieces = channel.events()
    assert all(isinstance(p, RequestBodyReceived) for p in pieces)
    assert b"".join(p.data for p in pieces if isinstance(p, RequestBodyReceived)) == (
        b"a" * 100_000 + b"b" * 10
    )
    assert isinstance(pieces[-1], RequestBodyReceived)
    assert pieces[-1].final
    assert phases(channel)[0] == Phase.DONE

    channel.send_response(
        Response(
            request_id="R1",
            status_code=200,
            response_headers=Headers({"Content-Type": "text/plain"}),
            body=True,
        )
    )
    assert phases(channel)[1] == Phase.BODY
    channel.send_body(b"x" * 70_000, final=False)
    channel.send_body(b"y", final=False)
    channel.send_body(b"", final=True)
    assert phases(channel)[0] == Phase.IDLE
    assert phases(channel)[1] == Phase.IDLE
    flush(channel, relay)
    head_text, body = relay.messages()
    assert isinstance(head_text, str)
    response = decode_message(head_text).message
    assert isinstance(response, Response)
    assert response.status_code == 200
    assert body == b"x" * 70_000 + b"y"

    channel.receive_data(relay.send(request_message("R2", body=False)), 2.0)
    (second,) = channel.events()
    assert isinstance(second, RequestReceived)
    assert second.body == b""
    channel.send_response(Response(request_id="R2", status_code=204))
    assert phases(channel)[1] == Phase.IDLE


def test_response_may_start_before_the_request_body_ends() -> None:
    channel, relay = rendezvous()
    channel.receive_data(relay.send(request_message("R1", body=True)), 1.0)
    channel.send_response(Response(request_id="R1", status_code=200, body=True))
    channel.send_body(b"early", final=True)
    assert phases(channel)[1] == Phase.DONE
    channel.receive_data(relay.send(b"late"), 1.0)
    assert phases(channel)[0] == Phase.IDLE


def test_rendezvous_opened_to_answer_an_inline_request() -> None:
    inline = Request(
        address=ADDRESS,
        id="R9",
        request_target="/hc1",
        method="GET",
        request_headers=Headers(),
        body=False,
    )
    channel, relay = rendezvous(inline)
    channel.send_response(Response(request_id="R9", status_code=200, body=True))
    channel.send_body(b"z" * 200_000, final=True)
    flush(channel, relay)
    head, body = relay.messages()
    assert isinstance(head, str)
    assert json.loads(head)["response"]["requestId"] == "R9"
    assert body == b"z" * 200_000


def test_misuse_is_reported_at_once() -> None:
    channel, relay = rendezvous()
    with pytest.raises(LocalProtocolError, match="no request"):
        channel.send_response(Response(request_id="R1", status_code=200))
    with pytest.raises(LocalProtocolError, match="before the body"):
        channel.send_body(b"x", final=True)
    channel.receive_data(relay.send(request_message("R1", body=False)), 1.0)
    with pytest.raises(LocalProtocolError, match="R2"):
        channel.send_response(Response(request_id="R2", status_code=200))


def test_request_without_id_accepts_any_response_id() -> None:
    channel, relay = rendezvous()
    channel.receive_data(relay.send(json.dumps({"request": {"address": ADDRESS}})), 1.0)
    (event,) = channel.events()
    assert isinstance(event, RequestReceived)
    channel.send_response(Response(request_id="anything", status_code=200))


def test_overlapping_request_is_a_protocol_error() -> None:
    channel, relay = rendezvous()
    channel.receive_data(relay.send(request_message("R1", body=False)), 1.0)
    channel.receive_data(relay.send(request_message("R2", body=False)), 1.0)
    events = channel.events()
    assert isinstance(events[-1], ChannelClosed)
    assert isinstance(events[-1].error, RemoteProtocolError)


def test_other_content_is_ignored() -> None:
    channel, relay = rendezvous()
    channel.receive_data(relay.send('{"accept": {"address": "a", "id": "b"}}'), 1.0)
    channel.receive_data(relay.send('{"future": {}}'), 1.0)
    channel.receive_data(relay.send(b"str", final=False) + relay.send(b"ay"), 1.0)
    kinds = [e.kind for e in channel.events() if isinstance(e, UnknownContentIgnored)]
    assert kinds == ["accept", "future", "binary"]


def test_oversized_text_is_refused() -> None:
    channel = HttpRendezvous(address=ADDRESS, now=0.0, nonce=NONCE, max_message_size=64)
    relay = ScriptedRelay()
    connect(channel, relay)
    channel.receive_data(relay.send("x" * 40, final=False), 1.0)
    channel.receive_data(relay.send("x" * 40), 1.0)
    events = channel.events()
    assert isinstance(events[-1], ChannelClosed)
    assert events[-1].code == 1009


def test_fragmented_request_head_is_joined() -> None:
    channel, relay = rendezvous()
    text = request_message("R1", body=False)
    channel.receive_data(relay.send(text[:7], final=False), 1.0)
    assert channel.events() == []
    channel.receive_data(relay.send(text[7:]), 1.0)
    (event,) = channel.events()
    assert isinstance(event, RequestReceived)


def test_a_closing_listener_retires_a_rendezvous_only_between_exchanges() -> None:
    channel, relay = rendezvous()
    channel.receive_data(relay.send(request_message("R1", body=False)), 1.0)
    channel.events()
    assert not channel.retire_if_idle(now=1.0)  # the exchange is under way
    channel.send_response(Response(request_id="R1", status_code=204))
    assert channel.retire_if_idle(now=2.0)
    assert channel.state is ChannelState.CLOSING
    assert not channel.retire_if_idle(now=3.0)  # closing already


def test_a_whole_body_goes_in_pieces_of_at_most_64_kib_the_last_marked() -> None:
    body = bytes(range(256)) * 600  # 153,600 bytes
    pieces = list(body_pieces(body))
    assert [len(piece) for piece, _ in pieces] == [RESPONSE_PIECE, RESPONSE_PIECE, 22_528]
    assert [final for _, final in pieces] == [False, False, True]
    assert b"".join(piece for piece, _ in pieces) == body
    assert list(body_pieces(b"x" * RESPONSE_PIECE)) == [(b"x" * RESPONSE_PIECE, True)]
    assert list(body_pieces(b"")) == []

"""The decisions a transport does not make: the listener supervisor's, over a listener's whole
life, and a sender's (its channel, the close it reports), without sockets or clocks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco_core import (
    Accept,
    AcceptRequested,
    AnswerRequest,
    AuthorizationError,
    Backoff,
    ChannelClosed,
    ConnectionClosed,
    ConnectionLostError,
    EndpointNotFoundError,
    HandshakeRefused,
    Headers,
    HycoError,
    InvalidUrlError,
    KeepAlive,
    ListenerObserver,
    ListenerStatus,
    ListenerSupervisor,
    ListenerUnavailableError,
    MessageAssembly,
    MessageReceived,
    OfferSender,
    Opened,
    RefreshToken,
    RejectChannel,
    RejectDelivered,
    RelayedWebSocket,
    RendezvousRequested,
    Request,
    RequestReceived,
    ServeRendezvous,
    TokenRenewalDue,
    UnknownContentIgnored,
    connection_closed,
    handshake_outcome,
    parse_relay_url,
    sender_channel,
    tracking_id_from,
)

TRACKING_ID = "00112233-4455-6677-8899-aabbccddeeff"
ACCEPT = Accept(
    address="wss://ns/$hc/hc1?sb-hc-action=accept&sb-hc-id=a", id="a", connect_headers=Headers()
)
REQUEST = Request(
    address="wss://ns/$hc/hc1?sb-hc-action=request&sb-hc-id=r",
    id="r",
    request_target="/hc1/x",
    method="GET",
    request_headers=Headers(),
    body=True,
)


def supervisor(*, serves_http: bool = True, backoff: Backoff | None = None) -> ListenerSupervisor:
    return ListenerSupervisor(
        namespace="ns.servicebus.windows.net",
        path="hc1",
        secure=True,
        tracking_id=TRACKING_ID,
        serves_http=serves_http,
        keepalive=KeepAlive(ping_interval=7.0, pong_timeout=3.0),
        backoff=backoff or Backoff((0.0, 1.0, 2.0)),
    )


def online(listener: ListenerSupervisor) -> ListenerSupervisor:
    listener.connecting()
    assert listener.online()
    listener.status_changes()
    return listener


def test_tracking_ids_take_the_guid_form() -> None:
    assert tracking_id_from(bytes(range(16))) == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert re.fullmatch(
        r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", tracking_id_from(b"\xff" * 16)
    )
    with pytest.raises(ValueError, match="16 random bytes"):
        tracking_id_from(b"short")


def test_the_control_channel_carries_the_tracking_id_token_and_keepalive() -> None:
    listener = supervisor()
    assert repr(listener) == "<ListenerSupervisor idle>"
    url = parse_relay_url(listener.control_url)
    assert (url.action, url.tracking_id, url.token) == ("listen", TRACKING_ID, None)
    channel = listener.control_channel("SharedAccessSignature sr=x", 99.0, now=1.0, nonce=bytes(16))
    handshake = channel.data_to_send()
    assert b"ServiceBusAuthorization: SharedAccessSignature sr=x" in handshake
    assert TRACKING_ID.encode() in handshake
    assert listener.control_config.keepalive == KeepAlive(ping_interval=7.0, pong_timeout=3.0)
    assert listener.rendezvous_config.keepalive == KeepAlive(ping_interval=7.0, pong_timeout=3.0)
    assert listener.rendezvous_config.handshake_timeout == 20.0


def test_a_token_providers_failure_is_an_authorization_error_that_names_no_secret() -> None:
    listener = supervisor()
    failure = listener.token_failure(RuntimeError("key=c2VjcmV0 is wrong"))
    assert isinstance(failure, AuthorizationError)
    assert "RuntimeError" in str(failure)
    assert "c2VjcmV0" not in str(failure)


def test_the_first_open_fails_fast() -> None:
    listener = supervisor()
    listener.connecting()
    refused = AuthorizationError("bad key", status_code=401)
    assert listener.lost(refused, random_fraction=0.5) is None
    assert listener.status is ListenerStatus.CLOSED
    assert listener.last_error is refused
    assert [change.status for change in listener.status_changes()] == [
        ListenerStatus.CONNECTING,
        ListenerStatus.CLOSED,
    ]


def test_once_online_losses_are_retried_on_the_schedule_and_a_silent_end_is_a_loss() -> None:
    listener = online(supervisor())
    assert listener.lost(None, random_fraction=0.5) == 0.0
    assert isinstance(listener.last_error, ConnectionLostError)
    listener.connecting()
    assert listener.lost(ConnectionLostError("cut"), random_fraction=0.5) == 1.0
    listener.connecting()
    assert (
        listener.lost(ListenerUnavailableError("no listener", status_code=404), random_fraction=0.5)
        == 2.0
    )
    listener.connecting()
    assert listener.online()
    assert listener.lost(None, random_fraction=0.5) == 0.0  # online again: the schedule restarts


def test_a_deleted_hybrid_connection_ends_the_listener() -> None:
    listener = online(supervisor())
    gone = EndpointNotFoundError("Endpoint does not exist", status_code=404)
    assert listener.lost(gone, random_fraction=0.5) is None
    assert listener.status is ListenerStatus.CLOSED
    assert listener.last_error is gone


def test_a_listener_closed_while_connecting_does_not_go_online() -> None:
    listener = supervisor()
    listener.connecting()
    assert listener.close()
    assert not listener.close()
    assert not listener.online()
    assert listener.lost(None, random_fraction=0.5) is None
    assert listener.status is ListenerStatus.CLOSED
    assert listener.last_error is None


def test_work_is_dispatched_and_declined_while_closing() -> None:
    listener = online(supervisor())
    assert listener.dispatch(AcceptRequested(accept=ACCEPT), now=0.0) == OfferSender(
        ACCEPT, None, 0.0
    )
    assert listener.dispatch(
        RequestReceived(request=REQUEST, body=b"hi"), now=0.0
    ) == AnswerRequest(REQUEST, b"hi", None)
    assert listener.dispatch(RendezvousRequested(request=REQUEST), now=0.0) == ServeRendezvous(
        REQUEST
    )
    assert listener.dispatch(TokenRenewalDue(expires_at=100.0), now=0.0) == RefreshToken()
    assert listener.dispatch(UnknownContentIgnored(kind="x"), now=0.0) is None
    listener.close()
    assert listener.dispatch(AcceptRequested(accept=ACCEPT), now=0.0) == OfferSender(
        ACCEPT, (503, "The listener is closing"), 0.0
    )
    late = listener.dispatch(RequestReceived(request=REQUEST, body=None), now=0.0)
    assert late == AnswerRequest(REQUEST, b"", ListenerSupervisor.CLOSING)
    assert listener.default_answer() is ListenerSupervisor.CLOSING


def test_a_listener_without_a_request_handler_answers_501() -> None:
    listener = online(supervisor(serves_http=False))
    work = listener.dispatch(RequestReceived(request=REQUEST, body=b""), now=0.0)
    assert isinstance(work, AnswerRequest)
    assert work.default is ListenerSupervisor.NOT_SERVED
    assert work.default.status == 501


def test_the_control_channel_closes_once_its_requests_are_answered() -> None:
    listener = online(supervisor())
    listener.dispatch(RequestReceived(request=REQUEST, body=b""), now=0.0)
    listener.dispatch(RequestReceived(request=REQUEST, body=b""), now=0.0)
    assert not listener.control_may_close
    listener.close()
    assert not listener.control_may_close
    assert not listener.answered()
    assert listener.answered()
    assert listener.control_may_close


def test_inline_answers_and_deadlines() -> None:
    assert ListenerSupervisor.answers_inline(b"x" * 65536)
    assert not ListenerSupervisor.answers_inline(b"x" * 65537)
    assert not ListenerSupervisor.answers_inline(None)
    assert ListenerSupervisor.request_deadline(10.0) == 70.0


# -- any order of what can happen --------------------------------------------------------------


CONNECTING, ONLINE = ListenerStatus.CONNECTING, ListenerStatus.ONLINE


@dataclass
class Model:
    """What must hold whatever the order: the requests still unanswered, and whether closed."""

    unanswered: int = 0
    closed: bool = False
    statuses: list[ListenerStatus] = field(default_factory=list)


STEPS = st.lists(
    st.sampled_from(
        ["connect", "online", "lost", "gone", "close", "accept", "request", "answer", "renew"]
    ),
    max_size=40,
)


@given(STEPS, st.floats(0.0, 1.0))
def test_no_order_of_events_breaks_the_supervisor(steps: list[str], fraction: float) -> None:
    listener = supervisor(backoff=Backoff((0.0, 1.0), jitter=0.5))
    model = Model()
    for step in steps:
        status = listener.status
        if step == "connect" and status in (ListenerStatus.IDLE, ListenerStatus.OFFLINE):
            listener.connecting()
        elif step == "online" and status is ListenerStatus.CONNECTING:
            assert listener.online() is not model.closed
        elif step in ("lost", "gone") and status in (
            ListenerStatus.CONNECTING,
            ListenerStatus.ONLINE,
        ):
            error: HycoError | None = (
                EndpointNotFoundError("gone", status_code=404) if step == "gone" else None
            )
            delay = listener.lost(error, random_fraction=fraction)
            if delay is not None:
                assert 0.0 <= delay <= 1.5
                assert listener.status is ListenerStatus.OFFLINE
            else:
                assert listener.status is ListenerStatus.CLOSED
        elif step == "close":
            assert listener.close() is not model.closed
            model.closed = True
        elif step == "accept":
            work = listener.dispatch(AcceptRequested(accept=ACCEPT), now=0.0)
            assert isinstance(work, OfferSender)
            assert (work.refusal is not None) is model.closed
        elif step == "request":
            work = listener.dispatch(RequestReceived(request=REQUEST, body=b""), now=0.0)
            assert isinstance(work, AnswerRequest)
            assert (work.default is ListenerSupervisor.CLOSING) is model.closed
            model.unanswered += 1
        elif step == "answer" and model.unanswered:
            model.unanswered -= 1
            assert listener.answered() is (model.closed and not model.unanswered)
        elif step == "renew":
            assert listener.dispatch(TokenRenewalDue(expires_at=100.0), now=0.0) == RefreshToken()
        model.statuses += [change.status for change in listener.status_changes()]
        assert listener.control_may_close is (model.closed and not model.unanswered)
        assert listener.closing is model.closed
        if model.closed:
            assert listener.status is ListenerStatus.CLOSED
    # Every reported status is the one the listener had then, and CLOSED is reported once.
    assert model.statuses.count(ListenerStatus.CLOSED) <= 1
    if model.statuses:
        assert model.statuses[-1] is listener.status


# -- what a sender's side decides --------------------------------------------------------------


def test_a_senders_channel_carries_its_token_in_a_header_or_the_address() -> None:
    url, channel = sender_channel(
        "ns.servicebus.windows.net",
        "hc1",
        token="SharedAccessSignature sr=x",
        now=0.0,
        nonce=bytes(16),
        tracking_id="t-1",
        suffix="/a",
        query="b=1",
        headers=[("X-Tag", "7")],
        subprotocols=["chat"],
    )
    assert url.startswith("wss://ns.servicebus.windows.net/$hc/hc1/a?b=1&sb-hc-action=connect")
    assert "sb-hc-id=t-1" in url
    assert "sb-hc-token" not in url
    handshake = channel.data_to_send()
    assert b"ServiceBusAuthorization: SharedAccessSignature sr=x\r\n" in handshake
    assert b"X-Tag: 7\r\n" in handshake
    assert b"Sec-WebSocket-Protocol: chat\r\n" in handshake
    in_query, plain = sender_channel(
        "ns", "hc1", token="tok", now=0.0, nonce=bytes(16), token_in_query=True, secure=False
    )
    assert in_query.startswith("ws://ns/$hc/hc1?sb-hc-action=connect")
    assert "sb-hc-token=tok" in in_query
    assert b"ServiceBusAuthorization" not in plain.data_to_send()


def test_the_close_a_websockets_user_is_told_of() -> None:
    dropped = connection_closed(None)
    assert (dropped.code, dropped.reason, dropped.__cause__) == (1006, "", None)
    here = connection_closed(None, closed_here=(4000, "bye"))
    assert (here.code, here.reason) == (4000, "bye")
    failure = ConnectionLostError("cut")
    peer = connection_closed(ChannelClosed(code=1011, reason="oops", error=failure))
    assert (peer.code, peer.reason, peer.__cause__) == (1011, "oops", failure)
    answered = connection_closed(ChannelClosed(code=1000), closed_here=(1000, ""))
    assert (answered.code, answered.__cause__) == (1000, None)
    assert MessageAssembly.TOO_BIG == (1009, "message too big")


def test_a_senders_decision_travels_on_its_rendezvous() -> None:
    listener = online(supervisor())
    offered = OfferSender(ACCEPT, None, 0.0)
    context = offered.context()
    assert context.rejection is None
    accepted = listener.rendezvous_channel(context, now=0.0, nonce=bytes(16))
    assert isinstance(accepted, RelayedWebSocket)
    assert b"sb-hc-action=accept" in accepted.data_to_send()
    refused = OfferSender(ACCEPT, (503, "The listener is closing"), 0.0).context()
    assert refused.rejection == (503, "The listener is closing")
    rejection = listener.rendezvous_channel(refused, now=0.0, nonce=bytes(16))
    assert isinstance(rejection, RejectChannel)
    assert b"sb-hc-statusCode=503" in rejection.data_to_send()
    with pytest.raises(InvalidUrlError):
        OfferSender(replace(ACCEPT, address="not a relay address"), None, 0.0).context()


class Recorder(ListenerObserver):
    """An observer writing down what it is told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, object]] = []

    def sender_accepted(self, waited: float) -> None:
        self.told.append(("accepted", waited))

    def sender_rejected(self, status: int) -> None:
        self.told.append(("rejected", status))

    def sender_failed(self, error: HycoError) -> None:
        self.told.append(("failed", error))

    def reconnecting(self, error: HycoError) -> None:
        self.told.append(("reconnecting", type(error).__name__))


def test_the_observer_hears_each_senders_outcome_where_the_supervisor_learns_it() -> None:
    recorder = Recorder()
    listener = ListenerSupervisor(
        namespace="ns",
        path="hc1",
        secure=True,
        tracking_id=TRACKING_ID,
        serves_http=True,
        observer=recorder,
    )
    online(listener)
    work = listener.dispatch(AcceptRequested(accept=ACCEPT), now=10.0)
    assert isinstance(work, OfferSender)
    accepted = work.context()
    listener.rendezvous_opened(work, accepted, now=10.25)
    rejected = work.context()
    rejected.reject(404, "no such target")
    listener.rendezvous_opened(work, rejected, now=11.0)
    unusable = InvalidUrlError("the relay's address is unusable")
    listener.rendezvous_failed(unusable)
    assert recorder.told == [("accepted", 0.25), ("rejected", 404), ("failed", unusable)]


def test_the_observer_hears_each_reconnection_with_its_cause_but_not_the_last_loss() -> None:
    recorder = Recorder()
    listener = ListenerSupervisor(
        namespace="ns",
        path="hc1",
        secure=True,
        tracking_id=TRACKING_ID,
        serves_http=True,
        backoff=Backoff((0.0,)),
        observer=recorder,
    )
    online(listener)
    listener.lost(None, random_fraction=0.5)
    listener.connecting()
    listener.lost(AuthorizationError("rotated", status_code=401), random_fraction=0.5)
    listener.connecting()
    listener.lost(EndpointNotFoundError("gone", status_code=404), random_fraction=0.5)
    assert recorder.told == [
        ("reconnecting", "ConnectionLostError"),
        ("reconnecting", "AuthorizationError"),
    ]


def test_the_default_observer_does_nothing() -> None:
    quiet = ListenerObserver()
    failure = ConnectionLostError("cut")
    quiet.sender_accepted(0.1)
    quiet.sender_rejected(404)
    quiet.sender_failed(failure)
    quiet.request_answered(200, 0.1)
    quiet.received("websocket", 3)
    quiet.sent("http", 3)
    quiet.reconnecting(failure)
    assert isinstance(supervisor().observer, ListenerObserver)


def test_a_close_ends_a_stream_normally_only_at_1000_or_1001_without_a_failure() -> None:
    assert ConnectionClosed(1000).ends_normally
    assert ConnectionClosed(1001, "going away").ends_normally
    assert not ConnectionClosed(1011).ends_normally
    assert not connection_closed(
        ChannelClosed(code=1001, error=ConnectionLostError("cut"))
    ).ends_normally


def test_the_handshake_outcome_is_read_from_the_events() -> None:
    opened = Opened(subprotocol="chat")
    later = MessageReceived(data="hi", final=True)
    assert handshake_outcome([]) is None
    assert handshake_outcome([later]) is None
    assert handshake_outcome([opened, later]) == (opened, [later])
    assert handshake_outcome([RejectDelivered()]) == (None, [])
    refused = AuthorizationError("no", status_code=401)
    with pytest.raises(AuthorizationError):
        handshake_outcome(
            [
                HandshakeRefused(
                    status_code=401, reason="no", headers=Headers(), body=b"", error=refused
                )
            ]
        )
    with pytest.raises(ConnectionLostError, match="during the handshake"):
        handshake_outcome([ChannelClosed(code=1006)])
    with pytest.raises(AuthorizationError):
        handshake_outcome([ChannelClosed(code=1008, error=refused)])

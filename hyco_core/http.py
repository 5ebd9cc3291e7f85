"""HTTP over a rendezvous WebSocket: large or streamed requests and responses.

A listener opens an :class:`HttpRendezvous` at a request's ``address`` when the request did not
fit on the control channel (:class:`~hyco_core.events.RendezvousRequested`) or when its answer
does not (a body over 64 KiB, or one of unknown length). On the rendezvous each exchange is a
``request`` text message plus its body as one binary message, answered by a ``response`` text
message plus its body as one binary message of any number of frames. The relay sends the same
sender's later requests over the same rendezvous, so exchanges repeat until it closes.

Request and response each move through their own phases; an exchange ends, and the next may
begin, when both are done:

    request:  IDLE --request, no body--> DONE ; IDLE --request + body--> BODY --final piece--> DONE
    response: IDLE --response, no body--> DONE ; IDLE --response + body--> BODY --final--> DONE
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum

from .channel import (
    RENDEZVOUS_CONFIG,
    ChannelConfig,
    ChannelState,
    TextCollector,
    WebSocketChannel,
)
from .control import message_kind
from .errors import LocalProtocolError, RemoteProtocolError
from .events import RequestBodyReceived, RequestReceived, UnknownContentIgnored
from .messages import (
    DEFAULT_MAX_MESSAGE_SIZE,
    INLINE_BODY_LIMIT,
    Request,
    Response,
    decode_message,
    encode_message,
)

__all__ = ["RESPONSE_PIECE", "HttpRendezvous", "Phase", "body_pieces", "fits_inline"]


RESPONSE_PIECE = 64 * 1024
"""The most of a response body a listener sends in one binary message."""


def body_pieces(body: bytes) -> Iterator[tuple[bytes, bool]]:
    """A whole response body as the pieces to send, each with whether it is the last."""
    for start in range(0, len(body), RESPONSE_PIECE):
        yield body[start : start + RESPONSE_PIECE], start + RESPONSE_PIECE >= len(body)


def fits_inline(body_length: int | None) -> bool:
    """Whether a response body of this length (``None``: unknown) may go on the control channel."""
    return body_length is not None and body_length <= INLINE_BODY_LIMIT


class Phase(Enum):
    IDLE = "idle"
    BODY = "body"
    DONE = "done"


class _Step(Enum):
    HEAD_WITHOUT_BODY = "head without body"
    HEAD_WITH_BODY = "head with body"
    FINAL_PIECE = "final piece"
    EXCHANGE_DONE = "exchange done"


_PHASES: dict[tuple[Phase, _Step], Phase] = {
    (Phase.IDLE, _Step.HEAD_WITHOUT_BODY): Phase.DONE,
    (Phase.IDLE, _Step.HEAD_WITH_BODY): Phase.BODY,
    (Phase.BODY, _Step.FINAL_PIECE): Phase.DONE,
    (Phase.DONE, _Step.EXCHANGE_DONE): Phase.IDLE,
}


class HttpRendezvous(WebSocketChannel):
    """The listener's end of an HTTP rendezvous (``sb-hc-action=request``).

    Pass ``request`` when the rendezvous is opened only to answer a request that arrived inline
    on the control channel: the exchange then starts with the response.
    """

    __slots__ = ("_request", "_request_phase", "_response_phase", "_text")

    def __init__(
        self,
        *,
        address: str,
        now: float,
        nonce: bytes,
        request: Request | None = None,
        config: ChannelConfig = RENDEZVOUS_CONFIG,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        super().__init__(url=address, now=now, nonce=nonce, config=config)
        self._text = TextCollector(max_message_size)
        self._request = request
        self._request_phase = Phase.IDLE if request is None else Phase.DONE
        self._response_phase = Phase.IDLE

    @property
    def request_phase(self) -> Phase:
        return self._request_phase

    @property
    def response_phase(self) -> Phase:
        return self._response_phase

    def retire_if_idle(self, *, now: float) -> bool:
        """Close (1000) if the channel is open and no exchange is under way, as a closing
        listener does between exchanges; ``True`` when it started the close."""
        idle = self._request_phase is Phase.IDLE and self._response_phase is Phase.IDLE
        if not idle or self.state is not ChannelState.OPEN:
            return False
        self.close(1000, "listener closed", now=now)
        return True

    def send_response(self, response: Response) -> None:
        """Send the response head; with ``response.body`` set, follow with :meth:`send_body`."""
        if self._request is None or self._response_phase is not Phase.IDLE:
            raise LocalProtocolError("no request on this rendezvous is waiting for a response")
        if self._request.id is not None and response.request_id != self._request.id:
            raise LocalProtocolError(
                f"response for request {response.request_id!r} sent on the rendezvous of "
                f"request {self._request.id!r}"
            )
        self._send_message(encode_message(response), final=True)
        self._response_phase = _PHASES[
            (
                self._response_phase,
                _Step.HEAD_WITH_BODY if response.body else _Step.HEAD_WITHOUT_BODY,
            )
        ]
        self._end_exchange_if_done()

    def send_body(self, data: bytes, *, final: bool) -> None:
        """Send a piece of the response body; ``final=True`` ends it (``data`` may be empty)."""
        if self._response_phase is not Phase.BODY:
            raise LocalProtocolError("send_response with body=True must come before the body")
        self._send_message(data, final=final)
        if final:
            self._response_phase = _PHASES[(self._response_phase, _Step.FINAL_PIECE)]
            self._end_exchange_if_done()

    # -- WebSocketChannel hooks ---------------------------------------------------------------

    def _on_message(self, data: str | bytes, final: bool) -> None:
        if isinstance(data, str):
            self._on_text(data, final)
        elif self._request_phase is Phase.BODY:
            self._events.append(RequestBodyReceived(data=data, final=final))
            if final:
                self._request_phase = _PHASES[(self._request_phase, _Step.FINAL_PIECE)]
                self._end_exchange_if_done()
        elif final:
            self._events.append(UnknownContentIgnored(kind="binary"))

    # -- internals ---------------------------------------------------------------------------

    def _on_text(self, data: str, final: bool) -> None:
        text = self._text.add(data, final)
        if text is None:
            return
        request = decode_message(text, max_size=self._text.limit).message
        if not isinstance(request, Request):
            self._events.append(
                UnknownContentIgnored(kind=message_kind(request), excerpt=text[:200])
            )
            return
        if self._request_phase is not Phase.IDLE or self._response_phase is not Phase.IDLE:
            raise RemoteProtocolError("a new request arrived before the previous exchange ended")
        self._request = request
        with_body = bool(request.body)
        step = _Step.HEAD_WITH_BODY if with_body else _Step.HEAD_WITHOUT_BODY
        self._request_phase = _PHASES[(self._request_phase, step)]
        self._events.append(RequestReceived(request=request, body=None if with_body else b""))

    def _end_exchange_if_done(self) -> None:
        if self._request_phase is Phase.DONE and self._response_phase is Phase.DONE:
            self._request_phase = _PHASES[(self._request_phase, _Step.EXCHANGE_DONE)]
            self._response_phase = _PHASES[(self._response_phase, _Step.EXCHANGE_DONE)]
            self._request = None

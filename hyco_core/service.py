"""The relay's side of the protocol: WebSockets it accepted, and its view of a listener's channels.

A relay reads each incoming connection's request with :class:`~hyco_core.service.HttpServer`
and, once it has switched protocols, speaks WebSocket through :class:`ServerWebSocket` (a sender
or an accepted rendezvous), :class:`ServiceControlChannel` (a listener's control channel) or
:class:`ServiceHttpRendezvous` (an HTTP rendezvous). Like the client role, none of them does I/O.
"""

from __future__ import annotations

from ._wire import Frames, ServerHandshake, UpgradeRequest
from .channel import ChannelConfig, RelayedWebSocket, _Trigger

__all__ = ["RELAY_CONFIG", "ServerHandshake", "ServerWebSocket", "UpgradeRequest"]

RELAY_CONFIG = ChannelConfig()


class ServerWebSocket(RelayedWebSocket):
    """The relay's end of a WebSocket whose handshake it accepted; open from the start.

    With ``passes_pings`` the relay does not answer pings: they surface as
    :class:`~hyco_core.events.PingReceived` for the relay to hand to the other side, and pongs as
    :class:`~hyco_core.events.PongReceived`.
    """

    def __init__(
        self,
        *,
        now: float,
        trailing: bytes = b"",
        config: ChannelConfig = RELAY_CONFIG,
        passes_pings: bool = False,
    ) -> None:
        self._handshake = None
        self._start(now, config, deadline=None)
        self._frames = Frames(client=False, passes_pings=passes_pings)
        self._transition(_Trigger.HANDSHAKE_ACCEPTED)
        self.receive_data(trailing, now)

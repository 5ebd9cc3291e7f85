"""What a listener reports as it works, for whoever counts it: one interface for every transport.

A listener takes an optional :class:`ListenerObserver` and tells it, for its one hybrid
connection, how each sender ended (accepted, rejected with a status, or the rendezvous failed),
how each HTTP request was answered, the bytes each way and each reconnection with the error that
caused it. The outcomes of senders and reconnections are told by the
:class:`~hyco_core.listener.ListenerSupervisor` where it decides or hears them; the bytes and
the answers by the transport that moves them.

Every method does nothing here: subclass, and override what you count. They are called from the
listener's tasks or threads while it works, so they must be quick, thread-safe and must not
raise. Times are in seconds, measured on the clock the transport passes the kernel.
"""

from __future__ import annotations

from typing import Literal

from .errors import HycoError

__all__ = ["ListenerObserver", "Traffic"]

Traffic = Literal["websocket", "http"]
"""What bytes belong to: the messages of accepted WebSockets, or the bodies of HTTP exchanges."""


class ListenerObserver:
    """The observation points of one listener (see the module's notes)."""

    def sender_accepted(self, waited: float) -> None:
        """A sender's WebSocket is open: ``waited`` seconds passed from the relay's offer to the
        accepted rendezvous being open (the accept handler's time included)."""

    def sender_rejected(self, status: int) -> None:
        """A sender was refused with ``status`` (by the accept handler, or as the listener
        closed), and the relay confirmed the sender was told."""

    def sender_failed(self, error: HycoError) -> None:
        """The rendezvous of an offered sender could not be completed, so the sender got no
        answer from this listener."""

    def request_answered(self, status: int, took: float) -> None:
        """An HTTP request was answered with ``status``; ``took`` seconds passed from its
        arrival at the listener to the last of the response being written."""

    def received(self, traffic: Traffic, size: int) -> None:
        """``size`` bytes arrived from a sender: a WebSocket message or a piece of a request
        body."""

    def sent(self, traffic: Traffic, size: int) -> None:
        """``size`` bytes went to a sender: a WebSocket message or a piece of a response body."""

    def reconnecting(self, error: HycoError) -> None:
        """The listener went offline by ``error`` and will connect again."""

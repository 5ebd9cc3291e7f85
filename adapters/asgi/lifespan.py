"""The ASGI lifespan protocol: the app's startup before the listener opens, its shutdown after."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc

from hyco_core import HycoError, LocalProtocolError

from .interface import ASGIApp, LifespanMode, Message, asgi_version

__all__ = ["Lifespan"]

logger = logging.getLogger("hyco.adapters.asgi")


class Lifespan:
    """The ASGI lifespan protocol: startup before the listener opens, shutdown after it closed."""

    def __init__(self, app: ASGIApp, mode: LifespanMode, timeout: float) -> None:
        self._app = app
        self._mode = mode
        self._timeout = timeout
        self.state: dict[str, Any] = {}
        self.supported = False
        self._received = 0
        self._answered = False
        self._started = anyio.Event()
        self._startup_failure: str | None = None
        self._app_error: Exception | None = None
        self._shutdown_requested = anyio.Event()
        self._shut_down = anyio.Event()
        self._shutdown_failure: str | None = None

    async def startup(self, tasks: anyio.abc.TaskGroup) -> None:
        if self._mode == "off":
            return
        tasks.start_soon(self._run)
        await self._started.wait()
        if self._startup_failure is not None:
            raise HycoError(
                f"the application's lifespan startup failed: {self._startup_failure}"
            ) from self._app_error

    async def shutdown(self) -> None:
        if not self.supported:
            return
        self._shutdown_requested.set()
        with anyio.move_on_after(self._timeout):
            await self._shut_down.wait()
        if not self._shut_down.is_set():
            logger.warning("the application's lifespan shutdown took over %g s", self._timeout)
        elif self._shutdown_failure is not None:
            logger.error("the application's lifespan shutdown failed: %s", self._shutdown_failure)

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": asgi_version(), "state": self.state}
        try:
            await self._app(scope, self._receive, self._send)
        except Exception as error:
            if self._startup_failure is not None:
                logger.debug("the application raised after its startup failed", exc_info=True)
            elif self._started.is_set():
                logger.exception("the application's lifespan failed")
            elif self._mode == "auto" and not self._answered:
                logger.info("the application does not support the lifespan protocol (%r)", error)
            else:
                self._app_error = error
                self._startup_failure = f"it raised {error!r}"
        else:
            if not self._started.is_set() and self._mode == "on":
                self._startup_failure = "it returned without completing the startup"
        finally:
            self._started.set()
            self._shut_down.set()

    async def _receive(self) -> Message:
        self._received += 1
        if self._received == 1:
            return {"type": "lifespan.startup"}
        if self._received > 2:
            raise LocalProtocolError("lifespan.shutdown was delivered already")
        await self._shutdown_requested.wait()
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: Message) -> None:
        self._answered = True
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.supported = True
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._startup_failure = message.get("message") or "no reason given"
            self._started.set()
        elif kind == "lifespan.shutdown.complete":
            self._shut_down.set()
        elif kind == "lifespan.shutdown.failed":
            self._shutdown_failure = message.get("message") or "no reason given"
            self._shut_down.set()
        else:
            raise LocalProtocolError(f"{kind!r} is not a lifespan message")

"""Drivers for hyco's own transports: anyio (asyncio and trio), sync and gevent.

They are also worked examples of :class:`~hyco_conformance.driver.Driver`: the behaviour the
suite expects of a listener (echo, the close command, decisions, HTTP answers) is spelled out
once for blocking transports and once for async ones.
"""

from __future__ import annotations

import importlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from types import ModuleType
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from hyco_core import (
    ConnectionClosed,
    KeepAlive,
    ListenerStatusChanged,
    RelayError,
    parse_connection_string,
)
from hyco_transports.auth import RelayEndpoint, SasKeyTokenProvider

from .driver import (
    AcceptInfo,
    Decision,
    Driver,
    HttpAnswer,
    HttpCall,
    ListenerHandle,
    ListenerSpec,
    Refused,
    SenderClosed,
    SenderHandle,
)

__all__ = ["BUILTIN_DRIVERS", "AnyioDriver", "BlockingDriver", "GeventDriver", "driver_for"]


def _endpoint(connection_string: str, spec: ListenerSpec) -> RelayEndpoint:
    endpoint = RelayEndpoint.from_connection_string(connection_string)
    if spec.token_lifetime is None:
        return endpoint
    parsed = parse_connection_string(connection_string)
    assert parsed.shared_access_key_name is not None
    assert parsed.shared_access_key is not None
    provider = SasKeyTokenProvider(
        parsed.shared_access_key_name, parsed.shared_access_key, lifetime=spec.token_lifetime
    )
    return replace(endpoint, token_provider=provider)


def _keepalive(spec: ListenerSpec) -> KeepAlive | None:
    if spec.ping_interval is None and spec.pong_timeout is None:
        return None
    return KeepAlive(
        ping_interval=spec.ping_interval or 30.0, pong_timeout=spec.pong_timeout or 30.0
    )


def _close_command(message: str | bytes) -> tuple[int, str] | None:
    if isinstance(message, str) and message.startswith("close "):
        _, code, *reason = message.split(" ", 2)
        return int(code), reason[0] if reason else ""
    return None


def _refused(error: RelayError) -> Refused:
    return Refused(error.status_code or 0, error.reason)


class _Record(ListenerHandle):
    """What every built-in listener handle records."""

    def __init__(self) -> None:
        self._statuses: list[str] = []
        self._accepted: list[AcceptInfo] = []
        self._closes: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def on_status(self, event: ListenerStatusChanged) -> None:
        with self._lock:
            self._statuses.append(event.status.value)

    def statuses(self) -> list[str]:
        with self._lock:
            return list(self._statuses)

    def accepted(self) -> list[AcceptInfo]:
        with self._lock:
            return list(self._accepted)

    def closes(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._closes)

    def decide(self, spec: ListenerSpec, context: Any) -> None:
        """Apply ``spec.decide`` to an ``AcceptContext`` of any hyco transport."""
        info = AcceptInfo(
            headers=dict(context.headers),
            suffix=context.suffix,
            query=context.query,
            subprotocols=tuple(context.subprotocols),
            remote_address=context.remote_endpoint.address if context.remote_endpoint else None,
        )
        with self._lock:
            self._accepted.append(info)
        decision = spec.decide(info) if spec.decide else Decision.accept()
        if decision.fail:
            raise RuntimeError("the accept handler failed, as the scenario asked")
        if decision.reject_status is not None:
            context.reject(decision.reject_status, decision.reject_description)
        else:
            context.accept(decision.subprotocol)

    def record_close(self, code: int | None, reason: str | None) -> None:
        with self._lock:
            self._closes.append((code or 1006, reason or ""))


def _call(request: Any, body: bytes) -> HttpCall:
    return HttpCall(
        method=request.method,
        path=request.path,
        query=request.query,
        headers=dict(request.headers),
        body=body,
    )


# -- blocking transports (sync, gevent) ------------------------------------------------------


class _BlockingListener(_Record):
    def __init__(self, module: ModuleType, connection_string: str, spec: ListenerSpec) -> None:
        super().__init__()
        self._module = module

        def accept_handler(context: Any) -> None:
            self.decide(spec, context)

        def connection_handler(websocket: Any) -> None:
            try:
                for message in websocket:
                    command = _close_command(message)
                    if command is not None:
                        websocket.close(*command)
                        break
                    websocket.send(message)
            finally:
                self.record_close(websocket.close_code, websocket.close_reason)

        def request_handler(request: Any) -> Any:
            answer = spec.answer(_call(request, request.body())) if spec.answer else None
            assert answer is not None
            return _blocking_response(module, answer)

        self._listener = module.Listener(
            _endpoint(connection_string, spec),
            accept_handler=accept_handler,
            connection_handler=connection_handler,
            request_handler=request_handler if spec.answer else None,
            on_status=self.on_status,
            tracking_id=spec.tracking_id,
            keepalive=_keepalive(spec),
        )
        try:
            self._listener.__enter__()
        except RelayError as error:
            raise _refused(error) from error

    def close(self) -> None:
        self._listener.__exit__(None, None, None)


def _blocking_response(module: ModuleType, answer: HttpAnswer) -> Any:
    if answer.fail:
        raise RuntimeError("the request handler failed, as the scenario asked")
    body: Any = answer.body
    if answer.streamed:
        piece = 50_000
        body = iter([answer.body[i : i + piece] for i in range(0, len(answer.body), piece)])
    return module.HttpResponse(answer.status, dict(answer.headers), body=body)


class _BlockingSender(SenderHandle):
    def __init__(self, context: AbstractContextManager[Any]) -> None:
        self._context = context
        self._websocket = context.__enter__()
        self.subprotocol = self._websocket.subprotocol

    def send(self, message: str | bytes) -> None:
        self._websocket.send(message)

    def recv(self, timeout: float) -> str | bytes:
        try:
            message: str | bytes = self._websocket.recv(timeout=timeout)
        except ConnectionClosed as closed:
            raise SenderClosed(closed.code, closed.reason) from closed
        return message

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._websocket.close(code, reason)
        self._context.__exit__(None, None, None)


class BlockingDriver(Driver):
    """A driver for a blocking hyco transport module (``hyco_transports.sync`` or ``.gevent``)."""

    def __init__(self, module: ModuleType, name: str) -> None:
        self._module = module
        self.name = name

    def open_listener(self, connection_string: str, spec: ListenerSpec) -> ListenerHandle:
        return _BlockingListener(self._module, connection_string, spec)

    def connect(
        self,
        connection_string: str,
        *,
        subprotocols: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        suffix: str = "",
        query: str = "",
        token_in_query: bool = False,
    ) -> SenderHandle:
        context = self._module.connect(
            connection_string,
            subprotocols=list(subprotocols),
            headers=dict(headers or {}),
            suffix=suffix,
            query=query,
            token_in_query=token_in_query,
        )
        try:
            return _BlockingSender(context)
        except RelayError as error:
            raise _refused(error) from error


# -- anyio (asyncio, trio) -------------------------------------------------------------------


class _AnyioListener(_Record):
    def __init__(self, portal: BlockingPortal, connection_string: str, spec: ListenerSpec) -> None:
        super().__init__()
        from hyco_transports import anyio as transport

        async def accept_handler(context: Any) -> None:
            self.decide(spec, context)

        async def connection_handler(websocket: Any) -> None:
            try:
                async for message in websocket:
                    command = _close_command(message)
                    if command is not None:
                        await websocket.close(*command)
                        break
                    await websocket.send(message)
            finally:
                self.record_close(websocket.close_code, websocket.close_reason)

        async def request_handler(request: Any) -> Any:
            assert spec.answer is not None
            answer = spec.answer(_call(request, await request.body()))
            if answer.fail:
                raise RuntimeError("the request handler failed, as the scenario asked")
            body: Any = answer.body
            if answer.streamed:
                body = _pieces(answer.body)
            return transport.HttpResponse(answer.status, dict(answer.headers), body=body)

        listener = transport.Listener(
            _endpoint(connection_string, spec),
            accept_handler=accept_handler,
            connection_handler=connection_handler,
            request_handler=request_handler if spec.answer else None,
            on_status=self.on_status,
            tracking_id=spec.tracking_id,
            keepalive=_keepalive(spec),
        )
        self._context = portal.wrap_async_context_manager(listener)
        try:
            self._context.__enter__()
        except RelayError as error:
            raise _refused(error) from error

    def close(self) -> None:
        self._context.__exit__(None, None, None)


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 50_000):
        yield body[start : start + 50_000]
        await anyio.sleep(0)


class _AnyioSender(SenderHandle):
    def __init__(self, portal: BlockingPortal, context: AbstractContextManager[Any]) -> None:
        self._portal = portal
        self._context = context
        self._websocket = context.__enter__()
        self.subprotocol = self._websocket.subprotocol

    def send(self, message: str | bytes) -> None:
        self._portal.call(self._websocket.send, message)

    def recv(self, timeout: float) -> str | bytes:
        async def receive() -> str | bytes:
            with anyio.fail_after(timeout):
                message: str | bytes = await self._websocket.recv()
                return message

        try:
            return self._portal.call(receive)
        except ConnectionClosed as closed:
            raise SenderClosed(closed.code, closed.reason) from closed

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._portal.call(self._websocket.close, code, reason)
        self._context.__exit__(None, None, None)


class AnyioDriver(Driver):
    """The anyio transport, on an event loop (``asyncio`` or ``trio``) in a background thread."""

    def __init__(self, backend: str = "asyncio") -> None:
        self.name = f"anyio-{backend}"
        self._portal_context = start_blocking_portal(backend)
        self._portal = self._portal_context.__enter__()

    def open_listener(self, connection_string: str, spec: ListenerSpec) -> ListenerHandle:
        return _AnyioListener(self._portal, connection_string, spec)

    def connect(
        self,
        connection_string: str,
        *,
        subprotocols: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        suffix: str = "",
        query: str = "",
        token_in_query: bool = False,
    ) -> SenderHandle:
        from hyco_transports import anyio as transport

        context = self._portal.wrap_async_context_manager(
            transport.connect(
                connection_string,
                subprotocols=list(subprotocols),
                headers=dict(headers or {}),
                suffix=suffix,
                query=query,
                token_in_query=token_in_query,
            )
        )
        try:
            return _AnyioSender(self._portal, context)
        except RelayError as error:
            raise _refused(error) from error

    def close(self) -> None:
        self._portal_context.__exit__(None, None, None)


class _GeventThread:
    """A thread running its own gevent hub; calls from other threads run there as greenlets.

    The suite's reference clients block their thread, which would starve a hub sharing it.
    """

    def __init__(self) -> None:
        self._calls: queue.Queue[tuple[Callable[[], Any], threading.Event, list[Any]] | None] = (
            queue.Queue()
        )
        self._thread = threading.Thread(target=self._serve, name="gevent-driver", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        gevent = importlib.import_module("gevent")
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                gevent.sleep(0.002)
                continue
            if call is None:
                return
            gevent.spawn(self._run, *call)

    @staticmethod
    def _run(function: Callable[[], Any], done: threading.Event, box: list[Any]) -> None:
        try:
            box.append((True, function()))
        except BaseException as error:
            box.append((False, error))
        finally:
            done.set()

    def call(self, function: Callable[[], Any]) -> Any:
        done, box = threading.Event(), list[Any]()
        self._calls.put((function, done, box))
        done.wait()
        succeeded, value = box[0]
        if succeeded:
            return value
        raise value

    def stop(self) -> None:
        self._calls.put(None)
        self._thread.join(timeout=5)


class _ListenerThere(ListenerHandle):
    def __init__(self, thread: _GeventThread, handle: ListenerHandle) -> None:
        self._thread, self._handle = thread, handle

    def statuses(self) -> list[str]:
        return self._handle.statuses()

    def accepted(self) -> list[AcceptInfo]:
        return self._handle.accepted()

    def closes(self) -> list[tuple[int, str]]:
        return self._handle.closes()

    def close(self) -> None:
        self._thread.call(self._handle.close)


class _SenderThere(SenderHandle):
    def __init__(self, thread: _GeventThread, handle: SenderHandle) -> None:
        self._thread, self._handle = thread, handle
        self.subprotocol = handle.subprotocol

    def send(self, message: str | bytes) -> None:
        self._thread.call(lambda: self._handle.send(message))

    def recv(self, timeout: float) -> str | bytes:
        message: str | bytes = self._thread.call(lambda: self._handle.recv(timeout))
        return message

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._thread.call(lambda: self._handle.close(code, reason))


class GeventDriver(Driver):
    """The gevent transport, on a gevent hub of its own in a background thread."""

    name = "gevent"

    def __init__(self) -> None:
        self._thread = _GeventThread()
        self._driver = BlockingDriver(importlib.import_module("hyco_transports.gevent"), "gevent")

    def open_listener(self, connection_string: str, spec: ListenerSpec) -> ListenerHandle:
        handle = self._thread.call(lambda: self._driver.open_listener(connection_string, spec))
        return _ListenerThere(self._thread, handle)

    def connect(
        self,
        connection_string: str,
        *,
        subprotocols: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        suffix: str = "",
        query: str = "",
        token_in_query: bool = False,
    ) -> SenderHandle:
        handle = self._thread.call(
            lambda: self._driver.connect(
                connection_string,
                subprotocols=subprotocols,
                headers=headers,
                suffix=suffix,
                query=query,
                token_in_query=token_in_query,
            )
        )
        return _SenderThere(self._thread, handle)

    def close(self) -> None:
        self._thread.stop()


BUILTIN_DRIVERS = {
    "anyio": lambda: AnyioDriver("asyncio"),
    "anyio-trio": lambda: AnyioDriver("trio"),
    "sync": lambda: BlockingDriver(importlib.import_module("hyco_transports.sync"), "sync"),
    "gevent": GeventDriver,
}


def driver_for(name: str) -> Driver:
    """A built-in driver by name, or ``module:attribute`` naming a Driver class or factory."""
    if name in BUILTIN_DRIVERS:
        return BUILTIN_DRIVERS[name]()
    module_name, _, attribute = name.partition(":")
    if not attribute:
        known = ", ".join(BUILTIN_DRIVERS)
        raise ValueError(f"unknown transport {name!r}: use one of {known} or module:Driver")
    factory: Callable[[], object] = getattr(importlib.import_module(module_name), attribute)
    driver = factory()
    if not isinstance(driver, Driver):
        raise TypeError(f"{name} did not make a hyco_conformance.driver.Driver")
    return driver

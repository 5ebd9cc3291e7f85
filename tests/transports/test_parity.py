"""One behaviour on every transport (anyio on asyncio and on trio, threads, gevent) where the
kernel's listener supervisor decides: what a failing token provider is, the tracking id's
form, a failing status handler, the work announced while a listener closes, and the names each
transport exports."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import httpx
import pytest

from hyco_core import AuthorizationError, HycoError, ListenerStatus, RelayServerError
from hyco_transports import anyio as anyio_transport
from hyco_transports import sync
from hyco_transports.auth import CallableTokenProvider, RelayEndpoint

from .conftest import (
    Flavour,
    GeventFlavour,
    RunningRelay,
)

T = TypeVar("T")

TRANSPORTS = ["anyio-asyncio", "anyio-trio", "sync", "gevent"]
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def flavour_of(transport: str) -> Flavour:
    return GeventFlavour() if transport == "gevent" else Flavour()


def module_of(transport: str) -> Any:
    return anyio_transport if transport.startswith("anyio") else flavour_of(transport).transport


def on_anyio(transport: str, main: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(main, backend=transport.removeprefix("anyio-"))


def open_failure(transport: str, endpoint: RelayEndpoint) -> HycoError | None:
    """The error opening a listener on ``endpoint`` raises (``None``: it opened)."""
    if transport.startswith("anyio"):

        async def main() -> HycoError | None:
            try:
                async with anyio_transport.Listener(endpoint):
                    return None
            except HycoError as error:
                return error

        return on_anyio(transport, main)
    try:
        with flavour_of(transport).Listener(endpoint):
            return None
    except HycoError as error:
        return error


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_failing_token_provider_fails_the_open_as_an_authorization_error(
    transport: str, relay: RunningRelay
) -> None:
    def broken(resource: str) -> str:
        raise RuntimeError("the vault said c2VjcmV0 is wrong")

    error = open_failure(transport, relay.endpoint(token_provider=CallableTokenProvider(broken)))
    assert isinstance(error, AuthorizationError), error
    assert "RuntimeError" in str(error)
    assert "c2VjcmV0" not in str(error)
    assert isinstance(error.__cause__, RuntimeError)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tracking_ids_are_guids_unless_given(transport: str, relay: RunningRelay) -> None:
    def tracking_ids() -> list[str]:
        if transport.startswith("anyio"):

            async def main() -> list[str]:
                ids = []
                for given in (None, "mine"):
                    async with anyio_transport.Listener(
                        relay.endpoint(), tracking_id=given
                    ) as listener:
                        ids.append(listener.tracking_id)
                return ids

            return on_anyio(transport, main)
        ids = []
        for given in (None, "mine"):
            with flavour_of(transport).Listener(relay.endpoint(), tracking_id=given) as listener:
                ids.append(listener.tracking_id)
        return ids

    made, given = tracking_ids()
    assert GUID.fullmatch(made), made
    assert given == "mine"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_failing_status_handler_is_logged_and_the_listener_serves_on(
    transport: str, relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    def on_status(change: object) -> None:
        raise RuntimeError("the program's own bug")

    def get() -> int:
        headers = {"ServiceBusAuthorization": relay.token()}
        return httpx.get(relay.http_url("/x"), headers=headers, timeout=30).status_code

    caplog.set_level(logging.ERROR)
    if transport.startswith("anyio"):

        async def main() -> tuple[ListenerStatus, int]:
            async with anyio_transport.Listener(relay.endpoint(), on_status=on_status) as listener:
                return listener.status, await anyio.to_thread.run_sync(get)

        status, answered = on_anyio(transport, main)
    else:
        flavour = flavour_of(transport)
        with flavour.Listener(relay.endpoint(), on_status=on_status) as listener:
            status, answered = listener.status, flavour.blocking(get)
    assert status is ListenerStatus.ONLINE
    assert answered == 501  # served: no request handler
    assert "the on_status handler failed" in caplog.text


async def _declined_while_closing_on_anyio(relay: RunningRelay) -> None:
    """The anyio twin of the blocking transports' scenario of the same name."""
    handling: list[str] = []
    answer = anyio.Event()

    async def handler(request: anyio_transport.HttpRequest) -> anyio_transport.HttpResponse:
        handling.append(request.path)
        await answer.wait()
        return anyio_transport.HttpResponse(200, body=request.path.encode())

    def get(path: str) -> tuple[int, str | None, bytes]:
        headers = {"ServiceBusAuthorization": relay.token()}
        response = httpx.get(relay.http_url(path), headers=headers, timeout=30)
        return response.status_code, response.headers.get("retry-after"), response.content

    slow: list[tuple[int, str | None, bytes]] = []

    async def get_slow() -> None:
        slow.append(await anyio.to_thread.run_sync(get, "/slow"))

    endpoint = relay.endpoint()
    async with anyio.create_task_group() as tasks:
        listener = anyio_transport.Listener(endpoint, request_handler=handler)
        async with listener:
            tasks.start_soon(get_slow)
            with anyio.fail_after(15):
                while handling != ["/slow"]:
                    await anyio.sleep(0.05)
            async with anyio.create_task_group() as closing:
                closing.start_soon(listener.close)
                with anyio.fail_after(15):
                    while listener.status is not ListenerStatus.CLOSED:
                        await anyio.sleep(0.01)
                # The control channel stays open until /slow is answered; the relay still
                # routes here.
                late = await anyio.to_thread.run_sync(get, "/late")
                assert late == (503, "5", b"This listener is closing.")
                with pytest.raises(RelayServerError) as refused:
                    async with anyio_transport.connect(relay.connection_string()):
                        pytest.fail("the listener is closing")
                assert refused.value.status_code == 503
                answer.set()
    assert slow == [(200, None, b"/slow")]
    assert handling == ["/slow"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_work_announced_while_closing_is_declined_with_503(
    transport: str, relay: RunningRelay
) -> None:
    if transport.startswith("anyio"):
        on_anyio(transport, lambda: _declined_while_closing_on_anyio(relay))
    else:
        from .conftest import run_scenario, work_announced_while_closing_is_declined_with_503

        run_scenario(
            flavour_of(transport), relay, work_announced_while_closing_is_declined_with_503
        )


def _shape(function: Any) -> list[tuple[str, Any, Any]]:
    """A callable's parameters: names, kinds and defaults (annotations differ by ``async``)."""
    return [
        (parameter.name, parameter.kind, parameter.default)
        for parameter in inspect.signature(function).parameters.values()
    ]


@pytest.mark.parametrize("transport", ["sync", "gevent"])
def test_the_transports_export_the_same_names_and_signatures(transport: str) -> None:
    module = module_of(transport)
    assert module.__all__ == anyio_transport.__all__ == sync.__all__
    assert _shape(module.connect) == _shape(anyio_transport.connect)
    for name in ("Listener", "HttpResponse"):
        assert _shape(getattr(module, name)) == _shape(getattr(anyio_transport, name)), name
    public = {
        name
        for name, member in inspect.getmembers(anyio_transport.Listener)
        if not name.startswith("_")
    }
    assert public <= {
        name for name, member in inspect.getmembers(module.Listener) if not name.startswith("_")
    }

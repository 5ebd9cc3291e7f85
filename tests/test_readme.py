"""The README's Python examples run as written (``cs`` being a listener's connection string,
as the README says), against a real local relay."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from anyio.from_thread import start_blocking_portal

from hyco_relay.config import default_config
from hyco_relay.server import serve_relay
from hyco_transports.httpx import RelayAuth

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), re.DOTALL)
KERNEL_EXAMPLE = next(block for block in BLOCKS if "ControlChannel(" in block)


@pytest.fixture(scope="module")
def cs() -> Iterator[str]:
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(serve_relay(default_config(port=0))) as relay,
    ):
        yield relay.connection_string()


def run_block(source: str, cs: str) -> None:
    exec(compile(source, str(README), "exec"), {"__name__": "readme", "cs": cs})  # noqa: S102


@pytest.mark.parametrize(
    "source",
    [block for block in BLOCKS if block is not KERNEL_EXAMPLE],
    ids=lambda block: block.strip().splitlines()[-1][:40],
)
def test_each_readme_example_runs(source: str, cs: str) -> None:
    run_block(source, cs)


def test_the_kernel_example_answers_a_request(cs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYCO_CONNECTION_STRING", cs)
    failures: list[BaseException] = []

    def listen() -> None:
        try:
            run_block(KERNEL_EXAMPLE, cs)
        except BaseException as error:  # reported by the test's own thread
            failures.append(error)

    listener = threading.Thread(target=listen)
    listener.start()
    auth = RelayAuth.from_connection_string(cs)
    deadline = time.monotonic() + 20
    while True:
        response = httpx.get(auth.url("/"), auth=auth, timeout=10)
        if response.status_code != 502 or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # the example's control channel is still opening
    listener.join(20)
    assert not failures, failures
    assert response.status_code == 200
    assert response.text == "hi from the kernel"

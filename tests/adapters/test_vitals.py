"""A command's vitals: ready while it has parts and every one is up, a listener's part up only
while it is online, and watchers told each change of readiness once, in order."""

from __future__ import annotations

import itertools
import threading

import pytest

from hyco_adapters.vitals import Vitals
from hyco_core import ListenerStatus, ListenerStatusChanged


def _status(status: ListenerStatus) -> ListenerStatusChanged:
    return ListenerStatusChanged(status=status)


def _ready(vitals: Vitals) -> bool:
    # Read through a call: mypy would otherwise narrow the property after the first assert.
    return vitals.ready


def test_no_parts_is_not_ready() -> None:
    assert not _ready(Vitals())


def test_a_listener_part_is_up_only_while_online() -> None:
    vitals = Vitals()
    heard: list[ListenerStatus] = []
    handler = vitals.follow("hc1", lambda event: heard.append(event.status))
    assert vitals.parts() == {"hc1": False}
    handler(_status(ListenerStatus.ONLINE))
    assert _ready(vitals)
    handler(_status(ListenerStatus.OFFLINE))
    assert not _ready(vitals)
    assert vitals.listener_statuses() == {"hc1": ListenerStatus.OFFLINE}
    handler(_status(ListenerStatus.ONLINE))
    assert _ready(vitals)
    assert heard == [ListenerStatus.ONLINE, ListenerStatus.OFFLINE, ListenerStatus.ONLINE]


def test_every_part_must_be_up() -> None:
    vitals = Vitals()
    first = vitals.follow("a")
    vitals.follow("b")
    first(_status(ListenerStatus.ONLINE))
    assert not _ready(vitals)
    vitals.remove("b")
    assert _ready(vitals)
    vitals.set("port", False)
    assert not _ready(vitals)


def test_watchers_hear_each_change_once() -> None:
    vitals = Vitals()
    changes: list[bool] = []
    vitals.watch(changes.append)
    vitals.set("relay", True)
    vitals.set("relay", True)
    vitals.set("other", False)
    vitals.set("other", True)
    vitals.remove("other")
    vitals.remove("relay")
    assert changes == [True, False, True, False]


def test_a_failing_watcher_does_not_reach_the_part(caplog: pytest.LogCaptureFixture) -> None:
    vitals = Vitals()

    def broken(ready: bool) -> None:
        raise RuntimeError("watcher bug")

    heard: list[bool] = []
    vitals.watch(broken)
    vitals.watch(heard.append)
    vitals.set("relay", True)
    assert heard == [True]
    assert "a readiness watcher failed" in caplog.text


def test_a_watcher_may_read_the_vitals_back() -> None:
    vitals = Vitals()
    seen: list[dict[str, bool]] = []
    vitals.watch(lambda ready: seen.append(vitals.parts()))
    vitals.set("relay", True)
    assert seen == [{"relay": True}]


def test_changes_from_many_threads_end_consistent() -> None:
    vitals = Vitals()
    changes: list[bool] = []
    vitals.watch(changes.append)
    handlers = [vitals.follow(f"hc{n}") for n in range(8)]

    def flap(handler: object) -> None:
        assert callable(handler)
        for _ in range(200):
            handler(_status(ListenerStatus.OFFLINE))
            handler(_status(ListenerStatus.ONLINE))

    threads = [threading.Thread(target=flap, args=(handler,)) for handler in handlers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _ready(vitals)
    assert changes[-1] is True
    assert all(a != b for a, b in itertools.pairwise(changes))
    assert "ready" in repr(vitals)


def test_stopping_loses_readiness_for_good_and_is_heard_once_first() -> None:
    vitals = Vitals()
    heard: list[str] = []
    vitals.watch(lambda ready: heard.append(f"ready={ready}"))
    vitals.on_stopping(lambda: heard.append("stopping"))
    vitals.set("relay", True)
    vitals.stopping()
    vitals.stopping()
    vitals.set("relay", True)
    assert not _ready(vitals)
    assert vitals.is_stopping
    assert heard == ["ready=True", "stopping", "ready=False"]
    assert repr(vitals) == "<Vitals stopping {'relay': True}>"


def test_beats_come_from_the_loop_at_their_interval_and_a_failing_one_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import anyio

    vitals = Vitals()
    beats: list[str] = []

    def broken() -> None:
        beats.append("broken")
        raise RuntimeError("beat bug")

    vitals.on_beat(lambda: beats.append("fast"), 0.05)
    vitals.on_beat(broken, 0.2)
    with pytest.raises(ValueError, match="above 0"):
        vitals.on_beat(broken, 0)

    async def run_briefly() -> None:
        with anyio.move_on_after(0.5):
            await vitals.keep_beating()

    anyio.run(run_briefly)
    assert 5 <= beats.count("fast") <= 12, beats
    assert 2 <= beats.count("broken") <= 4, beats
    assert "a beat failed" in caplog.text

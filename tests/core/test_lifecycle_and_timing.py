"""Reconnect policy, backoff, renewal moments and keep-alive settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco_core.errors import (
    AuthorizationError,
    ConnectionLostError,
    EndpointNotFoundError,
    ListenerUnavailableError,
    LocalProtocolError,
)
from hyco_core.events import ListenerStatus, ListenerStatusChanged
from hyco_core.lifecycle import ListenerLifecycle
from hyco_core.timing import DEFAULT_RECONNECT_SCHEDULE, Backoff, renewal_time


def test_default_schedule_matches_the_official_sdks_then_holds() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(9)]
    assert delays == [0.0, 1.0, 2.0, 5.0, 10.0, 30.0, 30.0, 30.0, 30.0]
    assert backoff.attempt == 9
    backoff.reset()
    assert backoff.next_delay() == 0.0
    assert DEFAULT_RECONNECT_SCHEDULE == (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)


def test_jitter_spreads_delays_within_bounds() -> None:
    backoff = Backoff((10.0,), jitter=0.2)
    assert backoff.next_delay(0.0) == pytest.approx(8.0)
    assert backoff.next_delay(1.0) == pytest.approx(12.0)
    assert backoff.next_delay(0.5) == pytest.approx(10.0)


@given(st.floats(0, 1), st.floats(0, 1))
def test_jittered_delay_stays_in_its_band(jitter: float, fraction: float) -> None:
    delay = Backoff((5.0,), jitter=jitter).next_delay(fraction)
    assert 5.0 * (1 - jitter) - 1e-9 <= delay <= 5.0 * (1 + jitter) + 1e-9


@pytest.mark.parametrize(
    ("schedule", "jitter"), [((), 0.0), ((-1.0,), 0.0), ((1.0,), 1.5), ((1.0,), -0.1)]
)
def test_bad_backoff_settings_are_refused(schedule: tuple[float, ...], jitter: float) -> None:
    with pytest.raises(LocalProtocolError):
        Backoff(schedule, jitter=jitter)


def test_random_fraction_out_of_range_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        Backoff().next_delay(2.0)


@pytest.mark.parametrize(
    ("now", "expires_at", "expected"),
    [
        (0.0, 3600.0, 3300.0),  # an hour-long token: five minutes ahead
        (0.0, 900.0, 600.0),  # fifteen minutes: still five minutes ahead
        (0.0, 400.0, 200.0),  # too short for the margin: halfway
        (100.0, 105.0, 102.5),  # five seconds: renewed after two and a half
        (100.0, 90.0, 100.0),  # already expired: now
    ],
)
def test_renewal_time(now: float, expires_at: float, expected: float) -> None:
    assert renewal_time(now, expires_at) == pytest.approx(expected)


@given(st.floats(0, 1e9), st.floats(0, 1e6))
def test_renewal_always_falls_between_now_and_expiry(now: float, lifetime: float) -> None:
    moment = renewal_time(now, now + lifetime)
    assert now <= moment <= now + lifetime


def statuses(lifecycle: ListenerLifecycle) -> list[ListenerStatus]:
    return [event.status for event in lifecycle.events()]


def test_first_open_fails_fast_with_the_error() -> None:
    lifecycle = ListenerLifecycle()
    lifecycle.connecting()
    error = AuthorizationError("bad token", status_code=401)
    assert lifecycle.lost(error) is None
    assert lifecycle.status is ListenerStatus.CLOSED
    events = lifecycle.events()
    assert [e.status for e in events] == [ListenerStatus.CONNECTING, ListenerStatus.CLOSED]
    assert events[-1].error is error
    assert lifecycle.last_error is error


def test_losses_after_being_online_are_retried_on_the_schedule() -> None:
    lifecycle = ListenerLifecycle()
    lifecycle.connecting()
    lifecycle.online()
    lost = ConnectionLostError("dropped", close_code=1006)
    assert lifecycle.lost(lost) == 0.0
    for expected in (1.0, 2.0, 5.0):
        lifecycle.connecting()
        assert lifecycle.lost(AuthorizationError("rotated", status_code=401)) == expected
    lifecycle.connecting()
    lifecycle.online()
    assert lifecycle.lost(lost) == 0.0  # back online resets the schedule
    events = lifecycle.events()
    offline = [e for e in events if e.status is ListenerStatus.OFFLINE]
    assert [e.retry_in for e in offline] == [0.0, 1.0, 2.0, 5.0, 0.0]
    assert repr(lifecycle) == "<ListenerLifecycle offline>"


def test_no_listener_404_is_retried_but_a_missing_entity_stops() -> None:
    lifecycle = ListenerLifecycle()
    lifecycle.connecting()
    lifecycle.online()
    assert lifecycle.lost(ListenerUnavailableError("no listener", status_code=404)) == 0.0
    lifecycle.connecting()
    gone = EndpointNotFoundError("Endpoint does not exist", status_code=404)
    assert lifecycle.lost(gone) is None
    assert lifecycle.status is ListenerStatus.CLOSED


def test_close_by_the_program_stops_everything() -> None:
    lifecycle = ListenerLifecycle(Backoff((3.0,)))
    lifecycle.connecting()
    lifecycle.online()
    lifecycle.close()
    lifecycle.close()
    assert lifecycle.lost(None) is None
    assert statuses(lifecycle) == [
        ListenerStatus.CONNECTING,
        ListenerStatus.ONLINE,
        ListenerStatus.CLOSED,
    ]


def test_illegal_moves_are_local_errors() -> None:
    lifecycle = ListenerLifecycle()
    with pytest.raises(LocalProtocolError, match="idle cannot online"):
        lifecycle.online()
    lifecycle.connecting()
    with pytest.raises(LocalProtocolError):
        lifecycle.connecting()


@given(st.lists(st.sampled_from(["connect", "online", "lost", "close"]), max_size=15))
def test_every_status_and_input_pair(moves: list[str]) -> None:
    lifecycle = ListenerLifecycle()
    for move in moves:
        before = lifecycle.status
        try:
            if move == "connect":
                lifecycle.connecting()
            elif move == "online":
                lifecycle.online()
            elif move == "lost":
                lifecycle.lost(ConnectionLostError("x"))
            else:
                lifecycle.close()
        except LocalProtocolError:
            assert lifecycle.status is before
    events = lifecycle.events()
    assert all(isinstance(e, ListenerStatusChanged) for e in events)
    if ListenerStatus.CLOSED in [e.status for e in events]:
        assert lifecycle.status is ListenerStatus.CLOSED

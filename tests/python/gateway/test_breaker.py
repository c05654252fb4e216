"""CircuitBreaker: when it opens, how it recovers, on a clock advanced by hand."""

from __future__ import annotations

from typing import Any

import pytest

from modelbench.gateway.breaker import BreakerSettings, BreakerState, CircuitBreaker


class FakeClock:
    """A clock that only moves when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_breaker(
    clock: FakeClock, **settings: Any
) -> tuple[CircuitBreaker, list[tuple[BreakerState, BreakerState]]]:
    """A breaker on ``clock`` with these settings, and the list its transitions go to."""
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        BreakerSettings(**settings),
        clock=clock,
        on_change=lambda old, new: changes.append((old, new)),
    )
    return breaker, changes


def open_breaker(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.settings.failure_threshold):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_opens_after_consecutive_failures() -> None:
    breaker, _ = make_breaker(FakeClock(), failure_threshold=3, min_requests=100)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot()["consecutive_failures"] == 3


def test_success_resets_consecutive_failures() -> None:
    breaker, _ = make_breaker(FakeClock(), failure_threshold=3, min_requests=100)
    for _ in range(5):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    snapshot = breaker.snapshot()
    assert snapshot["consecutive_failures"] == 0
    assert snapshot["window_requests"] == 15
    assert snapshot["window_failures"] == 10


def test_failure_rate_opens_only_once_min_requests_reached() -> None:
    # Failures alternate with successes, so the consecutive rule never trips.
    breaker, _ = make_breaker(FakeClock(), failure_threshold=100, failure_rate=0.5, min_requests=10)
    for _ in range(4):
        breaker.record_failure()
        breaker.record_success()
    breaker.record_failure()  # 9 requests, 5 failed: rate 0.56 but too few requests
    assert breaker.state is BreakerState.CLOSED
    breaker.record_success()  # 10 requests, 5 failed: rate 0.5, but a success never opens
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()  # 11 requests, 6 failed
    assert breaker.state is BreakerState.OPEN


def test_failure_rate_below_threshold_stays_closed() -> None:
    breaker, _ = make_breaker(FakeClock(), failure_threshold=100, failure_rate=0.5, min_requests=10)
    for _ in range(20):
        breaker.record_success()
        breaker.record_success()
        breaker.record_failure()  # a third fail
    assert breaker.state is BreakerState.CLOSED


def test_old_outcomes_leave_the_window() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(
        clock, failure_threshold=100, failure_rate=0.6, min_requests=10, window_s=30.0
    )
    for _ in range(9):
        breaker.record_failure()
        breaker.record_success()
    assert breaker.snapshot()["window_requests"] == 18
    clock.advance(31.0)
    assert breaker.snapshot()["window_requests"] == 0
    assert breaker.snapshot()["window_failures"] == 0
    # Had the old outcomes stayed, 18 failed of 27 would trip; only the new ones count.
    for _ in range(9):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_open_refuses_and_says_when_to_retry() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(clock, failure_threshold=2, cooldown_s=10.0)
    assert breaker.retry_after_s() == 0.0
    open_breaker(breaker)
    assert not breaker.allow()
    assert breaker.retry_after_s() == pytest.approx(10.0)
    clock.advance(4.0)
    assert not breaker.allow()
    assert breaker.retry_after_s() == pytest.approx(6.0)
    assert breaker.snapshot()["opened_at"] == 1000.0
    clock.advance(6.0)
    assert breaker.retry_after_s() == 0.0
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_lets_exactly_the_probes_through() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(clock, failure_threshold=1, cooldown_s=5.0, half_open_probes=2)
    open_breaker(breaker)
    clock.advance(4.9)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.1)
    assert [breaker.allow() for _ in range(4)] == [True, True, False, False]
    assert breaker.state is BreakerState.HALF_OPEN


def test_probe_success_closes_with_a_clean_slate() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(clock, failure_threshold=2, cooldown_s=5.0)
    open_breaker(breaker)
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot() == {
        "state": "closed",
        "consecutive_failures": 0,
        "window_requests": 0,
        "window_failures": 0,
        "opened_at": None,
    }
    # The count starts over: one failure does not reopen a threshold-2 breaker.
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_probe_failure_reopens_with_a_fresh_cooldown() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(clock, failure_threshold=1, cooldown_s=5.0)
    open_breaker(breaker)
    clock.advance(7.0)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot()["opened_at"] == 1007.0
    assert breaker.retry_after_s() == pytest.approx(5.0)
    clock.advance(4.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()


def test_release_frees_a_probe_slot_without_changing_state() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(clock, failure_threshold=1, cooldown_s=1.0, half_open_probes=1)
    open_breaker(breaker)
    clock.advance(1.0)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()


def test_release_while_closed_changes_nothing() -> None:
    breaker, changes = make_breaker(FakeClock(), failure_threshold=2)
    breaker.record_failure()
    breaker.release()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["consecutive_failures"] == 1
    assert changes == []


def test_late_verdicts_while_open_are_ignored() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(clock, failure_threshold=1, cooldown_s=10.0)
    open_breaker(breaker)
    clock.advance(5.0)
    breaker.record_success()  # a request sent before it opened
    assert breaker.state is BreakerState.OPEN
    breaker.record_failure()
    assert breaker.retry_after_s() == pytest.approx(5.0)  # cooldown not extended


def test_on_change_sees_every_transition_in_order() -> None:
    clock = FakeClock()
    breaker, changes = make_breaker(clock, failure_threshold=1, cooldown_s=2.0)
    breaker.record_failure()
    clock.advance(2.0)
    breaker.allow()
    breaker.record_failure()
    clock.advance(2.0)
    breaker.allow()
    breaker.record_success()
    closed, open_, half_open = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
    assert changes == [
        (closed, open_),
        (open_, half_open),
        (half_open, open_),
        (open_, half_open),
        (half_open, closed),
    ]


def test_zero_cooldown_goes_half_open_at_once() -> None:
    breaker, _ = make_breaker(FakeClock(), failure_threshold=1, cooldown_s=0.0)
    breaker.record_failure()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()


def test_state_values_are_the_wire_names() -> None:
    assert [s.value for s in BreakerState] == ["closed", "open", "half_open"]
    assert BreakerState("half_open") is BreakerState.HALF_OPEN


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("failure_threshold", 0, "failure_threshold must be >= 1, got 0"),
        ("failure_rate", 0.0, "failure_rate must be in (0, 1], got 0.0"),
        ("failure_rate", 1.5, "failure_rate must be in (0, 1], got 1.5"),
        ("window_s", 0.0, "window_s must be > 0, got 0.0"),
        ("min_requests", 0, "min_requests must be >= 1, got 0"),
        ("cooldown_s", -1.0, "cooldown_s must be >= 0, got -1.0"),
        ("half_open_probes", 0, "half_open_probes must be >= 1, got 0"),
    ],
)
def test_settings_validation_names_the_field(field: str, value: float, message: str) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ValueError) as error:
        BreakerSettings(**kwargs)
    assert str(error.value) == message


def test_default_settings_are_valid() -> None:
    settings = BreakerSettings()
    assert (settings.failure_threshold, settings.cooldown_s, settings.half_open_probes) == (
        5,
        10.0,
        1,
    )

"""The circuit breaker that guards one upstream: it stops sending requests to an
upstream that keeps failing, waits a cooldown, then lets a few probe requests
through to find out whether the upstream has recovered.

Everything runs on one asyncio event loop, so there are no locks; time comes
from an injectable clock so tests can advance it by hand."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class BreakerState(str, Enum):
    """CLOSED sends everything; OPEN sends nothing; HALF_OPEN sends a few probes."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerSettings:
    """When a breaker opens and how it recovers. It opens on either rule:
    ``failure_threshold`` failures in a row, or, over the last ``window_s``
    seconds, at least ``min_requests`` finished requests of which a fraction
    ``>= failure_rate`` failed."""

    failure_threshold: int = 5  # consecutive failures that open it
    failure_rate: float = 0.5  # failed fraction of the window that opens it
    window_s: float = 30.0  # how far back the failure rate looks
    min_requests: int = 10  # outcomes the window needs before the rate counts
    cooldown_s: float = 10.0  # open -> half-open after this long
    half_open_probes: int = 1  # requests let through at once while half-open

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {self.failure_threshold}")
        if not 0 < self.failure_rate <= 1:
            raise ValueError(f"failure_rate must be in (0, 1], got {self.failure_rate}")
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s}")
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be >= 1, got {self.min_requests}")
        if not self.cooldown_s >= 0:
            raise ValueError(f"cooldown_s must be >= 0, got {self.cooldown_s}")
        if self.half_open_probes < 1:
            raise ValueError(f"half_open_probes must be >= 1, got {self.half_open_probes}")


# Frozen, so every breaker built with the defaults can share one instance.
DEFAULT_SETTINGS = BreakerSettings()


class CircuitBreaker:
    """The breaker of one upstream. Ask ``allow()`` before sending a request;
    every allowed request then ends in exactly one of ``record_success()``,
    ``record_failure()`` or ``release()`` (no verdict, e.g. the client went away).

    ``on_change(old, new)`` is called after every state change."""

    def __init__(
        self,
        settings: BreakerSettings = DEFAULT_SETTINGS,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        # (finish time, succeeded) of recent requests, oldest first; the
        # failure count is kept alongside so the rate check does not rescan it.
        self._window: deque[tuple[float, bool]] = deque()
        self._window_failures = 0
        self._opened_at: float | None = None
        self._probes_in_flight = 0

    @property
    def state(self) -> BreakerState:
        """The current state. OPEN turns into HALF_OPEN here, on the first read
        after the cooldown, so no timer task is needed."""
        if self._state is BreakerState.OPEN:
            assert self._opened_at is not None, "an open breaker knows when it opened"
            if self._clock() - self._opened_at >= self.settings.cooldown_s:
                self._probes_in_flight = 0
                self._move_to(BreakerState.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """Whether a request may be sent now. In HALF_OPEN a True takes one of
        the ``half_open_probes`` slots until the request's verdict or release."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        if self._probes_in_flight < self.settings.half_open_probes:
            self._probes_in_flight += 1
            return True
        return False

    def record_success(self) -> None:
        """A request succeeded. A successful probe closes the breaker with a
        clean slate. While OPEN it is ignored: it was sent before the breaker
        opened and says nothing about the upstream now."""
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._reset_counts()
            self._opened_at = None
            self._probes_in_flight = 0
            self._move_to(BreakerState.CLOSED)
        elif state is BreakerState.CLOSED:
            self._consecutive_failures = 0
            self._add_outcome(ok=True)

    def record_failure(self) -> None:
        """A request failed. A failed probe re-opens the breaker and restarts
        the cooldown. While OPEN it is ignored, for the reason in
        ``record_success``, and so a late failure does not extend the cooldown."""
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._open()
        elif state is BreakerState.CLOSED:
            self._consecutive_failures += 1
            self._add_outcome(ok=False)
            if self._consecutive_failures >= self.settings.failure_threshold or self._rate_trips():
                self._open()

    def release(self) -> None:
        """An allowed request ended without a verdict: give back its half-open
        probe slot, if it held one, and change nothing else."""
        if self.state is BreakerState.HALF_OPEN and self._probes_in_flight > 0:
            self._probes_in_flight -= 1

    def adopt_open(self, age_s: float) -> None:
        """Open as if this breaker had opened ``age_s`` seconds ago: another
        gateway process opened it then (gateway/shared_breakers.py), so this
        one refuses until the same cooldown has passed. Counts stay as they were."""
        self._opened_at = self._clock() - age_s
        self._probes_in_flight = 0
        self._move_to(BreakerState.OPEN)

    def adopt_closed(self) -> None:
        """Close with a clean slate: another gateway process's probe found the
        upstream well again (gateway/shared_breakers.py)."""
        if self._state is BreakerState.CLOSED:
            return
        self._reset_counts()
        self._opened_at = None
        self._probes_in_flight = 0
        self._move_to(BreakerState.CLOSED)

    def retry_after_s(self) -> float:
        """Seconds until an OPEN breaker goes half-open; 0 in any other state."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        assert self._opened_at is not None, "an open breaker knows when it opened"
        return max(0.0, self._opened_at + self.settings.cooldown_s - self._clock())

    def snapshot(self) -> dict[str, object]:
        """The breaker as plain values, for GET /v1/upstreams and metrics.
        ``opened_at`` is in the clock's units (monotonic seconds by default)."""
        state = self.state
        self._prune(self._clock())
        return {
            "state": state.value,
            "consecutive_failures": self._consecutive_failures,
            "window_requests": len(self._window),
            "window_failures": self._window_failures,
            "opened_at": self._opened_at,
        }

    def _open(self) -> None:
        # Counts stay as they were, so a snapshot of an open breaker shows why it opened.
        self._opened_at = self._clock()
        self._probes_in_flight = 0
        self._move_to(BreakerState.OPEN)

    def _move_to(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if self._on_change is not None and old is not new:
            self._on_change(old, new)

    def _reset_counts(self) -> None:
        self._consecutive_failures = 0
        self._window.clear()
        self._window_failures = 0

    def _add_outcome(self, ok: bool) -> None:
        now = self._clock()
        self._window.append((now, ok))
        if not ok:
            self._window_failures += 1
        self._prune(now)

    def _prune(self, now: float) -> None:
        """Drop outcomes older than window_s."""
        horizon = now - self.settings.window_s
        while self._window and self._window[0][0] < horizon:
            _, ok = self._window.popleft()
            if not ok:
                self._window_failures -= 1

    def _rate_trips(self) -> bool:
        num_requests = len(self._window)
        if num_requests < self.settings.min_requests:
            return False
        return self._window_failures / num_requests >= self.settings.failure_rate

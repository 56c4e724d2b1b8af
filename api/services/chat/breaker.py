"""A circuit breaker per chat provider: after `failures` consecutive failures the circuit opens
and calls skip the provider for `reset_s`; then one trial call is let through (half-open) and its
outcome closes the circuit again or reopens it for another `reset_s`."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        # a trial whose caller vanished (a dropped stream) must not wedge the circuit half-open
        self._trial_started: float | None = None

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at < self._reset_s:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def allow(self) -> bool:
        """Whether a call may go to the provider now; in half-open state only one trial at a
        time is let through."""
        state = self.state
        if state == CircuitState.CLOSED:
            return True
        if state == CircuitState.OPEN:
            return False
        now = self._clock()
        if self._trial_started is not None and now - self._trial_started < self._reset_s:
            return False
        self._trial_started = now
        return True

    def succeeded(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_started = None

    def failed(self) -> None:
        self._failures += 1
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = self._clock()  # a failed trial reopens for another full period
            self._trial_started = None

    def released(self) -> None:
        """The call ended without saying anything about the provider's health (e.g. a user's
        own key was rejected): a half-open trial slot is free again."""
        self._trial_started = None

"""Per-endpoint protection: a circuit breaker and a rate limiter (both in process).

The breaker counts consecutive failed attempts (no answer, 5xx, 408; not 429 and not other
4xx, which prove the endpoint is there). After ``failures`` of them it *opens*: no request
goes out for ``open_seconds``. Then it is *half-open*: exactly one event probes the endpoint;
a success closes the breaker, a failure opens it for another ``open_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import metrics

__all__ = ["CircuitBreaker", "CircuitState", "Permit", "RateLimiter"]


class CircuitState(enum.IntEnum):
    """Values of ``fleetgate_connector_circuit_state``."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to send one request; ``probe`` when it is the half-open breaker's one probe."""

    probe: bool = False


class CircuitBreaker:
    def __init__(
        self,
        endpoint: str,
        failures: int,
        open_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.threshold = failures
        self.open_seconds = open_seconds
        self.clock = clock
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._probing = False
        self._changed = asyncio.Event()
        metrics.circuit_state.labels(endpoint).set(CircuitState.CLOSED)

    def _set(self, state: CircuitState) -> None:
        if state is not self.state:
            self.state = state
            metrics.circuit_state.labels(self.endpoint).set(state)
        self._changed.set()
        self._changed = asyncio.Event()

    def acquire(self) -> Permit | None:
        """A permit if a request may go out now; None while open (or another event probes)."""
        if self.state is CircuitState.CLOSED:
            return Permit()
        if self._probing or self.clock() < self.opened_at + self.open_seconds:
            return None
        self._probing = True
        self._set(CircuitState.HALF_OPEN)
        return Permit(probe=True)

    async def wait(self, stop: asyncio.Event, deadline: float | None = None) -> Permit | None:
        """A permit as soon as one can be had; None if ``stop`` is set or ``deadline`` (on
        :attr:`clock`) passes first."""
        while not stop.is_set():
            permit = self.acquire()
            if permit is not None:
                return permit
            now = self.clock()
            if deadline is not None and now >= deadline:
                return None
            wake = None if self._probing else self.opened_at + self.open_seconds - now
            if deadline is not None:
                wake = deadline - now if wake is None else min(wake, deadline - now)
            changed = asyncio.ensure_future(self._changed.wait())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    (changed, stopped),
                    timeout=None if wake is None else max(wake, 0.001),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiter in (changed, stopped):
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
        return None

    def record(self, permit: Permit, alive: bool | None) -> None:
        """The outcome of a permitted request: ``alive`` True (the endpoint answered in a way
        that shows it works), False (a failure that counts), None (nothing learnt, e.g. the
        request never went out)."""
        if permit.probe:
            self._probing = False
        if alive is None:
            if permit.probe:
                self._set(self.state)  # let the next event probe
            return
        if alive:
            self.failures = 0
            self._set(CircuitState.CLOSED)
            return
        self.failures += 1
        if self.threshold and (permit.probe or self.failures >= self.threshold):
            self.opened_at = self.clock()
            self._set(CircuitState.OPEN)

    def release(self, permit: Permit) -> None:
        """The request was abandoned (cancelled) without an outcome."""
        self.record(permit, None)


class RateLimiter:
    """At most ``rate`` requests a second, evenly spaced (no bursts).

    Callers take the slot in turn, and the next slot is counted from when the previous one was
    actually granted. Reserving future slots up front instead lets waiters woken late (a busy
    event loop) all go at once: a burst at the receiver."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self.clock = clock
        self._next = 0.0
        self._turn = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._turn:
            now = self.clock()
            if self._next > now:
                await asyncio.sleep(self._next - now)
                now = self.clock()
            self._next = now + self.interval

"""Is S3 answering? Every S3 request is timed while it runs, so trouble shows within seconds,
not when the client's timeouts and retries run out.

:class:`S3Watch` records each request (from the threads the blocking S3 client runs in) and
answers, with the time passed in: the age of the oldest request in flight, which requests have
been slow for longer than ``slow_seconds`` (each reported once), and whether S3 is ready (no
request slower than that in flight, and the last request that ended did not fail).
:func:`s3_ready` is the readiness check of the running assembler (for ``/readyz``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["S3Watch", "SlowRequest", "install", "s3_not_ready_reason", "s3_ready"]


@dataclass(frozen=True, slots=True)
class SlowRequest:
    operation: str
    age: float  # seconds in flight so far


class S3Watch:
    def __init__(
        self,
        slow_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.slow_seconds = slow_seconds
        self.clock = clock
        self._observe = observe
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._inflight: dict[int, tuple[str, float]] = {}
        self._reported: set[int] = set()
        #: The last request that ended raised (cleared by the next that succeeds).
        self.failing = False
        self.last_error = ""

    @contextmanager
    def request(self, operation: str) -> Iterator[None]:
        """Time one request (``operation`` is a metric label: keep the set small)."""
        began = self.clock()
        with self._lock:
            ident = next(self._ids)
            self._inflight[ident] = (operation, began)
        ok = False
        try:
            yield
            ok = True
        except BaseException as exc:
            self.last_error = repr(exc)
            raise
        finally:
            took = self.clock() - began
            with self._lock:
                del self._inflight[ident]
                self._reported.discard(ident)
                self.failing = not ok
            if self._observe is not None:
                self._observe(operation, took)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def oldest_age(self, now: float | None = None) -> float:
        """Seconds the oldest request in flight has run (0 when none is)."""
        now = self.clock() if now is None else now
        with self._lock:
            starts = [began for _, began in self._inflight.values()]
        return max(0.0, now - min(starts)) if starts else 0.0

    def newly_slow(self, now: float | None = None) -> list[SlowRequest]:
        """Requests in flight for ``slow_seconds`` or more, each returned once."""
        now = self.clock() if now is None else now
        out = []
        with self._lock:
            for ident, (operation, began) in self._inflight.items():
                if now - began >= self.slow_seconds and ident not in self._reported:
                    self._reported.add(ident)
                    out.append(SlowRequest(operation, now - began))
        return out

    def ready(self, now: float | None = None) -> bool:
        return not self.failing and self.oldest_age(now) < self.slow_seconds

    def reason(self, now: float | None = None) -> str:
        """Why S3 is not ready ("" when it is)."""
        age = self.oldest_age(now)
        if age >= self.slow_seconds:
            return f"an S3 request has been in flight for {age:.1f} s"
        if self.failing:
            return f"the last S3 request failed: {self.last_error}"
        return ""


_current: S3Watch | None = None


def install(watch: S3Watch) -> None:
    """Make ``watch`` the one :func:`s3_ready` reports on."""
    global _current
    _current = watch


def s3_ready() -> bool:
    """Readiness of the running assembler's S3 (True before it has one)."""
    return _current is None or _current.ready()


def s3_not_ready_reason() -> str:
    """Why :func:`s3_ready` is False ("" when it is True), for a readiness endpoint's body."""
    return "" if _current is None else _current.reason()

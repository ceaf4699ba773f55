"""Durable retries: the schedule, the state a retry record carries, and what comes next.

A failed event is not retried in memory: it is written to the retry topic of the next step
of the schedule (one topic per step, see :func:`contracts.retry_topic`) with its retry state
in headers, and its offset is committed. The endpoint's consumer of that topic attempts it
again once it is due. Everything here is pure, so the decisions are tested without Kafka.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from contracts import RetryHeader

from .config import RetryConfig

__all__ = ["DeadLetterNow", "RetryLater", "RetryState", "Schedule", "next_step"]

#: Longest ``fg-last-error`` header (bytes).
MAX_ERROR_BYTES = 500


@dataclass(frozen=True, slots=True)
class Schedule:
    delays: tuple[float, ...]
    max_age: float
    jitter: float

    @classmethod
    def of(cls, config: RetryConfig) -> Schedule:
        return cls(tuple(config.schedule), config.max_age, config.jitter)

    @property
    def last(self) -> int:
        return len(self.delays) - 1

    def tier_for(self, seconds: float) -> int:
        """The first step that waits at least ``seconds`` (the last one if none does)."""
        return next((i for i, d in enumerate(self.delays) if d >= seconds), self.last)

    def wait(self, tier: int, rand: Callable[[], float] = random.random) -> float:
        """The step's delay with jitter: uniform in ``delay * (1 +- jitter)``."""
        return self.delays[tier] * (1.0 + self.jitter * (2.0 * rand() - 1.0))


@dataclass(frozen=True, slots=True)
class RetryState:
    """What a retry record says about its event, beyond the event itself."""

    endpoint: str
    attempts: int
    first_attempt: float  # unix seconds
    due: float = 0.0  # unix seconds
    last_status: int | None = None
    last_error: str | None = None
    last_attempt: float | None = None
    source: str | None = None
    source_time: float | None = None  # unix seconds
    queued_by: str | None = None

    def failed(self, status: int | None, error: str | None, at: float) -> RetryState:
        """The state once one more attempt failed."""
        return replace(
            self, attempts=self.attempts + 1, last_status=status, last_error=error, last_attempt=at
        )

    def headers(self) -> list[tuple[str, bytes]]:
        values: list[tuple[RetryHeader, str | None]] = [
            (RetryHeader.ENDPOINT, self.endpoint),
            (RetryHeader.ATTEMPTS, str(self.attempts)),
            (RetryHeader.FIRST_ATTEMPT, _ms(self.first_attempt)),
            (RetryHeader.DUE, _ms(self.due)),
            (RetryHeader.LAST_STATUS, None if self.last_status is None else str(self.last_status)),
            (RetryHeader.LAST_ERROR, self.last_error),
            (RetryHeader.LAST_ATTEMPT, _ms(self.last_attempt)),
            (RetryHeader.SOURCE, self.source),
            (RetryHeader.SOURCE_TIME, _ms(self.source_time)),
            (RetryHeader.QUEUED_BY, self.queued_by),
        ]
        return [(str(name), _clip(value).encode()) for name, value in values if value is not None]

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes]]) -> RetryState | None:
        """The state in a record's headers; None if they are not a retry record's."""
        raw = {name: value.decode("utf-8", "replace") for name, value in headers}
        try:
            return cls(
                endpoint=raw[RetryHeader.ENDPOINT],
                attempts=int(raw[RetryHeader.ATTEMPTS]),
                first_attempt=int(raw[RetryHeader.FIRST_ATTEMPT]) / 1000,
                due=int(raw.get(RetryHeader.DUE, "0")) / 1000,
                last_status=_int(raw.get(RetryHeader.LAST_STATUS)),
                last_error=raw.get(RetryHeader.LAST_ERROR),
                last_attempt=_seconds(raw.get(RetryHeader.LAST_ATTEMPT)),
                source=raw.get(RetryHeader.SOURCE),
                source_time=_seconds(raw.get(RetryHeader.SOURCE_TIME)),
                queued_by=raw.get(RetryHeader.QUEUED_BY),
            )
        except (KeyError, ValueError):
            return None

    @staticmethod
    def endpoint_of(headers: Sequence[tuple[str, bytes]]) -> str | None:
        """Just the endpoint: the cheap test every endpoint's consumer makes on every record."""
        for name, value in headers:
            if name == RetryHeader.ENDPOINT:
                return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class RetryLater:
    tier: int
    due: float  # unix seconds


@dataclass(frozen=True, slots=True)
class DeadLetterNow:
    reason: str = "expired"


def next_step(
    schedule: Schedule,
    state: RetryState,
    tier: int | None,
    now: float,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> RetryLater | DeadLetterNow:
    """After a failure in step ``tier`` (None: the first attempt), where the event goes.

    The next step, or the last one again; at least as far as ``Retry-After`` asks. If even
    that would be later than ``max_age`` after the first attempt, it is dead-lettered now.
    """
    nxt = 0 if tier is None else min(tier + 1, schedule.last)
    if retry_after is not None:
        nxt = max(nxt, schedule.tier_for(retry_after))
    due = now + schedule.wait(nxt, rand)
    if retry_after is not None:
        due = max(due, now + retry_after)
    if due - state.first_attempt > schedule.max_age:
        return DeadLetterNow()
    return RetryLater(nxt, due)


def utc(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _ms(seconds: float | None) -> str | None:
    return None if seconds is None else str(round(seconds * 1000))


def _seconds(text: str | None) -> float | None:
    return None if not text else int(text) / 1000


def _int(text: str | None) -> int | None:
    return None if not text else int(text)


def _clip(text: str) -> str:
    data = text.encode()
    if len(data) <= MAX_ERROR_BYTES:
        return text
    return data[: MAX_ERROR_BYTES - 3].decode("utf-8", "ignore") + "..."

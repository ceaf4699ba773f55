"""Where sessions' records go, and how a session knows what Kafka has acknowledged.

:class:`KafkaSink` is the process's one producer (``acks=all``). :class:`Ledger` is one
session's view of it: records in the order they were sent, their bytes not yet acknowledged
(reading the socket pauses above a limit), and the barrier every "done" to a device waits
for: everything this session sent before now is acknowledged (:meth:`Ledger.barrier`). The
camera confirms a file, a telemetry protocol commits its records, only after it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from runtime.kafka import producer_kwargs

from . import metrics
from .settings import IngestorSettings

__all__ = ["KafkaFailed", "KafkaSink", "Ledger", "Sink"]


class Sink(Protocol):
    """Where records go: Kafka in production (:class:`KafkaSink`)."""

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        """Enqueue one record, waiting while the producer is full; the future resolves to
        its metadata (``.offset``, ``.partition``) once the broker acknowledged it."""
        ...


class KafkaFailed(Exception):
    """A record was not taken or not acknowledged: nothing after it may be confirmed to the
    device, and its session closes (``kafka_error``) so the device sends it again."""


class KafkaSink:
    """aiokafka producer with acks=all: a record's future resolves once every in-sync
    replica has it."""

    def __init__(self, settings: IngestorSettings) -> None:
        self.producer = AIOKafkaProducer(
            **producer_kwargs(settings),
            linger_ms=settings.kafka_linger_ms,
            max_request_size=settings.kafka_max_request_bytes,
            max_batch_size=256 * 1024,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            client_id=f"fleetgate-ingestor-{settings.instance}",
        )

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        started = time.monotonic()
        future: asyncio.Future[Any] = await self.producer.send(
            str(topic), value=value, key=key, headers=headers
        )
        future.add_done_callback(lambda done: _observe_produce(started, done))
        return future


def _observe_produce(started: float, future: asyncio.Future[Any]) -> None:
    """Kafka produce latency (enqueue to acknowledgement) and failures."""
    if future.cancelled() or future.exception() is not None:
        metrics.kafka_errors.inc()
    else:
        metrics.kafka_produce_seconds.observe(time.monotonic() - started)


class Ledger:
    """One session's records not yet acknowledged, oldest first, and their bytes."""

    def __init__(self, sink: Sink, timeout: float) -> None:
        self.sink = sink
        self.timeout = timeout
        self._pending: deque[tuple[asyncio.Future[Any], int]] = deque()
        self.pending_bytes = 0
        self._failure: str | None = None

    async def publish(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> asyncio.Future[Any]:
        """Hand one record to the producer; the future resolves once Kafka acknowledged it.
        :class:`KafkaFailed` if the producer refuses it or has no room for ``timeout``."""
        try:
            # Enqueueing waits while the producer is full (backpressure) or has no metadata
            # (broker unreachable); the latter must not hang the session.
            async with asyncio.timeout(self.timeout):
                future = await self.sink.send(topic, key, value, headers or [])
        except Exception as exc:  # refused outright, or no room for `timeout` seconds
            raise KafkaFailed(f"cannot enqueue to {topic}: {exc!r}") from exc
        metrics.kafka_records.labels(str(topic)).inc()
        self._pending.append((future, len(value)))
        self.pending_bytes += len(value)
        return future

    async def acknowledged(self, future: Awaitable[Any]) -> Any:
        """Wait for one record's acknowledgement; its metadata. :class:`KafkaFailed` if it
        fails or takes longer than ``timeout``."""
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except Exception as exc:
            raise KafkaFailed(f"record not acknowledged: {exc!r}") from exc

    def fail(self, reason: str) -> None:
        """What was acknowledged cannot be trusted (the broker lost the log): every later
        :meth:`bound` or :meth:`barrier` raises :class:`KafkaFailed` with ``reason``."""
        self._failure = self._failure or reason

    async def bound(self, limit: int) -> None:
        """Wait for Kafka until at most ``limit`` bytes are unacknowledged."""
        if self._failure is not None:
            raise KafkaFailed(self._failure)
        while self._pending and (self.pending_bytes > limit or self._pending[0][0].done()):
            future, size = self._pending[0]
            await self.acknowledged(future)
            self._pending.popleft()
            self.pending_bytes -= size

    async def barrier(self) -> None:
        """Return once every record published before the call is acknowledged."""
        await self.bound(0)

    def abandon(self) -> None:
        """The session is over: records never awaited still resolve later; take their
        outcome so a failure is not reported again as "never retrieved"."""
        for future, _size in self._pending:
            future.add_done_callback(_retrieve)
        self._pending.clear()
        self.pending_bytes = 0


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()

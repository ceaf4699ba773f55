"""Where sessions' records go, and how a session knows what Kafka has acknowledged.

:class:`KafkaSink` is the process's one producer (``acks=all``). :class:`Ledger` is one
session's view of it: records in the order they were sent, their bytes not yet acknowledged
(reading the socket pauses above a limit), and the barrier every "done" to a device waits
for: everything this session sent before now is acknowledged (:meth:`Ledger.barrier`). The
camera confirms a file, a telemetry protocol commits its records, only after it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

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
    replica has it.

    Records enter the producer in the order sessions asked, one at a time per lane (a FIFO
    lock for each topic and hash of the key, so one full partition does not hold up the
    others): when a batch is full, only the head of its lane waits for it to drain. Left to
    aiokafka, every waiting session wakes at each drain and races for the room, so under a
    burst (thousands of devices finishing at once) the unlucky ones starve until their
    timeout while the loop spends itself on the wake-ups. A producer that takes nothing (the
    broker gone) fails a head after ``request_timeout``; those queued behind it then fail at
    once until a record is taken again.
    """

    LANES = 16

    def __init__(self, settings: IngestorSettings, producer: Any = None) -> None:
        self.producer = producer or AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            linger_ms=settings.kafka_linger_ms,
            max_request_size=settings.kafka_max_request_bytes,
            max_batch_size=256 * 1024,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            client_id=f"fleetgate-ingestor-{settings.instance}",
        )
        self._lanes: dict[tuple[str, int], asyncio.Lock] = {}
        #: When the head of the queue last failed (loop time), and why.
        self._failed_at = float("-inf")
        self._failure: BaseException | None = None

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        queued = loop.time()
        lane = (topic, hash(key) % self.LANES)
        turn = self._lanes.get(lane)
        if turn is None:
            turn = self._lanes[lane] = asyncio.Lock()
        async with turn:
            if queued <= self._failed_at:  # waited behind a record the producer never took
                raise KafkaFailed(f"producer stalled: {self._failure!r}")
            try:
                future: asyncio.Future[Any] = await self.producer.send(
                    str(topic), value=value, key=key, headers=headers
                )
            except Exception as exc:  # no room for request_timeout, or refused
                self._failed_at, self._failure = loop.time(), exc
                raise
            return future


class Ledger:
    """One session's records not yet acknowledged, oldest first, and their bytes."""

    def __init__(self, sink: Sink, timeout: float, enqueue_timeout: float | None = None) -> None:
        self.sink = sink
        self.timeout = timeout
        #: Longest wait for room in the producer (a burst queues sessions behind each
        #: other; a stalled producer fails them sooner, see :class:`KafkaSink`).
        self.enqueue_timeout = timeout if enqueue_timeout is None else enqueue_timeout
        self._pending: deque[tuple[asyncio.Future[Any], int]] = deque()
        self.pending_bytes = 0
        self._failure: str | None = None

    async def publish(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> asyncio.Future[Any]:
        """Hand one record to the producer; the future resolves once Kafka acknowledged it.
        :class:`KafkaFailed` if the producer refuses it, stalls, or has no room for
        ``enqueue_timeout``."""
        try:
            # Enqueueing waits while the producer is full (backpressure: bounded, in turn)
            # or has no metadata (broker unreachable); the latter must not hang the session.
            async with asyncio.timeout(self.enqueue_timeout):
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

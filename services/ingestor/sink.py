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
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition

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


@dataclass(slots=True, eq=False)
class _Lane:
    """Records waiting for their turn to enter the producer, and whether one is in it."""

    #: (when it queued, topic, key, value, headers, ticket resolved with the record's future)
    waiting: deque[tuple[float, str, bytes, bytes, list[tuple[str, bytes]], asyncio.Future[Any]]]
    busy: bool = False


class KafkaSink:
    """aiokafka producer with acks=all: a record's future resolves once every in-sync
    replica has it.

    Records enter the producer first come, first served in lanes (per topic and hash of the
    key, so one full partition does not hold up the others): while a record of a lane waits
    for room (its batch is full), later records of that lane queue behind it and go in, in
    order, as soon as it is in. Left to aiokafka, every waiting session wakes at each drain
    and races for the room, so under a burst (thousands of devices finishing at once) the
    unlucky ones starve until their timeout while the loop spends itself on the wake-ups. A
    producer that takes nothing (the broker gone) fails a record after ``request_timeout``;
    those queued behind it then fail at once until a record is taken again.
    """

    LANES = 16

    def __init__(self, settings: IngestorSettings, producer: Any = None) -> None:
        self.producer = producer or AIOKafkaProducer(
            **producer_kwargs(settings),
            linger_ms=settings.kafka_linger_ms,
            max_request_size=settings.kafka_max_request_bytes,
            max_batch_size=256 * 1024,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            client_id=f"fleetgate-ingestor-{settings.instance}",
        )
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._runners: set[asyncio.Task[None]] = set()
        #: When a record last failed to enter (loop time), and why.
        self._failed_at = float("-inf")
        self._failure: BaseException | None = None
        self._direct = _Direct.of(self.producer)

    def send_now(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any] | None:
        """The record appended to the producer's open batch for its partition without
        waiting, as :meth:`send` would have it, or None: :meth:`send` must (no open batch
        with room, records queued ahead in its lane, metadata not known yet)."""
        direct = self._direct
        if direct is None:
            return None
        lane = self._lanes.get((topic, hash(key) % self.LANES))
        if lane is not None and lane.busy:
            return None
        return direct.append(topic, key, value, headers)

    def append_now(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any] | None:
        """:meth:`send_now`, but the future is the open batch's own: it resolves once the
        broker acknowledged the whole batch the record went into (its metadata is the
        batch's, not the record's) and fails with it. No future or metadata per record: the
        cheap way when all a caller needs is "acknowledged" (:meth:`Ledger.put`)."""
        direct = self._direct
        if direct is None:
            return None
        lane = self._lanes.get((topic, hash(key) % self.LANES))
        if lane is not None and lane.busy:
            return None
        return direct.append_batched(topic, key, value, headers)

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        name = (topic, hash(key) % self.LANES)
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(deque())
        if not lane.busy:  # nobody ahead: straight in (returns at once while there is room)
            lane.busy = True
            try:
                return await self._enter(topic, key, value, headers, loop.time())
            finally:
                self._next(lane)
        ticket: asyncio.Future[asyncio.Future[Any]] = loop.create_future()
        lane.waiting.append((loop.time(), topic, key, value, headers, ticket))
        return await ticket  # cancelled (the session gave up): the lane skips it

    async def _enter(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        queued: float,
    ) -> asyncio.Future[Any]:
        if queued <= self._failed_at:  # waited behind a record the producer never took
            raise KafkaFailed(f"producer stalled: {self._failure!r}")
        direct = self._direct
        partition = None if direct is None else direct.partition(topic, key)
        try:
            future: asyncio.Future[Any] = await self.producer.send(
                str(topic), value=value, key=key, partition=partition, headers=headers
            )
        except Exception as exc:  # no room for request_timeout, or refused
            self._failed_at, self._failure = asyncio.get_running_loop().time(), exc
            raise
        return future

    def _next(self, lane: _Lane) -> None:
        """The record in the producer is in (or failed): the queue's turn, or the lane is free."""
        if not lane.waiting:
            lane.busy = False
            return
        runner = asyncio.get_running_loop().create_task(self._run(lane))
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    async def _run(self, lane: _Lane) -> None:
        try:
            while lane.waiting:
                queued, topic, key, value, headers, ticket = lane.waiting.popleft()
                if ticket.done():
                    continue
                try:
                    future = await self._enter(topic, key, value, headers, queued)
                except Exception as exc:  # the session gets it, as from a direct send
                    if not ticket.done():
                        ticket.set_exception(exc)
                    continue
                if ticket.done():  # gave up meanwhile: the record goes out anyway
                    future.add_done_callback(_ignore)
                else:
                    ticket.set_result(future)
        finally:
            lane.busy = False


class _Direct:
    """The per-record shortcuts into aiokafka's producer (0.14): a key's partition computed
    once by the producer's own partitioner (the same partition ``send`` would choose; it is
    dropped when the cluster metadata changes), and a record appended straight to the open
    batch of its partition, as ``send`` does once it found room. ``send`` is the way when
    there is no open batch with room: it creates batches, waits for room, wakes the sender.
    """

    __slots__ = ("_accumulator", "_cluster", "_partitioner", "_partitions", "_tps")

    #: Keys whose partition is kept (a session's IMEI, per topic), then the cache restarts.
    CACHE = 65536

    def __init__(self, producer: Any) -> None:
        self._accumulator = producer._message_accumulator
        self._cluster = producer.client.cluster
        self._partitioner = producer._partitioner
        self._partitions: dict[tuple[str, bytes], TopicPartition] = {}
        self._tps: dict[tuple[str, int], TopicPartition] = {}
        self._cluster.add_listener(self._metadata_changed)

    @classmethod
    def of(cls, producer: Any) -> _Direct | None:
        """The shortcuts for an aiokafka producer; None for anything else (a test's stand-in)."""
        if not isinstance(producer, AIOKafkaProducer):
            return None
        accumulator = getattr(producer, "_message_accumulator", None)
        if not all(hasattr(accumulator, a) for a in ("_batches", "_closed", "_exception")):
            return None  # another aiokafka: its public path only
        if not hasattr(producer, "_partitioner"):
            return None
        return cls(producer)

    def _metadata_changed(self, _cluster: Any) -> None:
        self._partitions.clear()

    def _tp(self, topic: str, key: bytes) -> TopicPartition | None:
        cached = (topic, key)
        tp = self._partitions.get(cached)
        if tp is not None:
            return tp
        partitions = self._cluster.partitions_for_topic(topic)
        if not partitions:
            return None  # metadata not known yet: ``send`` waits for it
        available = self._cluster.available_partitions_for_topic(topic) or ()
        partition = self._partitioner(key, list(partitions), list(available))
        tp = self._tps.get((topic, partition))
        if tp is None:
            tp = self._tps[(topic, partition)] = TopicPartition(topic, partition)
        if len(self._partitions) >= self.CACHE:
            self._partitions.clear()
        self._partitions[cached] = tp
        return tp

    def partition(self, topic: str, key: bytes) -> int | None:
        tp = self._tp(topic, key)
        return None if tp is None else tp.partition

    def append(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any] | None:
        accumulator = self._accumulator
        if accumulator._closed or accumulator._exception is not None:
            return None  # ``send`` raises what aiokafka says
        tp = self._tp(topic, key)
        if tp is None:
            return None
        batches = accumulator._batches.get(tp)
        if not batches:
            return None
        future: asyncio.Future[Any] | None = batches[-1].append(key, value, None, headers=headers)
        return future

    def append_batched(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any] | None:
        """:meth:`append` without a future per record: the batch's own future (what
        aiokafka's ``send_batch`` returns), resolved or failed with the whole batch."""
        accumulator = self._accumulator
        if accumulator._closed or accumulator._exception is not None:
            return None
        tp = self._tp(topic, key)
        if tp is None:
            return None
        batches = accumulator._batches.get(tp)
        if not batches:
            return None
        batch = batches[-1]
        # ``MessageBatch.append`` minus its per-record future; None: the batch is full (its
        # builder closes itself) and ``send`` opens the next one.
        if batch._builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            return None
        future: asyncio.Future[Any] = batch.future
        return future


def _observe_produce(protocol: str, started: float, future: asyncio.Future[Any]) -> None:
    """Kafka produce latency (handed to the sink to acknowledgement) of a window's first
    record (its failure is counted where the ledger finds it)."""
    if not future.cancelled() and future.exception() is None:
        metrics.kafka_produce_seconds.labels(protocol).observe(time.monotonic() - started)


class Ledger:
    """One session's records not yet acknowledged, oldest first, and their bytes.

    A record's acknowledgement is not awaited one by one: aiokafka resolves a whole batch's
    futures together, so :meth:`bound` and :meth:`barrier` drop what is acknowledged from the
    head of the window in one pass (a failed record stops the pass: nothing after it counts)
    and wait only on the oldest record still in flight, once per acknowledgement that
    arrives. Every record is checked; none is assumed acknowledged because a later one was.
    """

    def __init__(
        self,
        sink: Sink,
        timeout: float,
        enqueue_timeout: float | None = None,
        *,
        protocol: str = "unknown",
    ) -> None:
        self.sink = sink
        #: The session's protocol: the ``protocol`` label of the Kafka produce metrics.
        self.protocol = protocol
        self.timeout = timeout
        #: Longest wait for room in the producer (a burst queues sessions behind each
        #: other; a stalled producer fails them sooner, see :class:`KafkaSink`).
        self.enqueue_timeout = timeout if enqueue_timeout is None else enqueue_timeout
        self._send_now = getattr(sink, "send_now", None)
        self._append_now = getattr(sink, "append_now", None)
        self._pending: deque[tuple[asyncio.Future[Any], int]] = deque()
        self.pending_bytes = 0
        self._failure: str | None = None
        #: Records handed to the producer per topic, not yet counted in the metric.
        self._produced: dict[str, int] = {}

    async def publish(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> asyncio.Future[Any]:
        """Hand one record to the producer; the future resolves once Kafka acknowledged it.
        :class:`KafkaFailed` if the producer refuses it, stalls, or has no room for
        ``enqueue_timeout``."""
        started = time.monotonic() if not self._pending else 0.0
        headers = headers or []
        send_now = self._send_now
        future = None if send_now is None else send_now(topic, key, value, headers)
        if future is None:
            try:
                # Enqueueing waits while the producer is full (backpressure: bounded, in
                # turn) or has no metadata (broker unreachable); the latter must not hang
                # the session.
                async with asyncio.timeout(self.enqueue_timeout):
                    future = await self.sink.send(topic, key, value, headers)
            except Exception as exc:  # refused outright, or no room for `timeout` seconds
                metrics.kafka_errors.labels(self.protocol).inc()
                raise KafkaFailed(f"cannot enqueue to {topic}: {exc!r}") from exc
        pending = self._pending
        if not pending:  # a window's first record: its produce latency is the sample
            future.add_done_callback(partial(_observe_produce, self.protocol, started))
        pending.append((future, len(value)))
        self.pending_bytes += len(value)
        produced = self._produced
        produced[topic] = produced.get(topic, 0) + 1
        return future

    def put(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> bool:
        """Hand one record to the producer if it can go in at once (the open batch of its
        partition has room, nothing queued ahead of it), without waiting and without a
        future of its own: the window holds its batch's future (one entry for a run of
        records in the same batch), so :meth:`bound` and :meth:`barrier` count it like any
        other record. False: nothing was sent, :meth:`publish` must take it."""
        append_now = self._append_now
        if append_now is None:
            return False
        future = append_now(topic, key, value, headers)
        if future is None:
            return False
        size = len(value)
        pending = self._pending
        if not pending:  # a window's first record: its produce latency is the sample
            future.add_done_callback(partial(_observe_produce, self.protocol, time.monotonic()))
            pending.append((future, size))
        elif pending[-1][0] is future:  # same batch as the record before: one entry
            pending[-1] = (future, pending[-1][1] + size)
        else:
            pending.append((future, size))
        self.pending_bytes += size
        produced = self._produced
        produced[topic] = produced.get(topic, 0) + 1
        return True

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

    def _settle(self) -> None:
        """Drop the acknowledged records at the head of the window; :class:`KafkaFailed` at
        the first that failed."""
        pending = self._pending
        acknowledged = 0
        while pending:
            future = pending[0][0]
            if not future.done():
                break
            if future.cancelled() or future.exception() is not None:
                self.pending_bytes -= acknowledged + pending.popleft()[1]
                metrics.kafka_errors.labels(self.protocol).inc()
                reason = "cancelled" if future.cancelled() else repr(future.exception())
                self.fail(f"record not acknowledged: {reason}")
                raise KafkaFailed(f"record not acknowledged: {reason}")
            acknowledged += pending.popleft()[1]
        self.pending_bytes -= acknowledged

    def _count(self) -> None:
        if self._produced:
            for topic, count in self._produced.items():
                metrics.kafka_records.labels(str(topic)).inc(count)
            self._produced.clear()

    async def bound(self, limit: int) -> None:
        """Wait for Kafka until at most ``limit`` bytes are unacknowledged."""
        if self._failure is not None:
            raise KafkaFailed(self._failure)
        self._count()
        self._settle()
        while self.pending_bytes > limit and self._pending:
            # The oldest record in flight; each acknowledgement has ``timeout`` to come.
            oldest = self._pending[0][0]
            try:
                async with asyncio.timeout(self.timeout):
                    await asyncio.wait((oldest,))
            except TimeoutError as exc:
                metrics.kafka_errors.labels(self.protocol).inc()
                self.fail(f"record not acknowledged within {self.timeout:g} s")
                raise KafkaFailed(f"record not acknowledged: {exc!r}") from exc
            self._settle()

    async def barrier(self) -> None:
        """Return once every record published before the call is acknowledged."""
        await self.bound(0)

    def abandon(self) -> None:
        """The session is over: records never awaited still resolve later; take their
        outcome so a failure is not reported again as "never retrieved", and count it."""
        self._count()
        retrieve = partial(_retrieve, self.protocol)
        for future, _size in self._pending:
            future.add_done_callback(retrieve)
        self._pending.clear()
        self.pending_bytes = 0


def _ignore(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _retrieve(protocol: str, future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        metrics.kafka_errors.labels(protocol).inc()

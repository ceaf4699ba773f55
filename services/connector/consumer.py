"""The Kafka side: one consumer group per endpoint, durable retries, dead letters.

Every enabled endpoint gets an :class:`EndpointWorker` with its own consumer group
(``{connector_group_prefix}-{name}``), HTTP client, circuit breaker and limits, so a slow or
dead endpoint never holds another back. The group reads ``fleetgate.files.v1``,
``fleetgate.records.v1`` unless its filter leaves every record out (:mod:`.events`), and every retry
topic (one per step of the schedule, shared by all endpoints; each group acts only on its own
endpoint's records and passes over the others').

Inside one endpoint partitions proceed concurrently (a batch goes to a task of its partition,
while the main loop keeps polling the other partitions, so group membership stays alive
however long a wait lasts). A partition with a task is left out of the polls, not paused: the
consumer keeps fetching it ahead, so its next records are at hand when the task ends. (Pausing
dropped what was fetched ahead; the partition was fetched again after its task, behind any
fetch of idle partitions the broker was holding, up to ``kafka_fetch_max_wait_ms``.)

In a partition of new events each device's events (one Kafka key) are handled in order, one at
a time, and different devices' side by side: up to ``max_concurrency`` first attempts of the
endpoint in flight, fewer while it fails (see :class:`_Window`). A retry topic's partition is
handled in order, one record at a time.

- A new event (``fleetgate.files.v1``) gets one attempt at once. On a failure worth retrying it
  is written to the first retry topic (or the one ``Retry-After`` asks for), on a 4xx to the
  dead-letter topic; either write is acknowledged by the broker before the event's offset is
  committed. A failing event therefore never blocks the events behind it.
- A retry record waits in its partition until it is due (the partition's task waits), is
  attempted, and then is done, moves to the next step, or is dead-lettered once it would
  exceed the maximum age; again committed only after that.
- While the endpoint's circuit breaker is open, new events go straight to the first retry step
  without a request, and retry records wait for the breaker (or their maximum age).

Offsets are committed (manually) only up to the last record that is finished: after each batch,
every second while a partition is busy, when partitions are revoked and at shutdown. A crash can
repeat a delivery or a retry record, never lose one; receivers de-duplicate on ``webhook-id``.

An endpoint with ``batch`` (:mod:`.batch`) collects the records of each device of a partition
and POSTs up to ``max_records`` of them at once, after at most ``max_wait_seconds``; a batch is
retried, dead-lettered (one dead letter per record) and signed as one event, and the partition's
offsets stay behind the first record of its oldest open batch until that batch is delivered or
parked. Without ``batch`` nothing of this runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from contracts import (
    DeadLetter,
    Topic,
    encode,
)
from contracts.records import TelemetryRecord
from runtime.kafka import client_kwargs, consumer_kwargs, producer_kwargs

from . import metrics
from .batch import Batcher, OpenBatch, RecordBatch
from .config import ConnectorConfig, Endpoint
from .delivery import Attempt, EndpointClient, Verdict
from .events import (
    Deliverable,
    accepts,
    decode_event,
    dynamic_fields,
    render,
    source_topics,
    webhook_body,
)
from .forward import ForwardWorker
from .group import Rebalance, commit_new, sleep_unless_stopped
from .presign import Presigner
from .protection import CircuitBreaker, Permit
from .retry import DeadLetterNow, RetryState, Schedule, next_step, utc
from .settings import ConnectorSettings

__all__ = [
    "INSTANCE",
    "EndpointWorker",
    "Publisher",
    "ensure_topics",
    "serve",
    "webhook_body",
]

_log = structlog.get_logger("fleetgate.connector")

#: While a partition is busy, what it finished is committed this often.
COMMIT_INTERVAL = 1.0
#: How long the main loop waits for records before looking at ``stop`` again.
POLL_MS = 200
#: This process, in the ``fg-queued-by`` header of the retry records it writes.
INSTANCE = uuid.uuid4().hex[:16]
#: The ``result`` label of ``fleetgate_connector_deliveries_total`` for each verdict.
_RESULTS = {
    Verdict.DELIVERED: "success",
    Verdict.RETRY: "failure",
    Verdict.REJECT: "rejected",
    Verdict.REFUSED: "refused",
}


def _info_enabled() -> bool:
    """Whether the connector's info lines are written (the standard library's level check is
    cached; structlog would build and render the line first and drop it after)."""
    return logging.getLogger("fleetgate.connector").isEnabledFor(logging.INFO)


def why_not_an_event(value: bytes | None) -> str:
    """A record that does not decode as a FileEvent: is it a newer event type, or garbage?"""
    if value is None:
        return "no value"
    try:
        raw: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "not JSON"
    kind = raw.get("type") if isinstance(raw, dict) else None
    if isinstance(kind, str) and kind not in ("file.stored", "file.failed", "record"):
        return f"unknown event type {kind!r}"
    if isinstance(raw, dict) and raw.get("schema") == "record-batch.v1":
        return "not a valid batch of records"
    return "not a valid file event or record"


class Publisher:
    """The process's producer for retry records and dead letters.

    ``acks=all``, and :meth:`send` returns only once the broker has the record (retrying a
    failed write with backoff), so the offset of what caused the write can then be committed.
    Idempotent by default (``kafka_enable_idempotence``): a send retried after a leader
    change is written once. A crash between write and commit can still duplicate a retry
    record or a dead letter, never lose one.
    """

    def __init__(self, settings: ConnectorSettings) -> None:
        self.producer = AIOKafkaProducer(
            **producer_kwargs(settings),
            client_id="fleetgate-connector",
            linger_ms=2,
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        stop: asyncio.Event,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        """The broker's RecordMetadata of the written record; None if stopped first."""
        delay = 0.1
        while not stop.is_set():
            try:
                return await self.producer.send_and_wait(topic, value, key=key, headers=headers)
            except KafkaError as exc:
                _log.warning("publish_failed", topic=topic, error=repr(exc), retry_in=delay)
                await sleep_unless_stopped(stop, delay)
                delay = min(delay * 2, 5.0)
        return None


class _Backlog:
    """The endpoint's events waiting in the retry topics, as far as this process knows.

    A record counts from when this process writes it into a partition it consumes, or from
    when it fetches it (written by another process, or before a restart), until it is
    finished. What is in partitions assigned to other replicas counts there.
    """

    def __init__(self, endpoint: str) -> None:
        self.gauge = metrics.backlog.labels(endpoint)
        self.count = 0
        #: Offsets this process wrote and counted, not yet fetched, per partition.
        self._written: dict[TopicPartition, set[int]] = {}
        #: Next offset to fetch per partition.
        self._fetched: dict[TopicPartition, int] = {}
        #: Counted records fetched and not finished, per partition.
        self._open: dict[TopicPartition, int] = {}

    def _add(self, n: int) -> None:
        self.count += n
        self.gauge.inc(n)

    def written(self, tp: TopicPartition, offset: int, assigned: bool) -> None:
        if assigned and offset >= self._fetched.get(tp, 0):
            self._written.setdefault(tp, set()).add(offset)
            self._add(1)

    def fetched(self, tp: TopicPartition, offsets: Iterable[int], last: int) -> None:
        written = self._written.get(tp, set())
        for offset in offsets:
            if offset in written:
                written.discard(offset)
            else:
                self._add(1)
            self._open[tp] = self._open.get(tp, 0) + 1
        self._fetched[tp] = max(self._fetched.get(tp, 0), last + 1)

    def done(self, tp: TopicPartition) -> None:
        self._open[tp] -= 1
        self._add(-1)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._add(-(len(self._written.pop(tp, ())) + self._open.pop(tp, 0)))
            self._fetched.pop(tp, None)

    def reset(self) -> None:
        self.forget({*self._written, *self._open, *self._fetched})


class _Window:
    """How many first attempts of an endpoint may be in flight at once: up to ``limit``
    (``max_concurrency``), from :attr:`FLOOR`, doubling with each attempt that shows the
    endpoint works and back to the floor after each that counts against it. A healthy
    endpoint soon has ``limit`` requests in flight; one that just died gets a few at a time,
    so its circuit breaker opens after about ``failures`` attempts, not a whole window. The
    floor is not one: a single request held by a hanging endpoint must not stop the rest
    (one request per partition of the files topic was the concurrency before the window)."""

    FLOOR = 4

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.floor = min(limit, self.FLOOR)
        self.allowed = self.floor
        self.busy = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        while self.busy >= self.allowed:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                else:
                    self._wake()  # it had its turn: pass it on
                raise
        self.busy += 1

    def release(self) -> None:
        self.busy -= 1
        self._wake()

    def learn(self, alive: bool | None) -> None:
        """An attempt's outcome, as the circuit breaker reads it."""
        if alive is True:
            self.allowed = min(self.limit, self.allowed * 2)
            self._wake()
        elif alive is False:
            self.allowed = self.floor

    def _wake(self) -> None:
        free = self.allowed - self.busy
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1


class EndpointWorker:
    """Delivers ``fleetgate.files.v1`` and its retries to one endpoint until ``stop`` is set."""

    def __init__(
        self,
        endpoint: Endpoint,
        settings: ConnectorSettings,
        config: ConnectorConfig,
        presigner: Presigner,
        publisher: Publisher,
        client: EndpointClient | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.settings = settings
        self.presigner = presigner
        self.publisher = publisher
        metrics.init(endpoint.name)
        #: This endpoint's series, looked up once (not per delivery).
        self._m_deliveries = {
            verdict: metrics.deliveries.labels(endpoint.name, result)
            for verdict, result in _RESULTS.items()
        }
        self._m_seconds = metrics.delivery_seconds.labels(endpoint.name)
        self._m_age = metrics.delivered_age_seconds.labels(endpoint.name)
        self._m_last_success = metrics.last_success.labels(endpoint.name)
        self.client = client or EndpointClient(endpoint)
        self.schedule = Schedule.of(config.retry)
        self.tier_topics = config.retry.topics
        self.tiers = {topic: i for i, topic in enumerate(self.tier_topics)}
        self.breaker = CircuitBreaker(
            endpoint.name,
            endpoint.circuit_breaker.failures,
            endpoint.circuit_breaker.open_seconds,
        )
        self.backlog = _Backlog(endpoint.name)
        self.group = f"{settings.connector_group_prefix}-{endpoint.name}"
        self.consumer = AIOKafkaConsumer(
            **consumer_kwargs(settings),
            group_id=self.group,
            client_id=f"fleetgate-connector-{endpoint.name}",
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        )
        self._stop = asyncio.Event()
        #: One task per partition with records in hand (left out of the polls meanwhile). A
        #: task that stopped before finishing its records stays, so they are not skipped.
        self._tasks: dict[TopicPartition, asyncio.Task[None]] = {}
        #: Set when a partition's task finishes: the main loop polls it again at once.
        self._freed = asyncio.Event()
        #: Next offset to commit per partition (the last finished record's offset + 1).
        self._finished: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        #: With ``batch``: the open batches of each records partition, and the offset after
        #: the last record taken from it (finished, or waiting in a batch).
        self._batchers: dict[TopicPartition, Batcher] = {}
        self._taken: dict[TopicPartition, int] = {}
        #: First attempts in flight, over all partitions.
        self._window = _Window(endpoint.max_concurrency)

    # --- the consumer loop ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        topics = [*source_topics(self.endpoint), *self.tier_topics]
        self.consumer.subscribe(topics, listener=Rebalance(self))
        committer = asyncio.create_task(self._commit_periodically())
        try:
            await self.consumer.start()
            _log.info("endpoint_started", endpoint=self.name, group=self.group)
            while not stop.is_set():
                batch = await self._poll()
                for tp, records in batch.items():
                    if records:
                        if tp.topic in self.tiers:
                            mine = [
                                r.offset
                                for r in records
                                if RetryState.endpoint_of(r.headers) == self.name
                            ]
                            self.backlog.fetched(tp, mine, records[-1].offset)
                        self._tasks[tp] = asyncio.create_task(self._drain(tp, records))
                self._flush_due()
                self._raise_failed_tasks()
        finally:
            await self._shutdown(committer)

    async def _poll(self) -> dict[TopicPartition, list[Any]]:
        """Records of the partitions without a task, for up to :data:`POLL_MS`; returns
        early (maybe with nothing) when a task finishes, so its partition is polled again
        without waiting out the poll."""
        self._freed.clear()
        assigned = self.consumer.assignment()
        idle = [tp for tp in assigned if tp not in self._tasks]
        if assigned and not idle:  # every partition in hand: wait for one to be free
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), POLL_MS / 1000)
            return {}
        # No partition named (nothing assigned yet) polls them all, as before.
        fetch = asyncio.ensure_future(
            self.consumer.getmany(*idle, timeout_ms=POLL_MS, max_records=self.settings.max_batch)
        )
        freed = asyncio.ensure_future(self._freed.wait())
        try:
            await asyncio.wait({fetch, freed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            freed.cancel()
            if not fetch.done():
                # getmany takes records only after its last wait: cancelled, it took none.
                fetch.cancel()
                await asyncio.wait({fetch})
        if fetch.cancelled():
            return {}
        records: dict[TopicPartition, list[Any]] = fetch.result()
        return records

    def _raise_failed_tasks(self) -> None:
        for tp, task in list(self._tasks.items()):
            if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                del self._tasks[tp]
                raise exc

    async def _drain(self, tp: TopicPartition, records: list[Any]) -> None:
        """Handle ``records`` (one partition), then commit and fetch more."""
        batching = self.endpoint.batch is not None and tp.topic == str(Topic.RECORDS)
        if not batching and tp.topic not in self.tiers:
            if await self._handle_devices(tp, records):
                await self._resume(tp)
            return
        for record in records:
            if batching:
                if not await self._collect(tp, record):
                    return
                self._taken[tp] = record.offset + 1
                self._finished[tp] = self._watermark(tp)
            else:
                if not await self._handle(record):
                    return  # stopping: commit nothing past what was finished
                self._finished[tp] = record.offset + 1
        if batching and not await self._send_due(tp):
            return
        await self._resume(tp)

    async def _handle_devices(self, tp: TopicPartition, records: list[Any]) -> bool:
        """New events of one partition: each device's (Kafka key's) in order, devices side by
        side (requests in flight as :class:`_Window` allows). The partition's offset moves
        only over events that are finished; False if stopped first."""
        chains: dict[bytes | None, list[Any]] = {}
        for record in records:
            chains.setdefault(record.key, []).append(record)
        queue = list(chains.values())
        queue.reverse()  # popped from the end: the partition's order of first appearance
        finished: set[int] = set()
        position = 0

        async def worker() -> bool:
            nonlocal position
            while queue:
                for record in queue.pop():
                    if self._stop.is_set():
                        return False
                    if not await self._handle(record):
                        return False  # stopping: commit nothing past what was finished
                    finished.add(record.offset)
                    if record.offset == records[position].offset:
                        while position < len(records) and records[position].offset in finished:
                            position += 1
                        self._finished[tp] = records[position - 1].offset + 1
            return True

        if len(queue) == 1:
            return await worker()
        workers = [
            asyncio.create_task(worker())
            for _ in range(min(len(queue), self.endpoint.max_concurrency))
        ]
        try:
            return all(await asyncio.gather(*workers))
        finally:
            for task in workers:
                task.cancel()

    async def _resume(self, tp: TopicPartition) -> None:
        """The partition's records are finished: commit, and let the main loop poll it."""
        await self._commit()
        if self._tasks.get(tp) is asyncio.current_task():
            del self._tasks[tp]
            self._freed.set()

    # --- batches (endpoints with ``batch``) ------------------------------------------------

    def _watermark(self, tp: TopicPartition) -> int:
        """Where the partition's offsets may be committed: past what was taken, but not past
        the first record of an open batch."""
        taken = self._taken[tp]
        held = self._batchers[tp].low_water() if tp in self._batchers else None
        return taken if held is None else min(held, taken)

    async def _collect(self, tp: TopicPartition, record: Any) -> bool:
        """Put a record into its device's batch; send the batch if that fills it."""
        event = self._decode(record)
        if event is None or not self._accepts(event):
            return True
        if not isinstance(event, TelemetryRecord):  # format oem: records only
            return True
        batch = self.endpoint.batch
        assert batch is not None
        batcher = self._batchers.get(tp)
        if batcher is None:
            batcher = self._batchers[tp] = Batcher(batch.max_records, batch.max_wait_seconds)
        source = f"{record.topic}/{record.partition}/{record.offset}"
        kafka_time = record.timestamp / 1000 if record.timestamp is not None else None
        full = batcher.add(record.offset, event, source, time.monotonic(), kafka_time)
        if full is None:
            return True
        return await self._send_batch(full)

    async def _send_due(self, tp: TopicPartition) -> bool:
        """Send the partition's batches that waited long enough; False if stopped first."""
        batcher = self._batchers.get(tp)
        if batcher is None:
            return True
        ready = batcher.due(time.monotonic())
        for batch in ready:  # out of the batcher: the watermark moves only once all are sent
            if not await self._send_batch(batch):
                return False
        if ready and tp in self._taken:
            self._finished[tp] = self._watermark(tp)
        return True

    def _flush_due(self) -> None:
        """From the main loop: a partition with batches due and no task in hand gets one."""
        now = time.monotonic()
        for tp, batcher in self._batchers.items():
            deadline = batcher.next_deadline()
            if deadline is None or deadline > now or tp in self._tasks:
                continue
            if tp in self.consumer.assignment():
                self._tasks[tp] = asyncio.create_task(self._flush(tp))

    async def _flush(self, tp: TopicPartition) -> None:
        if await self._send_due(tp):
            await self._resume(tp)

    async def _send_batch(self, open_batch: OpenBatch) -> bool:
        batch = open_batch.batch()
        state = RetryState(
            endpoint=self.name,
            attempts=0,
            first_attempt=time.time(),
            source=batch.sources[0],
            source_time=open_batch.source_time,
        )
        value = encode(batch)
        permit = self.breaker.acquire()
        if permit is None:
            state = replace(state, last_error="not attempted: circuit breaker open")
            return await self._later(batch, value, state, None, None)
        return await self._attempt(batch, value, state, None, permit)

    async def _handle(self, record: Any) -> bool:
        """Finish one record; False if stopped first (then it is not committed)."""
        tier = self.tiers.get(record.topic)
        if tier is None:
            return await self._first(record)
        if RetryState.endpoint_of(record.headers) != self.name:
            return True  # another endpoint's retry
        tp = TopicPartition(record.topic, record.partition)
        if await self._retry(record, tier):
            self.backlog.done(tp)
            return True
        return False

    # --- what happens to an event ----------------------------------------------------------

    def _decode(self, record: Any) -> Deliverable | None:
        try:
            event = decode_event(record.value)
        except (ValidationError, ValueError):
            # Nothing to POST: a newer event type (additive contract change) or garbage.
            metrics.skipped.labels(self.name).inc()
            _log.error(
                "record_skipped",
                endpoint=self.name,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=why_not_an_event(record.value),
            )
            return None
        return event

    def _accepts(self, event: Deliverable) -> bool:
        if accepts(self.endpoint, event):
            return True
        metrics.filtered.labels(self.name).inc()
        return False

    async def _first(self, record: Any) -> bool:
        event = self._decode(record)
        if event is None or not self._accepts(event):
            return True
        state = RetryState(
            endpoint=self.name,
            attempts=0,
            first_attempt=time.time(),
            source=f"{record.topic}/{record.partition}/{record.offset}",
            source_time=record.timestamp / 1000 if record.timestamp is not None else None,
        )
        await self._window.acquire()
        permit = self.breaker.acquire()
        if permit is None:  # open: no request, straight to the first retry step
            self._window.release()
            state = replace(state, last_error="not attempted: circuit breaker open")
            return await self._later(event, record.value, state, None, None)
        try:
            return await self._attempt(event, record.value, state, None, permit)
        finally:
            self._window.release()

    async def _retry(self, record: Any, tier: int) -> bool:
        state = RetryState.from_headers(record.headers)
        event = self._decode(record)
        if state is None or event is None:
            if state is None:
                _log.error("retry_record_unreadable", endpoint=self.name, offset=record.offset)
            return True
        if not await sleep_unless_stopped(self._stop, state.due - time.time()):
            return False
        if not self._accepts(event):  # the filter changed since it was queued
            return True
        expires = state.first_attempt + self.schedule.max_age
        deadline = time.monotonic() + (expires - time.time())
        permit = await self.breaker.wait(self._stop, deadline)
        if permit is None:
            if self._stop.is_set():
                return False
            return await self._dead_letter(event, state, "expired")
        return await self._attempt(event, record.value, state, tier, permit)

    async def _attempt(
        self,
        event: Deliverable,
        value: bytes,
        state: RetryState,
        tier: int | None,
        permit: Permit,
    ) -> bool:
        try:
            try:
                body = render(self.endpoint, event, self.presigner)
            except ValueError as exc:  # the event's own fault, e.g. a bucket name S3 refuses
                self.breaker.release(permit)
                return await self._dead_letter(event, state, "invalid", f"no webhook body: {exc}")
            attempt = await self.client.post(
                body, event.event_id, event.imei, dynamic_fields(event)
            )
        except BaseException:
            self.breaker.release(permit)
            raise
        self.breaker.record(permit, attempt.alive)
        self._window.learn(attempt.alive)
        now = time.time()
        self._observe(event, state, attempt, now, probe=permit.probe)
        if attempt.verdict is Verdict.DELIVERED:
            return True
        if attempt.verdict is Verdict.REFUSED:
            return await self._dead_letter(
                event, replace(state, last_error=attempt.error), "refused"
            )
        state = state.failed(attempt.status, attempt.error, now)
        if attempt.verdict is Verdict.REJECT:
            return await self._dead_letter(event, state, "rejected")
        return await self._later(event, value, state, tier, attempt.retry_after)

    def _observe(
        self,
        event: Deliverable,
        state: RetryState,
        attempt: Attempt,
        now: float,
        probe: bool,
    ) -> None:
        self._m_deliveries[attempt.verdict].inc()
        if attempt.verdict is Verdict.DELIVERED:
            self._m_seconds.observe(attempt.seconds)
            self._m_last_success.set(now)
            if state.source_time is not None:
                self._m_age.observe(max(0.0, now - state.source_time))
            # One line per delivery: built only when it is written (level info).
            if not _info_enabled():
                return
        fields: dict[str, Any] = {
            "endpoint": self.name,
            "event_id": event.event_id,
            "event_type": event.type,
            "imei": event.imei,
            "attempt": state.attempts + 1,
            "status": attempt.status,
            "duration_ms": round(attempt.seconds * 1000, 1),
        }
        if probe:
            fields["probe"] = True
        if isinstance(event, RecordBatch):
            fields["records"] = len(event.records)
        if attempt.verdict is Verdict.REFUSED:
            _log.error("delivery_refused", **fields, error=attempt.error)
        elif attempt.verdict is Verdict.DELIVERED:
            _log.info("delivered", **fields)
        else:
            self._m_seconds.observe(attempt.seconds)
            _log.warning("delivery_failed", **fields, error=attempt.error)

    async def _later(
        self,
        event: Deliverable,
        value: bytes,
        state: RetryState,
        tier: int | None,
        retry_after: float | None,
    ) -> bool:
        """Into the next retry topic, or the dead letters if that would be too late."""
        now = time.time()
        step = next_step(self.schedule, state, tier, now, retry_after)
        if isinstance(step, DeadLetterNow):
            return await self._dead_letter(event, state, step.reason)
        topic = self.tier_topics[step.tier]
        queued = replace(state, due=step.due, queued_by=INSTANCE)
        meta = await self.publisher.send(
            topic,
            f"{self.name}/{event.imei}".encode(),
            value,
            self._stop,
            headers=queued.headers(),
        )
        if meta is None:
            return False
        tp = TopicPartition(topic, meta.partition)
        self.backlog.written(tp, meta.offset, tp in self.consumer.assignment())
        metrics.retries.labels(self.name).inc()
        _log.info(
            "retry_scheduled",
            endpoint=self.name,
            event_id=event.event_id,
            attempts=state.attempts,
            topic=topic,
            retry_in=round(step.due - now, 3),
        )
        return True

    async def _dead_letter(
        self,
        event: Deliverable,
        state: RetryState,
        reason: str,
        error: str | None = None,
    ) -> bool:
        """Into the dead-letter topic; a batch as one dead letter per record (each with the
        record's own id and source), so a replay can send them again."""
        if isinstance(event, RecordBatch):
            parts: list[tuple[Deliverable, str | None]] = list(
                itertools.zip_longest(event.records, event.sources[: len(event.records)])
            )
        else:
            parts = [(event, state.source)]
        for part, source in parts:
            letter = DeadLetter(
                endpoint=self.name,
                event_id=part.event_id,
                reason=reason,
                attempts=state.attempts,
                first_attempt_at=datetime.fromtimestamp(state.first_attempt, UTC),
                last_attempt_at=utc(state.last_attempt),
                last_status=state.last_status,
                last_error=error or state.last_error,
                dead_lettered_at=datetime.now(UTC),
                source=source,
                event=part,
            )
            meta = await self.publisher.send(
                str(Topic.DEADLETTER), self.name.encode(), encode(letter), self._stop
            )
            if meta is None:
                return False
            metrics.dead_letters.labels(self.name).inc()
        _log.error(
            "dead_lettered",
            endpoint=self.name,
            event_id=event.event_id,
            reason=reason,
            attempts=state.attempts,
            records=len(parts),
            last_status=state.last_status,
            last_error=error or state.last_error,
        )
        return True

    # --- offsets ---------------------------------------------------------------------------

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        async with self._commit_lock:
            await self._commit_now(only)

    async def _commit_now(self, only: set[TopicPartition] | None = None) -> None:
        assigned = self.consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in self._finished.items()
            if tp in assigned and (only is None or tp in only)
        }
        await commit_new(self.consumer, self.name, offsets, self._committed)

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL)
            await self._commit()

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        """Partitions go to another replica: abandon their work, commit what was finished."""
        tasks = [task for tp in revoked if (task := self._tasks.pop(tp, None)) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Not under the commit lock: a periodic commit may be waiting on this very rebalance.
        await self._commit_now(revoked)
        self.backlog.forget(revoked)
        for tp in revoked:
            # Open batches are abandoned uncommitted: the partition's next owner reads them.
            self._batchers.pop(tp, None)
            self._taken.pop(tp, None)
            self._finished.pop(tp, None)
            self._committed.pop(tp, None)
        if revoked:
            _log.info(
                "partitions_revoked",
                endpoint=self.name,
                partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in revoked),
            )

    async def _shutdown(self, committer: asyncio.Task[None]) -> None:
        """Let in-flight POSTs finish for the grace period, commit what was finished, leave."""
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        try:
            await self._commit()
        finally:
            self.backlog.reset()
            await self.consumer.stop()
            await self.client.aclose()
            _log.info("endpoint_stopped", endpoint=self.name)


async def ensure_topics(settings: ConnectorSettings, config: ConnectorConfig) -> None:
    """Create the retry, dead-letter and replay topics that do not exist yet."""
    wanted = [*config.retry.topics, str(Topic.DEADLETTER), str(Topic.REPLAYS)]
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name, settings.connector_topic_partitions, settings.connector_topic_replication
            )
            for name in wanted
            if name not in existing
        ]
        if new:
            await admin.create_topics(new)
            _log.info("topics_created", topics=[t.name for t in new])
    finally:
        await admin.close()


async def serve(settings: ConnectorSettings, config: ConnectorConfig, stop: asyncio.Event) -> None:
    """Deliver to every enabled endpoint until ``stop`` is set; one failing worker stops all."""
    endpoints = config.enabled
    if not endpoints:
        _log.warning("no_enabled_endpoints")
        await stop.wait()
        return
    if settings.connector_create_topics:
        await ensure_topics(settings, config)
    presigner = Presigner(settings)
    if not (settings.s3_access_key and settings.s3_secret_key.get_secret_value()):
        _log.warning("no_s3_credentials", note="download URLs are unsigned: public buckets only")
    publisher = Publisher(settings)
    await publisher.start()
    try:
        workers = [
            ForwardWorker(e, settings, config, publisher)
            if e.forwards  # raw TCP forwarding (url tcp://, format dmt)
            else EndpointWorker(e, settings, config, presigner, publisher)
            for e in endpoints
        ]
        tasks = [asyncio.create_task(w.run(stop), name=f"endpoint-{w.name}") for w in workers]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await publisher.stop()
    for result in results:
        if isinstance(result, BaseException):
            raise result

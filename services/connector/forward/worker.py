"""The Kafka side of raw TCP forwarding: one consumer group per endpoint on
``fleetgate.dmt.raw.v1``, offsets committed only for what the server committed (or parked).

Each fetched batch splits into per-device runs (:func:`.plan.runs`). Every device has a chain
of its runs, each starting when the one before it is done, so its records reach the server
in the order it sent them; devices are independent of each other (at most
``max_concurrency`` connections at once), so a device the server keeps refusing holds back
no other. A partition's offset is committed (every second, on revocation and at shutdown)
up to its oldest record not finished yet (:class:`.plan.Offsets`); a partition is paused
while :data:`MAX_AHEAD` of its offsets are in hand, which bounds how far the others run
ahead of a stuck device.

A failed session is retried in place, not through the retry topics (that would break the
order per device): after the delay of the next step of the retry schedule (with jitter), the
remaining records of the run go again, until ``max_age`` after the first attempt; then they are
dead-lettered and the device moves on. The endpoint's circuit breaker gates every connection:
while it is open nobody connects, then one session probes. A destination that resolves to a
private address is refused: dead letters at once. Decisions are :mod:`..retry`'s and
:mod:`..protection`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import DeadLetter, Topic, encode
from dmtproto import DmtDevice
from runtime.kafka import consumer_kwargs

from .. import metrics as connector_metrics
from ..config import ConnectorConfig, Endpoint
from ..group import Rebalance, commit_new, sleep_unless_stopped
from ..protection import CircuitBreaker
from ..retry import DeadLetterNow, RetryState, Schedule, next_step, utc
from ..settings import ConnectorSettings
from . import metrics
from .plan import DeviceRun, Item, Offsets, Target, Unusable, hello_of, read_item, runs
from .session import Outcome, forward

__all__ = ["DeadLetterSink", "ForwardWorker"]

_log = structlog.get_logger("fleetgate.connector.forward")

#: How long the main loop waits for records before looking at ``stop`` again.
POLL_MS = 200
#: What was finished is committed this often.
COMMIT_INTERVAL = 1.0
#: A partition is paused while this many of its offsets are in hand, counted from its oldest
#: unfinished record (one device waiting for the server lets the others run this far ahead).
MAX_AHEAD = 20_000


class DeadLetterSink(Protocol):
    """Where dead letters go: the connector's publisher (acknowledged writes)."""

    async def send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        stop: asyncio.Event,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any: ...


class ForwardWorker:
    """Forwards every device's records to one ``tcp://`` endpoint until ``stop`` is set."""

    def __init__(
        self,
        endpoint: Endpoint,
        settings: ConnectorSettings,
        config: ConnectorConfig,
        publisher: DeadLetterSink,
    ) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.settings = settings
        self.publisher = publisher
        self.target = Target.of(endpoint.url)
        self.schedule = Schedule.of(config.retry)
        for init in (connector_metrics.init, metrics.init):
            init(endpoint.name)
        self.breaker = CircuitBreaker(
            endpoint.name,
            endpoint.circuit_breaker.failures,
            endpoint.circuit_breaker.open_seconds,
        )
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
        self._connections = asyncio.Semaphore(endpoint.max_concurrency)
        #: The last HELLO read per device, for records without the ``fg-hello`` header.
        self._hellos: dict[str, bytes] = {}
        #: Per partition: its offsets in hand, and the tasks forwarding its runs.
        self._offsets: dict[TopicPartition, Offsets] = {}
        self._tasks: dict[TopicPartition, set[asyncio.Task[bool]]] = {}
        #: Per device: the task of its latest run (the next one waits for it).
        self._chains: dict[str, asyncio.Task[bool]] = {}
        self._paused: set[TopicPartition] = set()
        self._failure: BaseException | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()

    # --- the consumer loop -------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self.consumer.subscribe([str(Topic.DMT_RAW)], listener=Rebalance(self))
        committer = asyncio.create_task(self._commit_periodically())
        try:
            await self.consumer.start()
            _log.info(
                "endpoint_started", endpoint=self.name, group=self.group, target=str(self.target)
            )
            while not stop.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=POLL_MS, max_records=self.settings.max_batch
                )
                for tp, records in batch.items():
                    if records:
                        self._take(tp, records)
                if self._failure is not None:
                    raise self._failure
        finally:
            await self._shutdown(committer)

    def _take(self, tp: TopicPartition, records: list[Any]) -> None:
        """Start forwarding one partition's batch: each device's runs after its earlier ones."""
        offsets = self._offsets.setdefault(tp, Offsets())
        offsets.add(record.offset for record in records)
        items: list[Item] = []
        nothing_to_send: list[int] = []
        for record in records:
            item = self._read(record)
            if item is None:
                nothing_to_send.append(record.offset)
            else:
                items.append(item)
        offsets.finish(nothing_to_send)
        for device_runs in runs(items).values():
            for run in device_runs:
                previous = self._chains.get(run.imei)
                task = asyncio.create_task(self._after(previous, tp, run))
                self._chains[run.imei] = task
                self._tasks.setdefault(tp, set()).add(task)
                task.add_done_callback(functools.partial(self._ended, tp, run.imei))
        if len(offsets) >= MAX_AHEAD:
            self.consumer.pause(tp)
            self._paused.add(tp)

    def _ended(self, tp: TopicPartition, imei: str, task: asyncio.Task[bool]) -> None:
        self._tasks.get(tp, set()).discard(task)
        if self._chains.get(imei) is task:
            del self._chains[imei]
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._failure = self._failure or exc

    async def _after(
        self, previous: asyncio.Task[bool] | None, tp: TopicPartition, run: DeviceRun
    ) -> bool:
        """Forward ``run`` once the device's run before it is done; False if stopped."""
        if previous is not None and not await previous:
            return False
        if not await self._forward(run):
            return False
        offsets = self._offsets.get(tp)
        if offsets is not None:  # None: revoked meanwhile
            offsets.finish(run.offsets)
            if (
                tp in self._paused
                and len(offsets) < MAX_AHEAD // 2
                and not self._stop.is_set()
                and tp in self.consumer.assignment()
            ):
                self.consumer.resume(tp)
                self._paused.discard(tp)
        return True

    def _read(self, record: Any) -> Item | None:
        source = f"{record.topic}/{record.partition}/{record.offset}"
        try:
            item = read_item(
                record.key, record.value, record.headers, source, self._hellos, record.offset
            )
        except Unusable as exc:
            connector_metrics.skipped.labels(self.name).inc()
            _log.error("record_skipped", endpoint=self.name, source=source, reason=str(exc))
            return None
        if item is not None and not self.endpoint.accepts("record", item.imei, None, None):
            connector_metrics.filtered.labels(self.name).inc()
            return None
        return item

    # --- one run: attempts, retries, dead letters ----------------------------------------

    async def _forward(self, run: DeviceRun) -> bool:
        """Until the server committed the run's records or they are dead-lettered; False if
        stopped first."""
        device = DmtDevice(hello_of(run.hello), hello_message=run.hello)
        state = RetryState(endpoint=self.name, attempts=0, first_attempt=time.time())
        tier: int | None = None
        expires = time.monotonic() + self.schedule.max_age
        while True:
            permit = await self.breaker.wait(self._stop, expires)
            if permit is None:
                if self._stop.is_set():
                    return False
                last = "not attempted: circuit breaker open"
                return await self._dead_letter(run, replace(state, last_error=last), "expired")
            device.pending = [item.record for item in run.items]
            try:
                async with self._connections:
                    gauge = metrics.connections.labels(self.name)
                    gauge.inc()
                    try:
                        outcome = await forward(
                            self.target,
                            device,
                            wait_seconds=self.endpoint.timeout_seconds,
                            allow_private=self.endpoint.allow_private_network,
                        )
                    finally:
                        gauge.dec()
            except BaseException:
                self.breaker.release(permit)
                raise
            self.breaker.record(permit, outcome.alive)
            del run.items[: outcome.committed]
            now = time.time()
            self._observe(run, state, outcome, now, permit.probe)
            if not run.items:
                return True
            if outcome.refused:
                return await self._dead_letter(
                    run, replace(state, last_error=outcome.error), "refused"
                )
            state = state.failed(None, outcome.error, now)
            step = next_step(self.schedule, state, tier, now)
            if isinstance(step, DeadLetterNow):
                return await self._dead_letter(run, state, step.reason)
            tier = step.tier
            connector_metrics.retries.labels(self.name).inc()
            if not await sleep_unless_stopped(self._stop, step.due - time.time()):
                return False

    def _observe(
        self, run: DeviceRun, state: RetryState, outcome: Outcome, now: float, probe: bool
    ) -> None:
        """Metrics and the one log line of a forwarding session."""
        result = "refused" if outcome.refused else "success" if outcome.ok else "failure"
        metrics.sessions.labels(self.name, result).inc()
        metrics.records.labels(self.name).inc(outcome.committed)
        metrics.sent_bytes.labels(self.name).inc(outcome.sent_bytes)
        metrics.session_seconds.labels(self.name).observe(outcome.seconds)
        fields: dict[str, Any] = {
            "endpoint": self.name,
            "imei": run.imei,
            "target": str(self.target),
            "attempt": state.attempts + 1,
            "result": result,
            "committed": outcome.committed,
            "commits": outcome.commits,
            "remaining": len(run.items),
            "sent_bytes": outcome.sent_bytes,
            "duration_ms": round(outcome.seconds * 1000, 1),
        }
        if probe:
            fields["probe"] = True
        if outcome.ok:
            connector_metrics.last_success.labels(self.name).set(now)
            _log.info("forward_session", **fields)
        elif outcome.refused:
            _log.error("forward_session", **fields, error=outcome.error)
        else:
            _log.warning("forward_session", **fields, error=outcome.error)

    async def _dead_letter(self, run: DeviceRun, state: RetryState, reason: str) -> bool:
        """Park the run's remaining records, each with its bytes; False if stopped first."""
        now = datetime.now(UTC)
        while run.items:
            item = run.items[0]
            letter = DeadLetter(
                endpoint=self.name,
                event_id=item.record_id,
                reason=reason,
                attempts=state.attempts,
                first_attempt_at=datetime.fromtimestamp(state.first_attempt, UTC),
                last_attempt_at=utc(state.last_attempt),
                last_error=state.last_error,
                dead_lettered_at=now,
                source=item.source,
                event=item.telemetry(),
                raw_hex=item.message.hex(),
                hello_hex=item.hello.hex(),
            )
            meta = await self.publisher.send(
                str(Topic.DEADLETTER), self.name.encode(), encode(letter), self._stop
            )
            if meta is None:
                return False
            run.items.pop(0)
            connector_metrics.dead_letters.labels(self.name).inc()
            _log.error(
                "dead_lettered",
                endpoint=self.name,
                event_id=item.record_id,
                imei=item.imei,
                sequence=item.record.sequence,
                reason=reason,
                attempts=state.attempts,
                last_error=state.last_error,
            )
        return True

    # --- offsets -----------------------------------------------------------------------

    async def _commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        async with self._commit_lock:
            await self._commit_now(only)

    async def _commit_now(self, only: Iterable[TopicPartition] | None = None) -> None:
        assigned = self.consumer.assignment()
        wanted = None if only is None else set(only)
        offsets = {
            tp: done.committable
            for tp, done in self._offsets.items()
            if done.committable is not None and tp in assigned and (wanted is None or tp in wanted)
        }
        await commit_new(self.consumer, self.name, offsets, self._committed)

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL)
            await self._commit()

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        """Partitions go to another replica: abandon their work, commit what was finished."""
        tasks = [task for tp in revoked for task in self._tasks.pop(tp, set())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Not under the commit lock: a periodic commit may be waiting on this very rebalance.
        await self._commit_now(revoked)
        for tp in revoked:
            self._offsets.pop(tp, None)
            self._committed.pop(tp, None)
            self._paused.discard(tp)

    async def _shutdown(self, committer: asyncio.Task[None]) -> None:
        """Let sessions in flight finish for the grace period, commit what was done, leave."""
        tasks = [task for group in self._tasks.values() for task in group]
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
            await self.consumer.stop()
            _log.info("endpoint_stopped", endpoint=self.name)

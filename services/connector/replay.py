"""``fleetgate connector replay``: deliver dead letters, or every event since a time, again.

The events go straight to the endpoint (no retry topics), signed and with the same
``webhook-id`` as the first time, with a few retries of their own. Each outcome is written to
``fleetgate.connector.replays.v1``; a later ``--dead-letters`` replay passes over the dead
letters that an earlier one delivered, so running it twice does not send them twice.

Topics are read from the beginning to their high watermark as the fetch answers report it
(Tansu's ListOffsets by time or "latest" cannot be trusted), and ``--since`` compares each
record's Kafka timestamp: when the event entered ``fleetgate.files.v1``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from contracts import (
    DeadLetter,
    ReplayOutcome,
    Topic,
    encode,
)
from contracts.records import TelemetryRecord
from runtime.kafka import consumer_kwargs, partitions_of, producer_kwargs

from .batch import RecordBatch
from .config import ConnectorConfig, Endpoint
from .delivery import Attempt, EndpointClient, Verdict
from .events import Deliverable, accepts, decode_event, dynamic_fields, render, source_topics
from .presign import Presigner
from .retry import Schedule
from .settings import ConnectorSettings

__all__ = ["ReplayReport", "replay", "scan"]

_log = structlog.get_logger("fleetgate.connector.replay")

#: A replay never waits longer than this between two attempts of one event.
MAX_WAIT = 30.0
#: A partition whose end is still unknown after this long without records is taken as read.
IDLE_SECONDS = 5.0


@dataclass
class ReplayReport:
    endpoint: str
    mode: Literal["dead-letters", "since"]
    delivered: int = 0
    failed: int = 0
    #: Dead letters an earlier replay delivered (or repeats of one in this replay).
    already: int = 0
    #: Events the endpoint's filter leaves out (``--since``).
    filtered: int = 0
    #: Records that are no file event.
    skipped: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def summary(self) -> str:
        what = "dead letters" if self.mode == "dead-letters" else "events"
        text = (
            f"replay of {what} to {self.endpoint}: {self.delivered} delivered, {self.failed} failed"
        )
        if self.mode == "dead-letters":
            text += f", {self.already} already delivered by an earlier replay"
        else:
            text += f", {self.filtered} left out by the endpoint's filter"
        if self.skipped:
            text += f", {self.skipped} unreadable records skipped"
        return text


async def scan(settings: ConnectorSettings, topic: str) -> AsyncIterator[Any]:
    """Every record of ``topic``, partition by partition interleaved, up to its current end."""
    consumer = AIOKafkaConsumer(
        **consumer_kwargs(settings),
        client_id="fleetgate-connector-replay",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = set(tps)
        idle_since = time.monotonic()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=200, max_records=1000)
            for records in batch.values():
                for record in records:
                    yield record
            if any(batch.values()):
                idle_since = time.monotonic()
            for tp in list(remaining):
                end = consumer.highwater(tp)
                if end is not None and await consumer.position(tp) >= end:
                    remaining.discard(tp)
            if remaining and time.monotonic() - idle_since > IDLE_SECONDS:
                _log.warning(
                    "end_unknown",
                    topic=topic,
                    partitions=sorted(tp.partition for tp in remaining),
                    note=f"nothing new for {IDLE_SECONDS:g} s: taken as the end",
                )
                break
    finally:
        await consumer.stop()


async def _deliver(
    client: EndpointClient,
    presigner: Presigner,
    event: Deliverable,
    attempts: int,
    schedule: Schedule,
) -> tuple[Attempt | None, int, str | None]:
    """Up to ``attempts`` POSTs; (last attempt, POSTs made, error if no webhook body)."""
    attempt: Attempt | None = None
    for n in range(1, attempts + 1):
        try:
            body = render(client.endpoint, event, presigner)
        except ValueError as exc:
            return None, n - 1, f"no webhook body: {exc}"
        attempt = await client.post(body, event.event_id, event.imei, dynamic_fields(event))
        if attempt.verdict is not Verdict.RETRY or n == attempts:
            return attempt, n, None
        wait = min(schedule.delays[min(n - 1, schedule.last)], MAX_WAIT)
        if attempt.retry_after is not None:
            wait = max(wait, min(attempt.retry_after, 2 * MAX_WAIT))
        _log.warning(
            "replay_attempt_failed",
            endpoint=client.name,
            event_id=event.event_id,
            attempt=n,
            error=attempt.error,
            retry_in=round(wait, 3),
        )
        await asyncio.sleep(wait)
    return attempt, attempts, None


class _Replayer:
    def __init__(
        self,
        settings: ConnectorSettings,
        config: ConnectorConfig,
        endpoint: Endpoint,
        report: ReplayReport,
        attempts: int,
        client: EndpointClient,
        producer: AIOKafkaProducer,
    ) -> None:
        self.report = report
        self.endpoint = endpoint
        self.attempts = attempts
        self.schedule = Schedule.of(config.retry)
        self.presigner = Presigner(settings)
        self.client = client
        self.producer = producer
        self.slots = asyncio.Semaphore(2 * endpoint.max_concurrency)
        self.tasks: set[asyncio.Task[None]] = set()

    async def submit(self, event: Deliverable, dead_letter: str | None) -> None:
        """Deliver in the background, at most twice the endpoint's concurrency in hand."""
        await self.slots.acquire()
        task = asyncio.create_task(self._one(event, dead_letter))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def finish(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))

    async def _one(self, event: Deliverable, dead_letter: str | None) -> None:
        try:
            attempt, made, error = await _deliver(
                self.client, self.presigner, event, self.attempts, self.schedule
            )
            delivered = attempt is not None and attempt.verdict is Verdict.DELIVERED
            if attempt is not None and not delivered:
                error = attempt.error
            # A batch's outcome is written per record: dead letters are per record.
            ids = (
                [r.event_id for r in event.records]
                if isinstance(event, RecordBatch)
                else [event.event_id]
            )
            for event_id in ids:
                outcome = ReplayOutcome(
                    endpoint=self.endpoint.name,
                    event_id=event_id,
                    mode=self.report.mode,
                    delivered=delivered,
                    attempts=made,
                    status=None if attempt is None else attempt.status,
                    error=error,
                    replayed_at=datetime.now(UTC),
                    dead_letter=dead_letter,
                )
                await self.producer.send_and_wait(
                    str(Topic.REPLAYS), encode(outcome), key=self.endpoint.name.encode()
                )
            if delivered:
                self.report.delivered += len(ids)
                _log.info(
                    "replayed",
                    endpoint=self.endpoint.name,
                    event_id=event.event_id,
                    events=len(ids),
                )
            else:
                self.report.failed += len(ids)
                self.report.failures.append(f"{event.event_id}: {error}")
                _log.error(
                    "replay_failed",
                    endpoint=self.endpoint.name,
                    event_id=event.event_id,
                    attempts=made,
                    error=error,
                )
        finally:
            self.slots.release()


async def replayed_before(settings: ConnectorSettings, endpoint: str) -> dict[str, datetime]:
    """event id -> when an earlier replay last delivered it to ``endpoint``."""
    delivered: dict[str, datetime] = {}
    async for record in scan(settings, str(Topic.REPLAYS)):
        try:
            outcome = ReplayOutcome.model_validate_json(record.value)
        except (ValidationError, ValueError):
            continue
        if outcome.endpoint == endpoint and outcome.delivered:
            seen = delivered.get(outcome.event_id)
            if seen is None or outcome.replayed_at > seen:
                delivered[outcome.event_id] = outcome.replayed_at
    return delivered


async def replay(
    settings: ConnectorSettings,
    config: ConnectorConfig,
    endpoint_name: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    attempts: int = 3,
    client: EndpointClient | None = None,
) -> ReplayReport:
    """Dead letters of ``endpoint_name`` (``since`` None), or every event of
    ``fleetgate.files.v1`` that arrived in [since, until), delivered to it again."""
    endpoint = config.endpoint(endpoint_name)
    if endpoint is None:
        raise KeyError(endpoint_name)
    mode: Literal["dead-letters", "since"] = "dead-letters" if since is None else "since"
    report = ReplayReport(endpoint_name, mode)
    producer = AIOKafkaProducer(**producer_kwargs(settings), client_id="fleetgate-connector-replay")
    own_client = client is None
    http = client or EndpointClient(endpoint)
    await producer.start()
    try:
        replayer = _Replayer(settings, config, endpoint, report, attempts, http, producer)
        if since is None:
            await _dead_letters(settings, endpoint, report, replayer)
        else:
            await _since(settings, endpoint, report, replayer, since, until)
        await replayer.finish()
    finally:
        await producer.stop()
        if own_client:
            await http.aclose()
    return report


async def _dead_letters(
    settings: ConnectorSettings, endpoint: Endpoint, report: ReplayReport, replayer: _Replayer
) -> None:
    earlier = await replayed_before(settings, endpoint.name)
    this_run: set[str] = set()
    batches = _Batches(endpoint, replayer, dead_letters=True)
    async for record in scan(settings, str(Topic.DEADLETTER)):
        if record.key is not None and record.key != endpoint.name.encode():
            continue
        try:
            letter = DeadLetter.model_validate_json(record.value)
        except (ValidationError, ValueError):
            report.skipped += 1
            continue
        if letter.endpoint != endpoint.name:
            continue
        done = earlier.get(letter.event_id)
        if letter.event_id in this_run or (done is not None and done >= letter.dead_lettered_at):
            report.already += 1
            continue
        this_run.add(letter.event_id)
        await batches.add(letter.event, f"{record.partition}/{record.offset}")
    await batches.flush()


class _Batches:
    """For an endpoint with ``batch``: records replayed in batches of one device again."""

    def __init__(self, endpoint: Endpoint, replayer: _Replayer, dead_letters: bool) -> None:
        #: Whether ``where`` names a dead letter (for the replay outcome).
        self.dead_letters = dead_letters
        self.size = endpoint.batch.max_records if endpoint.batch is not None else 0
        self.replayer = replayer
        self.open: dict[str, tuple[list[TelemetryRecord], list[str | None]]] = {}

    async def add(self, event: Deliverable, where: str | None) -> None:
        where = where if self.dead_letters else None
        if self.size <= 1 or not isinstance(event, TelemetryRecord):
            await self.replayer.submit(event, where)
            return
        records, sources = self.open.setdefault(event.imei, ([], []))
        records.append(event)
        sources.append(where)
        if len(records) >= self.size:
            del self.open[event.imei]
            await self.replayer.submit(RecordBatch.of(records, sources), sources[0])

    async def flush(self) -> None:
        for records, sources in self.open.values():
            await self.replayer.submit(RecordBatch.of(records, sources), sources[0])
        self.open.clear()


async def _since(
    settings: ConnectorSettings,
    endpoint: Endpoint,
    report: ReplayReport,
    replayer: _Replayer,
    since: datetime,
    until: datetime | None,
) -> None:
    start = since.timestamp() * 1000
    end = None if until is None else until.timestamp() * 1000
    batches = _Batches(endpoint, replayer, dead_letters=False)
    for topic in source_topics(endpoint):
        async for record in scan(settings, topic):
            if record.timestamp < start or (end is not None and record.timestamp >= end):
                continue
            try:
                event = decode_event(record.value)
            except (ValidationError, ValueError):
                report.skipped += 1
                continue
            if not accepts(endpoint, event):
                report.filtered += 1
                continue
            await batches.add(event, f"{record.topic}/{record.partition}/{record.offset}")
    await batches.flush()

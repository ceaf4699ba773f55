"""The faust agent: chunk records in, files in S3 and ``fleetgate.files.v1`` events out.

One agent (concurrency 1) reads every assigned partition of ``fleetgate.camera.chunks.v1``
in order and hands each record to :class:`Assembler`. Acknowledgements are manual: a record
is acknowledged once it is handled, except the ``end`` record that completes a file, which is
acknowledged only after the file is in S3 and its event in Kafka (up to ``s3_concurrency``
files are stored in the background meanwhile). Acknowledgements reach faust in each
partition's record order (:class:`InOrderAcks`), so the committed offset never passes a file
not yet announced: a crash redelivers it, and the assembler, having lost its state, rewinds
and stores it again idempotently.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import faust
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP, EventT, StreamT

from contracts import FileFailed, FileStored, RecordKind, Topic, encode
from contracts.models import TransferStart
from runtime.kafka import client_kwargs

from . import keys, metrics
from .health import S3Watch
from .settings import AssemblerSettings
from .state import (
    Completed,
    Failed,
    Outcome,
    Reassembler,
    Record,
    RecordError,
    Rewind,
    Skipped,
    end_size,
)
from .storage import ObjectStore

__all__ = ["Assembler", "InOrderAcks", "Rewinder"]

_log = structlog.get_logger("fleetgate.assembler")
_T = TypeVar("_T")
Ack = Callable[[], Awaitable[Any]]
#: Attempts at a record whose handling raises unexpectedly, and the pause after each.
_ATTEMPTS = 3
_ATTEMPT_PAUSE = 0.2


class Rewinder:
    """Reads a partition of the chunk topic again, outside the consumer group."""

    def __init__(self, settings: AssemblerSettings) -> None:
        self._settings = settings
        self._consumer: Any = None
        #: Seconds without any record before a rewind gives up (and is retried).
        self.idle_timeout = 30.0

    async def _ensure(self) -> Any:
        if self._consumer is None:
            size = self._settings.max_record_bytes
            consumer = AIOKafkaConsumer(
                **client_kwargs(self._settings),
                client_id=f"{self._settings.app_id}-rewind",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=size,
                fetch_max_bytes=size,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def records(
        self, topic: str, partition: int, start: int, stop: int, key: bytes
    ) -> AsyncIterator[Any]:
        """Records of ``key`` at Kafka offsets ``start`` <= offset < ``stop``, in order."""
        consumer = await self._ensure()
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        position = start
        deadline = time.monotonic() + self.idle_timeout
        while position < stop:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=256)
            got = batch.get(tp, [])
            if not got:
                # Offsets without records (control batches, compaction) move the position.
                position = max(position, await consumer.position(tp))
                if position >= stop:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no record at {topic}[{partition}] offset {position}")
                continue
            deadline = time.monotonic() + self.idle_timeout
            for message in got:
                if message.offset >= stop:
                    position = stop
                    break
                position = message.offset + 1
                metrics.rewind_records.inc()
                if message.key == key:
                    yield message

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


class InOrderAcks:
    """Hands acknowledgements to faust in each partition's record order.

    faust commits up to the end of the first run of consecutive acknowledged offsets, but
    its check for a gap at the head of that run misses one unacknowledged record right at
    the committed offset (and any gap before the first commit). A record acknowledged out of
    order (a quick chunk record after an ``end`` record whose upload still runs) could then
    carry the commit past a file not yet stored. Holding each acknowledgement until every
    earlier record of its partition is acknowledged leaves faust no gap to miss.
    """

    def __init__(self, ack: Callable[[EventT[bytes]], Awaitable[Any]]) -> None:
        self._ack = ack
        self._queues: dict[TP, deque[list[Any]]] = defaultdict(deque)

    def track(self, event: EventT[bytes]) -> Ack:
        """Register ``event`` (in arrival order); return the callable that acknowledges it."""
        queue = self._queues[event.message.tp]
        entry: list[Any] = [event, False]
        queue.append(entry)

        async def ack() -> None:
            entry[1] = True
            while queue and queue[0][1]:
                await self._ack(queue.popleft()[0])

        return ack

    def pending(self, tp: TP) -> int:
        return len(self._queues[tp])


class Assembler:
    """Feeds records to the :class:`Reassembler`; stores, announces and rewinds."""

    def __init__(
        self,
        app: faust.App,
        settings: AssemblerSettings,
        store: ObjectStore,
        reassembler: Reassembler,
        rewinder: Rewinder,
        watch: S3Watch | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.store = store
        self.reassembler = reassembler
        self.rewinder = rewinder
        #: S3 requests in flight (the store's, when it has one).
        self.watch = watch or S3Watch(settings.s3_slow_seconds)
        self._s3_was_ready = True
        #: The transfer the agent is working on (never expired or dropped under its feet).
        self.busy: str | None = None
        self._slots = asyncio.Semaphore(settings.s3_concurrency)
        self._uploads: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        #: Transfers set aside because the spool was full (insertion order; for logging).
        self._aside: dict[str, None] = {}
        metrics.uploads_in_progress.set_function(lambda: len(self._uploads))
        metrics.transfers_in_progress.set_function(lambda: len(self.reassembler))
        metrics.spool_bytes.set_function(lambda: self.reassembler.spool_bytes)
        metrics.spool_quota_bytes.set(settings.spool_quota_bytes)
        metrics.s3_oldest_request_seconds.set_function(self.watch.oldest_age)
        metrics.s3_requests_in_flight.set_function(self.watch.in_flight)
        metrics.s3_ready.set_function(lambda: 1.0 if self.watch.ready() else 0.0)

    # Wiring -----------------------------------------------------------------------------

    def attach(self) -> None:
        """Register the agent, the expiry timer and the rebalance handler on the app."""
        topic = self.app.topic(Topic.CHUNKS, key_serializer="raw", value_serializer="raw")

        async def reassemble(stream: StreamT[bytes]) -> None:
            assert isinstance(stream, faust.Stream)
            manual = stream.noack()  # a record is acknowledged once it is done with
            acks = InOrderAcks(manual.ack)
            event: EventT[bytes]
            async for event in manual.events():
                await self.handle_safely(event.message, acks.track(event))

        self.app.agent(topic, name="assembler.reassemble")(reassemble)

        interval = max(1.0, min(30.0, self.settings.transfer_idle_seconds / 4))

        async def expire() -> None:
            self.expire()

        self.app.timer(interval, name="assembler.expire")(expire)
        # cast: mypy rejects any handler against mode's SignalHandlerT (VarArg + NamedArg).
        self.app.on_partitions_assigned.connect(cast(Any, self._on_assigned))

    async def _on_assigned(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Rebalanced: drop what this instance held of partitions it no longer reads."""
        assigned: set[TP] = args[0] if args else kwargs.get("assigned", set())
        mine = {tp.partition for tp in assigned if tp.topic == Topic.CHUNKS}
        gone = {t.partition for t in self.reassembler.transfers.values()} - mine
        dropped = self.reassembler.drop_partitions(gone - self._busy_partitions())
        if dropped:
            _log.info("transfers_dropped", reason="partition_revoked", transfers=len(dropped))

    def _busy_partitions(self) -> set[int]:
        busy = self.reassembler.transfers.get(self.busy or "")
        return set() if busy is None else {busy.partition}

    def check_s3(self, now: float | None = None) -> None:
        """Log S3 requests that have been in flight for ``s3_slow_seconds`` (once each), and
        changes of readiness."""
        watch = self.watch
        now = watch.clock() if now is None else now
        for slow in watch.newly_slow(now):
            metrics.s3_slow_requests.inc()
            _log.warning(
                "s3_slow",
                operation=slow.operation,
                in_flight_seconds=round(slow.age, 1),
                threshold_seconds=watch.slow_seconds,
                requests_in_flight=watch.in_flight(),
            )
        ready = watch.ready(now)
        if ready != self._s3_was_ready:
            self._s3_was_ready = ready
            if ready:
                _log.info("s3_ready")
            else:
                _log.warning("s3_not_ready", reason=watch.reason(now))

    def expire(self) -> None:
        now = time.monotonic()
        idle = self.settings.transfer_idle_seconds
        for transfer in self.reassembler.expire(idle, now, keep=self.busy):
            metrics.expired.inc()
            _log.info(
                "transfer_expired",
                transfer=transfer.transfer_id,
                imei=transfer.start.imei,
                held=transfer.expected,
                idle_seconds=round(now - transfer.touched),
            )

    # Records ----------------------------------------------------------------------------

    async def handle_safely(self, message: Any, ack: Ack | None = None) -> None:
        """:meth:`handle`, retried a few times if it raises (a bug, since S3 and Kafka errors
        are retried inside it); then the transfer fails rather than stall the partition.
        ``ack`` is awaited once the record is done with: at once, or after its file is
        stored."""
        error: Exception | None = None
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                if await self.handle(message, ack):
                    return  # the upload acknowledges the record
                error = None
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.internal_errors.inc()
                _log.exception(
                    "record_error",
                    partition=message.partition,
                    offset=message.offset,
                    attempt=attempt,
                )
                error = exc
                await asyncio.sleep(_ATTEMPT_PAUSE * attempt)
        if error is not None:
            tid = (message.key or b"").decode("ascii", "replace")
            try:
                outcome = self.reassembler.give_up(
                    tid, f"internal error: {error!r}", message.partition, message.offset
                )
                await self._conclude(outcome, None)
            except Exception:
                _log.exception("record_dropped", partition=message.partition, offset=message.offset)
        if ack is not None:
            await ack()

    async def handle(self, message: Any, ack: Ack | None = None) -> bool:
        """One record as faust (or aiokafka) delivered it. True when it completed a file:
        the upload then runs in the background and awaits ``ack`` once the file is stored."""
        taken = time.monotonic()
        try:
            record = Record.parse(
                message.key, message.value, message.headers, message.partition, message.offset
            )
        except RecordError as exc:
            metrics.records.labels("malformed").inc()
            tid = (message.key or b"").decode("ascii", "replace")
            _log.warning(
                "malformed_record",
                transfer=tid,
                partition=message.partition,
                offset=message.offset,
                error=str(exc),
            )
            outcome = self.reassembler.malformed(tid, str(exc), message.partition, message.offset)
            return await self._conclude(outcome, ack)
        metrics.records.labels(record.kind.value).inc()
        if record.kind is RecordKind.CHUNK and self._growth(record):
            self._set_aside(record)
            return False
        if record.kind is RecordKind.END:
            await self._room_for(record)
        if self._aside.pop(record.transfer_id, None) is not None:
            _log.info("transfer_resumed_from_kafka", transfer=record.transfer_id)
        self.busy = record.transfer_id
        try:
            outcome = self.reassembler.feed(record)
            if isinstance(outcome, Rewind):
                outcome = await self._rewind(record, outcome.origin)
            return await self._conclude(outcome, ack, taken)
        finally:
            self.busy = None

    def _growth(self, record: Record) -> int:
        """Bytes ``record`` would add to the spool, if it would pass the quota while other
        transfers hold bytes (they free them by finishing or expiring); else 0."""
        transfer = self.reassembler.transfers.get(record.transfer_id)
        own = 0 if transfer is None else transfer.expected
        if record.kind is RecordKind.CHUNK:
            reaches = record.file_offset + len(record.value)
        else:  # an end record rewinds the whole file if its state is gone
            reaches = end_size(record) if transfer is None else 0
        grows = max(0, reaches - own)
        held = self.reassembler.spool_bytes
        if grows and held + grows > self.settings.spool_quota_bytes and held > own:
            return grows
        return 0

    def _set_aside(self, record: Record) -> None:
        """A chunk that would pass the spool quota while other transfers hold bytes: free this
        transfer's spool and skip the record (Kafka keeps it). Its next record that fits
        rewinds to its ``start`` record and rebuilds it, so transfers interleaved on the
        stream finish one after the other instead of starving each other."""
        tid = record.transfer_id
        released = self.reassembler.release(tid)
        metrics.spool_set_aside.inc()
        if tid not in self._aside:
            self._aside[tid] = None
            while len(self._aside) > 10_000:  # only for logging: forget the oldest
                self._aside.pop(next(iter(self._aside)))
            _log.warning(
                "spool_full_set_aside",
                transfer=tid,
                freed=released,
                held=self.reassembler.spool_bytes,
                quota=self.settings.spool_quota_bytes,
                transfers=len(self.reassembler),
            )

    async def _room_for(self, record: Record) -> None:
        """Stop consuming (this agent takes no record, so faust's buffer fills and fetching
        pauses) while an ``end`` record would rebuild a file past the spool quota. Room comes
        from uploads ending and from idle transfers expiring (their records stay in Kafka: a
        later record rewinds); a transfer alone in the spool is never held back."""
        if not self._growth(record):
            return
        metrics.spool_full.inc()
        metrics.spool_paused.set(1)
        began = time.monotonic()
        _log.warning(
            "spool_full",
            transfer=record.transfer_id,
            held=self.reassembler.spool_bytes,
            needs=self._growth(record),
            quota=self.settings.spool_quota_bytes,
            transfers=len(self.reassembler),
        )
        try:
            while self._growth(record):
                self.expire()
                await asyncio.sleep(0.1)
        finally:
            metrics.spool_paused.set(0)
        _log.info(
            "spool_room",
            transfer=record.transfer_id,
            waited_seconds=round(time.monotonic() - began, 2),
            held=self.reassembler.spool_bytes,
        )

    async def _rewind(self, record: Record, origin: int) -> Outcome:
        metrics.rewinds.inc()
        transfer = self.reassembler.transfers.get(record.transfer_id)
        _log.info(
            "rewind",
            transfer=record.transfer_id,
            partition=record.partition,
            origin=origin,
            offset=record.offset,
            held=None if transfer is None else transfer.expected,
        )
        key = record.transfer_id.encode()

        async def replay() -> None:
            async for message in self.rewinder.records(
                Topic.CHUNKS, record.partition, origin, record.offset, key
            ):
                try:
                    old = Record.parse(
                        message.key,
                        message.value,
                        message.headers,
                        message.partition,
                        message.offset,
                    )
                except RecordError as exc:
                    outcome: Outcome = self.reassembler.malformed(
                        record.transfer_id, str(exc), message.partition, message.offset
                    )
                else:
                    outcome = self.reassembler.feed(old, rewinding=True)
                await self._conclude(outcome, None)

        await self._retry("rewind", metrics.kafka_errors, replay)
        return self.reassembler.feed(record, rewinding=True)

    async def _conclude(
        self, outcome: Outcome, ack: Ack | None, taken: float | None = None
    ) -> bool:
        """Act on an outcome; True if an upload took over ``ack``. ``taken``: when the record
        that completed it was taken (monotonic), for the ``file_stored`` line's timings."""
        if isinstance(outcome, Completed):
            await self._start_upload(outcome, ack, taken)
            return True
        if isinstance(outcome, Failed):
            await self._failed(outcome)
        elif isinstance(outcome, Skipped):
            if outcome.reason == "duplicate":
                metrics.duplicate_records.inc()
            elif outcome.reason in ("done", "failed"):
                metrics.ignored_records.inc()
        return False

    # Endings ----------------------------------------------------------------------------

    async def _start_upload(self, done: Completed, ack: Ack | None, taken: float | None) -> None:
        """Store the file in the background (at most ``s3_concurrency`` at once); the
        record that completed it is acknowledged, so its offset committed, only after."""
        if self._closing.is_set():
            await asyncio.Event().wait()  # shutting down: wait to be cancelled
        await self._slots.acquire()
        task = asyncio.create_task(self._upload(done, ack, taken), name=f"store {done.transfer}")
        self._uploads.add(task)
        task.add_done_callback(self._uploads.discard)

    async def _upload(self, done: Completed, ack: Ack | None, taken: float | None) -> None:
        try:
            try:
                await self._store(done, taken)
            except asyncio.CancelledError:
                raise  # not acknowledged: Kafka delivers the records again
            except Exception as exc:  # a bug: S3 and Kafka errors are retried inside
                metrics.internal_errors.inc()
                _log.exception("store_error", transfer=done.transfer.transfer_id)
                await self._failed(self.reassembler.fail(done, f"internal error: {exc!r}"))
        finally:
            self._slots.release()
        if ack is not None:
            await ack()

    async def flush(self) -> None:
        """Wait until every upload started so far is done."""
        while self._uploads:
            await asyncio.wait(set(self._uploads))

    async def drain(self, grace: float) -> None:
        """Stop starting uploads; wait up to ``grace`` s for those running, cancel the rest."""
        self._closing.set()
        running = set(self._uploads)
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                _log.warning("uploads_cancelled", uploads=len(pending))
                await asyncio.gather(*pending, return_exceptions=True)

    async def _store(self, done: Completed, taken: float | None = None) -> None:
        transfer = done.transfer
        start = transfer.start
        name = keys.object_name(start)
        sha256 = transfer.sha256.hexdigest()
        log = _log.bind(transfer=transfer.transfer_id, imei=start.imei)
        if done.device_crc_ok is False:
            metrics.device_crc_mismatches.inc()
            log.warning(
                "device_crc_mismatch",
                device_crc=start.device_crc,
                file_crc=transfer.file_crc,
                note="stored anyway: the meaning of START's CRC field is unverified",
            )
        metadata = {
            "imei": start.imei,
            "transfer-id": transfer.transfer_id,
            "crc16": str(transfer.file_crc),
            "sha256": sha256,
            "camera": start.file.camera,
            "kind": name.kind,
            "captured-at": keys.capture_time(start).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        began = time.monotonic()

        async def upload() -> Any:
            return await self.store.store(
                transfer.path, name.key, name.content_type, metadata, sha256
            )

        result = await self._retry("s3", metrics.s3_errors, upload)
        uploaded = time.monotonic()
        upload_seconds = uploaded - began
        metrics.s3_upload_seconds.observe(upload_seconds)
        event = FileStored(
            event_id=f"{transfer.transfer_id}.stored",
            transfer_id=transfer.transfer_id,
            imei=start.imei,
            file=start.file,
            capture=start.capture,
            started_at=start.started_at,
            size=transfer.expected,
            sha256=sha256,
            crc16=transfer.file_crc,
            bucket=self.store.bucket,
            key=result.key,
            content_type=name.content_type,
            stored_at=datetime.now(UTC),
        )
        await self._produce(start.imei, encode(event))
        announce_seconds = time.monotonic() - uploaded
        self.reassembler.finish(transfer)
        metrics.files.labels("stored" if result.uploaded else "duplicate").inc()
        began_at = start.started_at
        began_at = began_at if began_at.tzinfo else began_at.replace(tzinfo=UTC)
        metrics.assembly_seconds.observe(max(0.0, (event.stored_at - began_at).total_seconds()))
        if result.uploaded:
            metrics.file_bytes.inc(transfer.expected)
        log.info(
            "file_stored",
            key=result.key,
            uploaded=result.uploaded,
            size=transfer.expected,
            crc16=transfer.file_crc,
            sha256=sha256,
            camera=start.file.camera,
            kind=name.kind,
            device_crc_ok=done.device_crc_ok,
            records=transfer.records,
            duplicate_records=transfer.duplicates,
            # From taking the record that completed the file to starting its upload (an S3
            # slot), the upload, and the file.stored event's acknowledgement.
            queued_seconds=None if taken is None else round(began - taken, 4),
            upload_seconds=round(upload_seconds, 4),
            announce_seconds=round(announce_seconds, 4),
        )

    async def _failed(self, failed: Failed) -> None:
        metrics.files.labels("failed").inc()
        metrics.failures.labels(failed.category).inc()
        start: TransferStart | None = failed.start
        _log.warning(
            "file_failed",
            transfer=failed.transfer_id,
            imei=None if start is None else start.imei,
            category=failed.category,
            reason=failed.reason,
            partition=failed.partition,
            offset=failed.offset,
            held=failed.size,
            announced=start is not None,
        )
        if start is None:  # no IMEI or file to name in an event: the log line is all
            return
        event = FileFailed(
            event_id=f"{failed.transfer_id}.failed.{failed.partition}-{failed.offset}",
            transfer_id=failed.transfer_id,
            imei=start.imei,
            file=start.file,
            capture=start.capture,
            started_at=start.started_at,
            reason=f"{failed.category}: {failed.reason}",
            failed_at=datetime.now(UTC),
        )
        await self._produce(start.imei, encode(event))

    async def _produce(self, key: str, value: bytes) -> None:
        async def send() -> Any:
            return await self.app.producer.send_and_wait(
                Topic.FILES, key.encode(), value, None, None, None
            )

        await self._retry("kafka", metrics.kafka_errors, send)

    async def _retry(self, what: str, errors: Any, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``operation`` until it succeeds, pausing longer after each failure."""
        delay, attempt = min(0.2, self.settings.s3_retry_max_seconds), 0
        while True:
            try:
                return await operation()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                errors.inc()
                _log.warning(
                    f"{what}_error",
                    transfer=self.busy,
                    attempt=attempt,
                    retry_in=round(delay, 2),
                    error=repr(exc),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.s3_retry_max_seconds)

    async def close(self) -> None:
        await self.drain(0)
        await self.rewinder.close()
        self.reassembler.close()

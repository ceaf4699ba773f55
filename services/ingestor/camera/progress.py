"""Transfer progress: what every ingestor knows of how far each transfer is durable.

``fleetgate.camera.progress.v1`` (key = transfer id, value :class:`contracts.TransferProgress`)
says, per camera transfer, which prefix of the file is in acknowledged chunk records. Three
pieces here:

* :class:`ProgressBook`: the in-memory map, transfer id -> best record known. Records may
  come late, twice, or from several ingestors at once; :func:`supersedes` decides which one
  stands.
* :class:`ProgressPublisher`: sends the progress the sessions report, newest per transfer
  first-come (a later report for a transfer replaces one not yet sent), and enters a record
  in the book once Kafka acknowledged it.
* :class:`ProgressReader`: a :class:`~ingestor.follow.TopicFollower` (a plain consumer: no
  group, every partition, from the earliest offset) that fills the book at start and then
  follows the topic. Catching up means reading until a poll returns nothing for
  ``progress_catchup_idle_seconds``.

Nothing here is needed for correctness: without a record, or with an old one, a device
resends from an earlier offset and the consumers drop what they already have.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog
from pydantic import ValidationError

import contracts
from contracts import Topic, TransferProgress

from .. import metrics as edge_metrics
from ..follow import TopicFollower
from ..settings import IngestorSettings
from ..sink import Sink
from . import metrics
from .arbiter import Holder, holder_after
from .settings import CameraSettings

__all__ = ["ProgressBook", "ProgressPublisher", "ProgressReader", "supersedes"]

_log = structlog.get_logger("fleetgate.ingestor")


def supersedes(new: TransferProgress, old: TransferProgress) -> bool:
    """Whether ``new`` should replace ``old`` for the same transfer.

    A complete record stands over an incomplete one; between records of the same first start
    record (``origin``), the furthest stands; otherwise (the transfer was started over,
    e.g. by an ingestor that did not know it) the newest by its writer's clock.
    """
    if new.complete != old.complete:
        return new.complete
    if (new.origin, new.partition) == (old.origin, old.partition):
        return new.offset > old.offset
    return new.updated_at > old.updated_at


class ProgressBook:
    """Transfer id -> the best :class:`TransferProgress` known; entries older than
    ``max_age`` seconds (by ``updated_at``) are forgotten.

    It also holds, per transfer, the session that writes it (:mod:`.arbiter`), as the
    records read from the topic in its order say (:meth:`observe`; never from records
    entered out of that order, such as acknowledged ones).
    """

    def __init__(self, max_age: float = 6 * 24 * 3600.0) -> None:
        self.max_age = max_age
        self._entries: dict[str, TransferProgress] = {}
        self._holders: dict[str, Holder] = {}
        #: Bumped by :meth:`clear`: the Kafka logs were found reset (a broker that lost data).
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[TransferProgress]:
        return iter(list(self._entries.values()))

    def get(self, transfer_id: str) -> TransferProgress | None:
        entry = self._entries.get(transfer_id)
        if entry is not None and self._expired(entry):
            del self._entries[transfer_id]
            return None
        return entry

    def holder(self, transfer_id: str) -> Holder | None:
        """The session that writes ``transfer_id``, as the topic read so far says."""
        return self._holders.get(transfer_id)

    def observe(self, progress: TransferProgress) -> bool:
        """A record read from the topic, in its order: settle who holds the transfer, then
        :meth:`apply` it."""
        tid = progress.transfer_id
        holder = holder_after(self._holders.get(tid), progress)
        if holder is None:
            self._holders.pop(tid, None)
        else:
            self._holders[tid] = holder
        return self.apply(progress)

    def apply(self, progress: TransferProgress) -> bool:
        """Take ``progress`` if it says more than what is known; True if it did."""
        if self._expired(progress):
            return False
        old = self._entries.get(progress.transfer_id)
        if old is not None and not supersedes(progress, old):
            return False
        self._entries[progress.transfer_id] = progress
        return True

    def forget(self, transfer_id: str) -> None:
        self._entries.pop(transfer_id, None)
        self._holders.pop(transfer_id, None)

    def clear(self) -> None:
        """Forget everything: the records point into a log that is gone."""
        self._entries.clear()
        self._holders.clear()
        self.generation += 1

    def prune(self) -> int:
        """Drop expired entries (and holders silent as long); return how many entries."""
        stale = [tid for tid, entry in self._entries.items() if self._expired(entry)]
        for tid in stale:
            del self._entries[tid]
        now = datetime.now(UTC)
        gone = [
            tid
            for tid, holder in self._holders.items()
            if (now - holder.since).total_seconds() > self.max_age
        ]
        for tid in gone:
            del self._holders[tid]
        return len(stale)

    def _expired(self, entry: TransferProgress) -> bool:
        return (datetime.now(UTC) - entry.updated_at).total_seconds() > self.max_age


class ProgressPublisher:
    """Sends progress records; enters each in the book once Kafka acknowledged it."""

    def __init__(self, sink: Sink, book: ProgressBook, timeout: float = 30.0) -> None:
        self.sink = sink
        self.book = book
        self.timeout = timeout
        self._queue: dict[str, TransferProgress | None] = {}  # None: a tombstone
        self._inflight: set[asyncio.Future[Any]] = set()
        self._busy: dict[str, int] = {}  # transfer id -> its records queued or in flight
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def publish(self, progress: TransferProgress) -> None:
        """Queue ``progress`` (it replaces a queued one of the same transfer it supersedes)."""
        tid = progress.transfer_id
        queued = self._queue.get(tid)
        if queued is not None and not supersedes(progress, queued):
            return
        self._enqueue(tid, progress)

    async def claim(self, progress: TransferProgress) -> tuple[int, int]:
        """Send a claim now, past the queue, and wait for Kafka's ack; return its (partition,
        offset). Raises what the send raised (KafkaFailed, TimeoutError ...)."""
        tid = progress.transfer_id
        async with asyncio.timeout(self.timeout):
            future = await self.sink.send(
                Topic.PROGRESS, tid.encode(), contracts.encode(progress), []
            )
            meta = await future
        edge_metrics.kafka_records.labels(Topic.PROGRESS).inc()
        return int(meta.partition), int(meta.offset)

    def forget(self, transfer_id: str) -> None:
        """Publish a tombstone: readers drop the transfer (an empty value, which a compacted
        topic keeps as the key's last record)."""
        self.book.forget(transfer_id)
        self._enqueue(transfer_id, None)

    def _enqueue(self, tid: str, progress: TransferProgress | None) -> None:
        if tid not in self._queue:
            self._busy[tid] = self._busy.get(tid, 0) + 1
        self._queue[tid] = progress
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="progress publisher"
            )

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                tid = next(iter(self._queue))
                progress = self._queue.pop(tid)
                value = b"" if progress is None else contracts.encode(progress)
                try:
                    async with asyncio.timeout(self.timeout):
                        future = await self.sink.send(Topic.PROGRESS, tid.encode(), value, [])
                except Exception as exc:  # progress is an optimisation: log and go on
                    metrics.progress_errors.inc()
                    _log.warning("progress_not_sent", transfer=tid, error=repr(exc))
                    self._done(tid)
                    continue
                edge_metrics.kafka_records.labels(Topic.PROGRESS).inc()
                self._inflight.add(future)
                future.add_done_callback(partial(self._acknowledged, tid, progress))
            self._settle()

    def _acknowledged(
        self, tid: str, progress: TransferProgress | None, future: asyncio.Future[Any]
    ) -> None:
        self._inflight.discard(future)
        if future.cancelled() or future.exception() is not None:
            metrics.progress_errors.inc()
            error = "cancelled" if future.cancelled() else repr(future.exception())
            _log.warning("progress_not_acknowledged", transfer=tid, error=error)
        elif progress is not None:
            self.book.apply(progress)
        self._done(tid)
        self._settle()

    def _done(self, tid: str) -> None:
        left = self._busy.get(tid, 1) - 1
        if left > 0:
            self._busy[tid] = left
            return
        self._busy.pop(tid, None)
        for waiter in self._waiters.pop(tid, []):
            if not waiter.done():
                waiter.set_result(None)

    def _settle(self) -> None:
        if not self._queue and not self._inflight:
            self._idle.set()

    async def flush(self, transfer_id: str | None = None, within: float | None = None) -> bool:
        """Wait until what was published so far (for ``transfer_id`` only, if given) is
        acknowledged or failed; False if ``within`` seconds (default: the publisher's
        timeout) passed first."""
        try:
            async with asyncio.timeout(self.timeout if within is None else within):
                if transfer_id is None:
                    await self._idle.wait()
                elif self._busy.get(transfer_id):
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.setdefault(transfer_id, []).append(waiter)
                    await waiter
        except TimeoutError:
            return False
        return True

    async def close(self, within: float = 5.0) -> None:
        await self.flush(within=within)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class ProgressReader(TopicFollower):
    """Reads ``fleetgate.camera.progress.v1`` into a :class:`ProgressBook` and follows it;
    :meth:`catch_up` reads until a poll returns nothing for ``progress_catchup_idle_seconds``
    (or ``progress_catchup_timeout_seconds`` pass: False then)."""

    def __init__(
        self, settings: IngestorSettings, camera: CameraSettings, book: ProgressBook
    ) -> None:
        super().__init__(
            settings,
            Topic.PROGRESS,
            "progress",
            idle=camera.progress_catchup_idle_seconds,
            within=camera.progress_catchup_timeout_seconds,
        )
        self.settings = settings
        self.camera = camera
        self.book = book
        self._generation = book.generation

    async def before_poll(self) -> None:
        """The book was cleared (the logs were found reset): read the whole topic again."""
        if self.book.generation != self._generation:
            self._generation = self.book.generation
            await self.rewind()
            _log.warning("progress_rereading", reason="the Kafka logs were reset")

    def take(self, key: bytes | None, value: bytes | None) -> None:
        if not value:  # a tombstone (null, or empty as the ingestor writes): forget it
            if key:
                self.book.forget(key.decode("ascii", "replace"))
            return
        try:
            progress = contracts.decode(TransferProgress, value)
        except (ValidationError, ValueError) as exc:
            metrics.progress_errors.inc()
            _log.warning("progress_malformed", key=repr(key)[:80], error=str(exc)[:200])
            return
        self.book.observe(progress)

    def describe(self) -> dict[str, object]:
        return {"transfers": len(self.book)}

    async def tick(self) -> None:
        self.book.prune()

    def failed(self, exc: Exception) -> None:
        metrics.progress_errors.inc()
        super().failed(exc)

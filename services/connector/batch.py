"""Batching records of one device into one POST: what a batch is, and when it is sent.

An endpoint with ``batch: {max_records, max_wait_seconds}`` collects, per partition of
``fleetgate.records.v1``, the records of each device (the key is the IMEI, so one device's
records are in one partition, in order) and sends them as one POST once ``max_records`` are
in hand or the first of them has waited ``max_wait_seconds``. :class:`Batcher` decides that,
with the clock passed in; the consumer does the I/O.

A batch that fails is retried, dead-lettered and replayed as a whole: it goes into the retry
topics as one :class:`RecordBatch` (its own value, ``schema: record-batch.v1``), and its
``webhook-id`` is :func:`batch_id`, the same on every attempt. The offsets of a partition are
committed only up to the first record of its oldest open batch, so a crash resends what was
waiting; receivers de-duplicate records by IMEI and sequence number (``IMEI`` and ``SeqNo``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.records import TelemetryRecord

__all__ = ["Batcher", "OpenBatch", "RecordBatch", "batch_id"]


def batch_id(records: Sequence[TelemetryRecord]) -> str:
    """The ``webhook-id`` of a batch: the same for the same records, on every attempt."""
    digest = hashlib.sha256(b"batch|" + "|".join(r.record_id for r in records).encode())
    return digest.hexdigest()[:32]


class RecordBatch(BaseModel):
    """Records of one device delivered in one POST; a retry record's value for a batch."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    schema_: Literal["record-batch.v1"] = Field("record-batch.v1", alias="schema")
    batch_id: str
    records: list[TelemetryRecord] = Field(min_length=1)
    sources: list[str | None] = Field(
        default_factory=list, description="topic/partition/offset of each record"
    )

    @classmethod
    def of(cls, records: Sequence[TelemetryRecord], sources: Sequence[str | None]) -> RecordBatch:
        return cls(batch_id=batch_id(records), records=list(records), sources=list(sources))

    # What the connector needs of anything it delivers.
    @property
    def type(self) -> Literal["record"]:
        return "record"

    @property
    def event_id(self) -> str:
        return self.batch_id

    @property
    def imei(self) -> str:
        return self.records[0].imei


@dataclass
class OpenBatch:
    """Records of one device waiting to be sent, with their offsets."""

    imei: str
    deadline: float  # monotonic seconds
    #: When the first record entered Kafka (unix seconds), for the delivered-age metric.
    source_time: float | None = None
    offsets: list[int] = field(default_factory=list)
    records: list[TelemetryRecord] = field(default_factory=list)
    sources: list[str | None] = field(default_factory=list)

    def batch(self) -> RecordBatch:
        return RecordBatch.of(self.records, self.sources)


class Batcher:
    """The open batches of one partition (one per device). Pure: ``now`` is passed in."""

    def __init__(self, max_records: int, max_wait: float) -> None:
        self.max_records = max_records
        self.max_wait = max_wait
        self._open: dict[str, OpenBatch] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(
        self,
        offset: int,
        record: TelemetryRecord,
        source: str | None,
        now: float,
        source_time: float | None = None,
    ) -> OpenBatch | None:
        """Take ``record``; the batch it fills up (now closed), or None while it waits."""
        batch = self._open.get(record.imei)
        if batch is None:
            batch = OpenBatch(record.imei, now + self.max_wait, source_time)
            self._open[record.imei] = batch
        batch.offsets.append(offset)
        batch.records.append(record)
        batch.sources.append(source)
        if len(batch.records) >= self.max_records:
            return self._open.pop(record.imei)
        return None

    def due(self, now: float) -> list[OpenBatch]:
        """Close and return the batches whose first record has waited long enough, oldest
        first."""
        ready = sorted(
            (b for b in self._open.values() if b.deadline <= now), key=lambda b: b.offsets[0]
        )
        for batch in ready:
            del self._open[batch.imei]
        return ready

    def next_deadline(self) -> float | None:
        return min((b.deadline for b in self._open.values()), default=None)

    def low_water(self) -> int | None:
        """The first offset an open batch holds: nothing from there on may be committed."""
        return min((b.offsets[0] for b in self._open.values()), default=None)

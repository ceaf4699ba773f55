"""Run an ingestor in-process on a real broker, and read back what it published."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

import contracts
from contracts import ChunkHeader, RecordKind, Topic
from contracts import models as wire
from ingestor.server import Ingestor, KafkaSink
from ingestor.settings import IngestorSettings


def settings(kafka: str, **overrides: Any) -> IngestorSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka,
        "camera_host": "127.0.0.1",
        "camera_port": 0,
        "instance": "test-ingestor",
    }
    return IngestorSettings(**(values | overrides))


@contextlib.asynccontextmanager
async def running(config: IngestorSettings, sink: Any = None) -> AsyncIterator[Ingestor]:
    kafka_sink = KafkaSink(config)
    await kafka_sink.producer.start()
    ingestor = Ingestor(config, sink or kafka_sink)
    try:
        await ingestor.start()
        yield ingestor
    finally:
        await ingestor.stop()
        await kafka_sink.producer.stop()


@dataclass
class Published:
    """Everything on the ingestor's topics, decoded."""

    starts: dict[str, wire.TransferStart] = field(default_factory=dict)
    files: dict[str, bytearray] = field(default_factory=dict)
    ends: dict[str, wire.TransferEnd] = field(default_factory=dict)
    sessions: list[Any] = field(default_factory=list)
    chunk_headers: list[dict[str, bytes]] = field(default_factory=list)

    def by_imei_and_file(self) -> dict[tuple[str, str], bytes]:
        return {
            (start.imei, start.file.identifier): bytes(self.files[tid])
            for tid, start in self.starts.items()
            if tid in self.ends
        }


async def read_published(kafka: str, *, ends: int, within: float = 30.0) -> Published:
    """Consume both topics from the start until ``ends`` end records have been seen."""
    out = Published()
    consumer = AIOKafkaConsumer(
        str(Topic.CHUNKS), str(Topic.SESSIONS), bootstrap_servers=kafka,
        auto_offset_reset="earliest", enable_auto_commit=False, max_partition_fetch_bytes=8 << 20,
    )  # fmt: skip
    await consumer.start()
    try:
        async with asyncio.timeout(within):
            while len(out.ends) < ends:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        _take(out, record)
        # session events may trail the last end record
        batch = await consumer.getmany(timeout_ms=300)
        for records in batch.values():
            for record in records:
                _take(out, record)
    finally:
        await consumer.stop()
    return out


def _take(out: Published, record: Any) -> None:
    assert record.value is not None
    if record.topic == Topic.SESSIONS:
        out.sessions.append(contracts.decode(contracts.SessionEvent, record.value))
        return
    headers = {k: v for k, v in record.headers}
    kind = headers[ChunkHeader.KIND].decode()
    tid = headers[ChunkHeader.TRANSFER].decode()
    assert record.key == tid.encode()
    if kind == RecordKind.START:
        out.starts[tid] = contracts.decode(wire.TransferStart, record.value)
        out.files.setdefault(tid, bytearray())
    elif kind == RecordKind.CHUNK:
        out.chunk_headers.append(headers)
        offset = int(headers[ChunkHeader.OFFSET])
        data = out.files[tid]
        # a resumed or resent transfer may repeat bytes: keep each offset once
        if offset <= len(data):
            data[offset:] = b""
            data += record.value
    else:
        out.ends[tid] = contracts.decode(wire.TransferEnd, record.value)

"""The OEM JSON intake on a real broker, real HTTP requests to it, and what landed in Kafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from contracts import Topic
from contracts.models import decode
from contracts.records import DeviceStatus, TelemetryRecord
from devstack.infra import DEFAULT_PARTITIONS
from ingestor.oem import PATH, HttpSettings, OemIntake
from ingestor.registry import DeviceRegistry
from ingestor.settings import IngestorSettings
from ingestor.sink import KafkaSink, Sink

VECTORS = Path(__file__).resolve().parents[1] / "dmtproto" / "vectors" / "dmt_http_json.txt"
#: The shared captures: one Edge body, one traditional body with 5 records.
EDGE, TRADITIONAL = [
    line.encode() for line in VECTORS.read_text().splitlines() if line.startswith("{")
]
#: What the intake publishes to.
TOPICS = (Topic.RECORDS, Topic.DMT_OEM_RAW, Topic.DEVICES)


@dataclass
class Intake:
    intake: OemIntake
    sink: KafkaSink

    @property
    def url(self) -> str:
        scheme = "https" if self.intake.settings.tls_certfile else "http"
        return f"{scheme}://127.0.0.1:{self.intake.port}{PATH}"


@contextlib.asynccontextmanager
async def running(
    kafka: str,
    sink: Callable[[KafkaSink], Sink] | None = None,
    not_ready: Callable[[], str | None] = lambda: None,
    edge: dict[str, Any] | None = None,
    *,
    read_registry: bool = False,
    **http: Any,
) -> AsyncIterator[Intake]:
    """The intake on a free port (``http``: its settings; ``edge``: the process's), on the
    real sink, or on ``sink(real)`` to hold or fail acknowledgements. With ``read_registry``
    it reads the device registry first and follows it, as ``serve`` does."""
    process = IngestorSettings.model_validate(
        {"kafka_bootstrap": kafka, "instance": "test-ingestor"} | (edge or {})
    )
    settings = HttpSettings.model_validate({"host": "127.0.0.1", "port": 0} | http)
    kafka_sink = KafkaSink(process)
    await kafka_sink.producer.start()
    registry = DeviceRegistry(process, read=read_registry)
    used = kafka_sink if sink is None else sink(kafka_sink)
    intake = OemIntake(settings, process, used, registry=registry)
    intake.not_ready = not_ready
    try:
        await registry.start()
        await intake.start()
        yield Intake(intake, kafka_sink)
    finally:
        await intake.stop()
        await registry.stop()
        await kafka_sink.producer.stop()


@dataclass
class Landed:
    records: list[TelemetryRecord] = field(default_factory=list)
    raw: list[tuple[bytes, bytes, dict[str, bytes]]] = field(default_factory=list)
    devices: list[DeviceStatus] = field(default_factory=list)


async def read_landed(kafka: str, until: Callable[[Landed], bool], within: float = 20.0) -> Landed:
    """The intake's topics from the start, until ``until(landed)`` holds."""
    out = Landed()
    consumer = AIOKafkaConsumer(
        *map(str, TOPICS), bootstrap_servers=kafka, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    try:
        async with asyncio.timeout(within):
            while not until(out):
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        assert record.key is not None and record.value is not None
                        if record.topic == Topic.RECORDS:
                            out.records.append(decode(TelemetryRecord, record.value))
                        elif record.topic == Topic.DMT_OEM_RAW:
                            out.raw.append((record.key, record.value, dict(record.headers)))
                        else:
                            out.devices.append(decode(DeviceStatus, record.value))
    finally:
        await consumer.stop()
    return out


async def messages_on(kafka: str, topics: tuple[Topic, ...] = TOPICS) -> int:
    """How many messages the topics hold (the sum of their partitions' end offsets; the
    topics as the test broker creates them)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(str(topic), p)
            for topic in topics
            for p in range(DEFAULT_PARTITIONS[topic])
        ]
        ends = await consumer.end_offsets(partitions)
        return sum(ends.values())
    finally:
        await consumer.stop()

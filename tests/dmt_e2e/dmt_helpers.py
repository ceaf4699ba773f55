"""An ingestor hosting Digital Matter on a real broker, devices over real sockets, and what
landed in Kafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from contracts import Topic
from contracts.dmt import DmtSessionEvent
from contracts.models import decode
from contracts.records import DeviceStatus, TelemetryRecord
from dmtproto import (
    Analogue16,
    Analogue16Field,
    CommitAcknowledged,
    DeviceConnection,
    DigitalField,
    DmtDevice,
    GpsField,
    Hello,
    HelloAcknowledged,
)
from ingestor.adapter import Protocol
from ingestor.camera import CameraProtocol, CameraSettings
from ingestor.dmt import DmtProtocol, DmtSettings
from ingestor.registry import DeviceRegistry
from ingestor.server import Ingestor
from ingestor.settings import IngestorSettings
from ingestor.sink import KafkaSink, Sink


def settings(
    kafka: str, edge: dict[str, Any] | None = None, **dmt: Any
) -> tuple[IngestorSettings, DmtSettings]:
    process = IngestorSettings.model_validate(
        {"kafka_bootstrap": kafka, "instance": "test-ingestor"} | (edge or {})
    )
    return process, DmtSettings.model_validate({"host": "127.0.0.1", "port": 0} | dmt)


@contextlib.asynccontextmanager
async def running(
    kafka: str,
    sink: Any = None,
    edge: dict[str, Any] | None = None,
    *,
    read_registry: bool = False,
    camera: bool = False,
    **dmt: Any,
) -> AsyncIterator[tuple[Ingestor, KafkaSink]]:
    """An ingestor hosting only Digital Matter on a free port (``edge``: process settings,
    ``dmt``: listener settings); ``sink`` wraps the real one (a function of it) to hold or
    fail acknowledgements. With ``read_registry`` it reads and follows the device registry
    as ``serve`` does; with ``camera`` it hosts the camera protocol too (no progress read)."""
    edge_settings, listen = settings(kafka, edge, **dmt)
    kafka_sink = KafkaSink(edge_settings)
    await kafka_sink.producer.start()
    used: Sink = kafka_sink if sink is None else sink(kafka_sink)
    protocols: list[Protocol] = [DmtProtocol(listen, edge_settings, used)]
    if camera:
        cameras = CameraSettings(host="127.0.0.1", port=0)
        protocols.append(CameraProtocol(cameras, edge_settings, used, read_progress=False))
    registry = DeviceRegistry(edge_settings, read=read_registry)
    ingestor = Ingestor(edge_settings, used, protocols, registry)
    try:
        await ingestor.start()
        yield ingestor, kafka_sink
    finally:
        await ingestor.stop()
        await kafka_sink.producer.stop()


def tracker(imei: str = "352093081234567", records: int = 5, serial: int = 4242) -> DmtDevice:
    """A G62-like tracker holding ``records`` records with known values: record ``i`` (from
    0) is at latitude -33.8 + i/1000, battery 4000 + i mV, internal temperature 21.50 °C."""
    device = DmtDevice(
        Hello(
            serial=serial, imei=imei, iccid="89610180004123456789", product_id=34,
            hardware_revision=2, firmware_major=1, firmware_minor=9,
        )
    )  # fmt: skip
    for i in range(records):
        when = 420_000_000 + 60 * i
        device.log(
            time=when,
            log_reason=3,
            fields=(
                GpsField(
                    gps_time=when,
                    latitude_e7=-338_000_000 + i * 10_000,
                    longitude_e7=1_512_000_000,
                    altitude_m=40,
                    speed_cm_s=1000,
                    speed_accuracy=1,
                    heading_2deg=45,
                    pdop_tenths=12,
                    position_accuracy_m=5,
                    status=3,
                ),
                DigitalField(inputs=1, outputs=0, status=3),
                Analogue16Field(values=(Analogue16(1, 4000 + i), Analogue16(3, 2150))),
            ),
        )
    return device


@dataclass
class Wire:
    """One device connection driven by hand: what the server answered."""

    conn: DeviceConnection
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    commits: list[CommitAcknowledged] = field(default_factory=list)
    hello_answered: bool = False
    eof: bool = False

    @classmethod
    async def open(cls, port: int, device: DmtDevice, **kw: Any) -> Wire:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = device.connect(auto_upload=False, **kw)
        wire = cls(conn, reader, writer)
        await wire.flush()
        return wire

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()

    async def read(self, within: float = 10.0) -> None:
        """Read one answer and feed it to the device; after EOF, AssertionError."""
        assert not self.eof, "the server closed the connection"
        async with asyncio.timeout(within):
            data = await self.reader.read(65536)
        if not data:
            self.eof = True
            return
        for event in self.conn.receive_data(data):
            if isinstance(event, HelloAcknowledged):
                self.hello_answered = True
            elif isinstance(event, CommitAcknowledged):
                self.commits.append(event)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass
class Landed:
    """Everything the ingestor published on the Digital Matter topics, decoded."""

    records: list[TelemetryRecord] = field(default_factory=list)
    raw: list[tuple[bytes, bytes, dict[str, bytes]]] = field(default_factory=list)
    devices: dict[str, DeviceStatus] = field(default_factory=dict)
    sessions: list[Any] = field(default_factory=list)


async def read_landed(kafka: str, until: Any, within: float = 20.0) -> Landed:
    """Read the records, raw, devices and session topics from the start until
    ``until(landed)`` holds."""
    out = Landed()
    consumer = AIOKafkaConsumer(
        str(Topic.RECORDS), str(Topic.DMT_RAW), str(Topic.DEVICES), str(Topic.DMT_SESSIONS),
        bootstrap_servers=kafka, auto_offset_reset="earliest", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    try:
        async with asyncio.timeout(within):
            while not until(out):
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        _take(out, record)
    finally:
        await consumer.stop()
    return out


def _take(out: Landed, record: Any) -> None:
    value = record.value
    assert value is not None and record.key is not None
    if record.topic == Topic.RECORDS:
        out.records.append(decode(TelemetryRecord, value))
    elif record.topic == Topic.DMT_RAW:
        out.raw.append((record.key, value, dict(record.headers)))
    elif record.topic == Topic.DEVICES:
        status = decode(DeviceStatus, value)
        out.devices[status.imei] = status
    else:
        out.sessions.append(decode(DmtSessionEvent, value))


class GatedSink:
    """The real sink, whose acknowledgements the test releases (``gate``)."""

    def __init__(self, inner: KafkaSink) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.held = 0

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        real = await self.inner.send(topic, key, value, headers)
        gated: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.held += 1

        async def release() -> None:
            result = await real
            await self.gate.wait()
            gated.set_result(result)

        asyncio.get_running_loop().create_task(release())
        return gated


class FailingSink:
    """The real sink until ``failing`` is set; then every acknowledgement fails."""

    def __init__(self, inner: KafkaSink) -> None:
        self.inner = inner
        self.failing = False

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        if not self.failing:
            return await self.inner.send(topic, key, value, headers)
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(ConnectionError("broker gone (test)"))
        return failed

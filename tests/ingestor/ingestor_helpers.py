"""Run an ingestor in-process on a real broker, and read back what it published."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

import contracts
from camproto import (
    CameraDevice,
    CameraFile,
    DeviceFile,
    DsmMetadata,
    DualCamMetadata,
    DualCamSlot,
    FileAccepted,
    ResumeRequested,
)
from contracts import ChunkMeta, RecordKind, Topic
from contracts import models as wire
from ingestor.camera import CameraProtocol, CameraSettings
from ingestor.camera.progress import ProgressBook
from ingestor.server import Ingestor
from ingestor.settings import IngestorSettings
from ingestor.sink import KafkaSink, Sink
from simulator.faults import TokenBucket


@dataclass
class Config:
    """An ingestor's settings and its camera listener's."""

    ingestor: IngestorSettings
    camera: CameraSettings


def settings(kafka: str, **overrides: Any) -> Config:
    """Settings of an ingestor on a free port; each override goes to the settings class
    that has the field (the process's, else the camera listener's)."""
    edge: dict[str, Any] = {"kafka_bootstrap": kafka, "instance": "test-ingestor"}
    camera: dict[str, Any] = {"host": "127.0.0.1", "port": 0}
    for name, value in overrides.items():
        if name in IngestorSettings.model_fields:
            edge[name] = value
        elif name in CameraSettings.model_fields:
            camera[name] = value
        else:
            raise TypeError(f"no ingestor or camera setting {name!r}")
    return Config(IngestorSettings(**edge), CameraSettings(**camera))


def make_ingestor(config: Config, sink: Sink, *, progress: bool = False) -> Ingestor:
    """An ingestor hosting the camera protocol; with ``progress``, it reads the progress
    topic before accepting and follows it, as ``serve`` does."""
    camera = CameraProtocol(config.camera, config.ingestor, sink, read_progress=progress)
    return Ingestor(config.ingestor, sink, [camera])


def book(ingestor: Ingestor) -> ProgressBook:
    """The camera protocol's progress book."""
    camera = ingestor.protocols["camera"]
    assert isinstance(camera, CameraProtocol)
    return camera.book


@contextlib.asynccontextmanager
async def running(
    config: Config, sink: Any = None, *, progress: bool = False
) -> AsyncIterator[Ingestor]:
    """An ingestor on a free port; with ``progress``, it reads the progress topic first and
    follows it, as ``serve`` does."""
    kafka_sink = KafkaSink(config.ingestor)
    await kafka_sink.producer.start()
    ingestor = make_ingestor(config, sink or kafka_sink, progress=progress)
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


async def read_published(
    kafka: str,
    *,
    ends: int,
    within: float = 30.0,
    until: Callable[[Published], bool] | None = None,
) -> Published:
    """Consume both topics from the start until ``ends`` end records have been seen (and
    ``until`` holds, when given)."""
    out = Published()
    consumer = AIOKafkaConsumer(
        str(Topic.CHUNKS), str(Topic.SESSIONS), bootstrap_servers=kafka,
        auto_offset_reset="earliest", enable_auto_commit=False, max_partition_fetch_bytes=8 << 20,
    )  # fmt: skip
    await consumer.start()
    try:
        async with asyncio.timeout(within):
            while len(out.ends) < ends or (until is not None and not until(out)):
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
    meta = ChunkMeta.from_headers(None, headers)
    tid = meta.transfer_id
    assert record.key == tid.encode()
    if meta.kind is RecordKind.START:
        out.starts[tid] = contracts.decode(wire.TransferStart, record.value)
        out.files.setdefault(tid, bytearray())
    elif meta.kind is RecordKind.CHUNK:
        out.chunk_headers.append(headers)
        offset = meta.offset
        data = out.files[tid]
        # a resumed or resent transfer may repeat bytes: keep each offset once
        if offset <= len(data):
            data[offset:] = b""
            data += record.value
    else:
        out.ends[tid] = contracts.decode(wire.TransferEnd, record.value)


# Progress -------------------------------------------------------------------------------


async def read_progress(
    kafka: str, until: Any = None, within: float = 20.0
) -> list[wire.TransferProgress]:
    """Every record of the progress topic, in each partition's order; with ``until``, read
    until ``until(records)`` holds, else until a poll returns nothing for 0.5 s."""
    out: list[wire.TransferProgress] = []
    consumer = AIOKafkaConsumer(
        str(Topic.PROGRESS), bootstrap_servers=kafka, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    try:
        async with asyncio.timeout(within):
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        assert record.value is not None
                        out.append(contracts.decode(wire.TransferProgress, record.value))
                if until is not None and until(out):
                    break
                if until is None and not batch and out:
                    break
    finally:
        await consumer.stop()
    return out


async def start_records(kafka: str, within: float = 10.0) -> dict[str, list[tuple[int, int]]]:
    """Transfer id -> (partition, Kafka offset) of each of its start records, in order."""
    out: dict[str, list[tuple[int, int]]] = {}
    consumer = AIOKafkaConsumer(
        str(Topic.CHUNKS), bootstrap_servers=kafka, auto_offset_reset="earliest",
        enable_auto_commit=False, max_partition_fetch_bytes=8 << 20,
    )  # fmt: skip
    await consumer.start()
    try:
        async with asyncio.timeout(within):
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                if not batch:
                    break
                for records in batch.values():
                    for record in records:
                        meta = ChunkMeta.from_headers(record.key, record.headers)
                        if meta.kind is RecordKind.START:
                            out.setdefault(meta.transfer_id, []).append(
                                (record.partition, record.offset)
                            )
    finally:
        await consumer.stop()
    return out


# A device that can change ingestors ------------------------------------------------------


@dataclass
class Hopper:
    """A camera (:class:`camproto.CameraDevice`) uploading over TCP; connection ``i`` goes
    to ``ports[i % len(ports)]``, so after a failure it tries the next ingestor.

    ``rate`` paces DATA (bytes/s); ``cut_after[i]`` ends connection ``i`` (FIN) after that
    many DATA packets; on connections in ``deaf`` the device never hears REPEAT INIT (it
    half-closes once its file is sent, as if the link had dropped before the answer).
    """

    device: CameraDevice
    ports: list[int]
    rate: float | None = None
    cut_after: dict[int, int] = field(default_factory=dict)
    deaf: set[int] = field(default_factory=set)
    backoff: float = 0.05
    #: Connection ``i`` waits for ``gates[i]`` to be set first.
    gates: dict[int, asyncio.Event] = field(default_factory=dict)
    #: Stop after this many connections, files left or not.
    max_connections: int | None = None
    connections: int = 0
    sent: int = 0  # bytes written, commands included
    resumed: list[int] = field(default_factory=list)  # RESUME offsets (bytes), in order
    accepted: list[CameraFile] = field(default_factory=list)
    endings: list[str] = field(default_factory=list)

    async def run(self, within: float = 60.0) -> None:
        async with asyncio.timeout(within):
            while self.device.files and self.connections != self.max_connections:
                if self.connections:
                    await asyncio.sleep(self.backoff)
                port = self.ports[self.connections % len(self.ports)]
                index = self.connections
                if index in self.gates:
                    await self.gates[index].wait()
                self.connections += 1
                try:
                    self.endings.append(f"{port}: {await self._connection(index, port)}")
                except OSError as exc:
                    self.endings.append(f"{port}: {exc!r}")

    async def _connection(self, index: int, port: int) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = self.device.connect()
        cut = self.cut_after.get(index)
        deaf = index in self.deaf
        bucket = None if self.rate is None else TokenBucket(self.rate, max(1100.0, self.rate / 50))
        limit = 64 * 1024 if self.rate is None else max(1030, int(self.rate / 50))
        wake = asyncio.Event()
        eof = False

        async def read() -> None:
            nonlocal eof
            while not eof:
                try:
                    data = await reader.read(65536)
                except OSError:
                    data = b""
                eof = not data
                if deaf and conn.all_sent and not eof:
                    continue  # the answer to the whole file never arrives
                for event in conn.receive_data(data, eof=eof):
                    if isinstance(event, ResumeRequested):
                        self.resumed.append(event.offset)
                    elif isinstance(event, FileAccepted):
                        self.accepted.append(event.file)
                wake.set()

        reading = asyncio.create_task(read())
        try:
            while True:
                if eof or conn.closed:
                    return "closed by the server" if not conn.closed else "CLOSE"
                out = conn.data_to_send(limit, cut)
                if out:
                    if bucket is not None:
                        await bucket.take(len(out))
                    writer.write(out)
                    self.sent += len(out)
                    await writer.drain()
                    continue
                if (cut is not None and conn.packets_sent >= cut) or (deaf and conn.all_sent):
                    writer.write_eof()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(5):
                            await reading
                    return "cut" if not deaf else "deaf"
                wake.clear()
                await wake.wait()
        except OSError as exc:
            return f"lost: {exc!r}"
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def dualcam_video(
    size: int, captured_ms: int | None = 1_732_192_496_000, seed: int = 1
) -> DeviceFile:
    """A DualCam rear video of ``size`` bytes; its metadata names a capture time unless
    ``captured_ms`` is None (then the transfer cannot be recognised in another session)."""
    data = bytes((i * 7 + seed) % 251 for i in range(size))
    metadata = DualCamMetadata(
        version=1, file_type=DualCamSlot.VIDEO_REAR.metadata_type, timestamp_ms=captured_ms or 0,
        trigger=1, duration_s=1, framerate=25, timezone_min=0, latitude=54.7, longitude=25.3,
    ).encode()  # fmt: skip
    return DeviceFile(CameraFile.for_slot(DualCamSlot.VIDEO_REAR), data, metadata)


def dsm_video(size: int, captured_ms: int = 1_732_192_496_000, seed: int = 2) -> DeviceFile:
    """A DSM video named by path, size and CRC announced in START, in bytes."""
    data = bytes((i * 13 + seed) % 251 for i in range(size))
    metadata = DsmMetadata(
        timestamp_ms=captured_ms, file_type=0, trigger=13, latitude=54.7, longitude=25.3,
        events=("phone",), driver_name="JONAS",
    ).encode()  # fmt: skip
    return DeviceFile(CameraFile.for_path(b"dsm/video/241121/123456.mp4\0"), data, metadata)

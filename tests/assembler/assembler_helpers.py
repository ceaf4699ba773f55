"""Hand-made ``fleetgate.camera.chunks.v1`` records, and the assembler as a child process.

:func:`chunk_records` cuts a file into chunk records the way the ingestor does
(``services/ingestor/camera/session.py``): 1024-byte packets, chained CRC-16, coalesced into records
of at most 64 KiB, each with fg-offset, fg-crc-init, fg-crc, fg-file-crc and fg-origin.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from camproto import crc16
from contracts import (
    CaptureInfo,
    ChunkMeta,
    FileInfo,
    Topic,
    TransferEnd,
    TransferStart,
    decode,
    encode,
    transfer_id,
)
from contracts.models import FileEvent, Media
from tests.helpers import eventually, eventually_async

PACKET = 1024
RECORD_BYTES = 64 * 1024
MAX_BYTES = 8 * 1024 * 1024
REPO = Path(__file__).resolve().parents[2]

Headers = list[tuple[str, bytes]]


@dataclass
class CameraFile:
    """A file a device sends, with what its START and metadata say."""

    data: bytes
    file: FileInfo
    imei: str = "356307042441013"
    captured_at: datetime | None = None
    announce_crc: bool = False  # DSM/ADAS: START carries the whole-file CRC and the size
    tid: str = ""

    def __post_init__(self) -> None:
        if not self.tid:
            ms = None if self.captured_at is None else int(self.captured_at.timestamp() * 1000)
            self.tid = transfer_id(
                self.imei,
                self.file.identifier.encode(),
                len(self.data),
                self.device_crc,
                ms,
                nonce="" if ms is not None else os.urandom(8).hex(),
            )

    @property
    def crc(self) -> int:
        return crc16(self.data)

    @property
    def device_crc(self) -> int | None:
        return self.crc if self.announce_crc else None

    def start(self, session: str = "s1", resume_offset: int = 0) -> TransferStart:
        by_path = self.file.slot is None
        return TransferStart(
            transfer_id=self.tid,
            session_id=session,
            imei=self.imei,
            file=self.file,
            capture=None if self.captured_at is None else CaptureInfo(captured_at=self.captured_at),
            size=len(self.data) if by_path else None,
            packets=None if by_path else -(-len(self.data) // PACKET),
            device_crc=self.device_crc,
            resume_offset=resume_offset,
            started_at=datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC),
        )

    def end(self, session: str = "s1") -> TransferEnd:
        return TransferEnd(
            transfer_id=self.tid,
            session_id=session,
            imei=self.imei,
            size=len(self.data),
            file_crc=self.crc,
            device_crc_ok=None if not self.announce_crc else True,
            ended_at=datetime(2026, 5, 4, 3, 2, 9, tzinfo=UTC),
        )


def dualcam(data: bytes, slot: str, captured_at: datetime | None = None) -> CameraFile:
    identifier = {"photo_front": "%photof", "photo_rear": "%photor"}.get(slot, "%" + slot[:6])
    media = "video" if slot.startswith("video") else "photo"
    info = FileInfo(identifier=identifier, slot=slot, camera="dualcam", media=media)
    return CameraFile(data, info, captured_at=captured_at)


def dsm(data: bytes, path: str, media: Media = "video") -> CameraFile:
    info = FileInfo(identifier=path, slot=None, camera="dsm", media=media)
    return CameraFile(data, info, announce_crc=True)


@dataclass(frozen=True)
class Chunk:
    offset: int
    value: bytes
    crc_init: int
    crc: int
    file_crc: int

    def headers(self, tid: str, origin: int) -> Headers:
        return ChunkMeta.chunk(
            tid,
            offset=self.offset,
            crc_init=self.crc_init,
            crc=self.crc,
            file_crc=self.file_crc,
            origin=origin,
        ).headers()


def chunk_records(
    data: bytes, begin: int = 0, end: int | None = None, record_bytes: int = RECORD_BYTES
) -> list[Chunk]:
    """The chunk records of bytes [begin, end) of ``data`` (begin a multiple of 1024)."""
    end = len(data) if end is None else end
    file_crc = crc16(data[:begin])
    out: list[Chunk] = []
    offset = begin
    while offset < end:
        value = data[offset : min(offset + record_bytes, end)]
        # Packets chained from the previous packet's CRC: the CRC of the whole file so far.
        new_crc = crc16(value, file_crc)
        out.append(Chunk(offset, value, file_crc, new_crc, new_crc))
        file_crc = new_crc
        offset += len(value)
    return out


class Sender:
    """Produces a file's records as the ingestor does."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=MAX_BYTES
        )
        #: transfer id -> partition its records went to
        self.partitions: dict[str, int] = {}

    async def __aenter__(self) -> Sender:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(self, key: str, value: bytes, headers: Headers) -> int:
        meta = await self.producer.send_and_wait(
            Topic.CHUNKS, value, key=key.encode(), headers=headers
        )
        self.partitions[key] = meta.partition
        offset: int = meta.offset
        return offset

    async def start(self, f: CameraFile, session: str = "s1", resume_offset: int = 0) -> int:
        headers = ChunkMeta.start(f.tid).headers()
        return await self.send(f.tid, encode(f.start(session, resume_offset)), headers)

    async def chunks(
        self,
        f: CameraFile,
        origin: int,
        begin: int = 0,
        end: int | None = None,
        *,
        twice: bool = False,
        mangle: Callable[[Chunk], Chunk] | None = None,
        record_bytes: int = RECORD_BYTES,
    ) -> int:
        """Send the chunk records; return the Kafka offset of the last one."""
        futures = []
        for chunk in chunk_records(f.data, begin, end, record_bytes):
            sent = mangle(chunk) if mangle is not None else chunk
            for _ in range(2 if twice else 1):
                futures.append(
                    await self.producer.send(
                        Topic.CHUNKS,
                        sent.value,
                        key=f.tid.encode(),
                        headers=sent.headers(f.tid, origin),
                    )
                )
        last = -1
        for future in futures:
            last = (await future).offset
        return last

    async def end(self, f: CameraFile, origin: int, session: str = "s1") -> int:
        headers = ChunkMeta.end(f.tid, origin=origin).headers()
        return await self.send(f.tid, encode(f.end(session)), headers)

    async def transfer(self, f: CameraFile, *, twice: bool = False) -> None:
        """A whole file in one session (every record twice with ``twice``)."""
        origin = await self.start(f)
        if twice:
            await self.start(f)
        await self.chunks(f, origin, twice=twice)
        await self.end(f, origin)
        if twice:
            await self.end(f, origin)


async def file_events(
    bootstrap: str, until: Callable[[list[Any]], bool], within: float = 30.0
) -> list[Any]:
    """Events on fleetgate.files.v1 (read from the start) once ``until(events)`` holds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    events: list[Any] = []
    try:
        parts = consumer.partitions_for_topic(Topic.FILES) or set()
        if not parts:
            parts = set(range(4))
        tps = [TopicPartition(Topic.FILES, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + within
        while not until(events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"files events so far: {events!r}")
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                events.extend(decode(FileEvent, r.value) for r in records)
    finally:
        await consumer.stop()
    return events


@dataclass
class AssemblerProcess:
    """``fleetgate assembler`` as a child process, its log in a file."""

    kafka: str
    s3: Any
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def log(self) -> Path:
        return self.workdir / f"assembler-{self.runs}.log"

    def start(self) -> AssemblerProcess:
        self.runs += 1
        env = {
            **os.environ,
            "FLEETGATE_KAFKA_BOOTSTRAP": self.kafka,
            "FLEETGATE_S3_ENDPOINT": self.s3.url,
            "FLEETGATE_S3_ACCESS_KEY": self.s3.access_key,
            "FLEETGATE_S3_SECRET_KEY": self.s3.secret_key,
            "FLEETGATE_S3_BUCKET": self.s3.bucket,
            "FLEETGATE_S3_PART_SIZE": str(5 * 1024 * 1024),
            "FLEETGATE_SPOOL_DIR": str(self.workdir / "spool"),
            "FLEETGATE_LOG_JSON": "true",
            "FLEETGATE_LOG_LEVEL": "INFO",
            "FLEETGATE_BROKER_SESSION_TIMEOUT_SECONDS": "6",
            "FLEETGATE_BROKER_REBALANCE_TIMEOUT_SECONDS": "6",
            "FLEETGATE_BROKER_HEARTBEAT_INTERVAL_SECONDS": "1",
            "FLEETGATE_BROKER_COMMIT_INTERVAL_SECONDS": "0.2",
            "PYTHONWARNINGS": "ignore",
            **self.env,
        }
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "fleetgate", "assembler"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        return self

    def lines(self, run: int | None = None) -> list[str]:
        path = self.workdir / f"assembler-{run or self.runs}.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def logged(self, event: str, run: int | None = None) -> list[str]:
        return [line for line in self.lines(run) if f'"event": "{event}"' in line]

    async def wait_logged(self, event: str, count: int = 1, within: float = 30.0) -> None:
        await wait_for(lambda: len(self.logged(event)) >= count, within, f"log {event}")

    def terminate(self, timeout: float = 10.0) -> int:
        popen = self.popen
        assert popen is not None
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
                raise
        return popen.returncode

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


wait_for = eventually  # the shared helpers (tests/helpers.py), under this module's old names
wait_until = eventually_async


def objects(client: Any, bucket: str) -> dict[str, Any]:
    return {o.object_name: o for o in client.list_objects(bucket, recursive=True)}


def read_object(client: Any, bucket: str, key: str) -> bytes:
    response = client.get_object(bucket, key)
    try:
        data: bytes = response.read()
    finally:
        response.close()
        response.release_conn()
    return data


async def committed(bootstrap: str, group: str, partitions: Sequence[int]) -> dict[int, int]:
    """The group's committed offsets of the chunk topic (-1 or None: nothing yet)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        out = {}
        for p in partitions:
            with contextlib.suppress(Exception):
                value = await consumer.committed(TopicPartition(Topic.CHUNKS, p))
                out[p] = -1 if value is None else value
        return out
    finally:
        await consumer.stop()

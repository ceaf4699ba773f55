"""One device connection: socket <-> camproto.ServerConnection <-> Kafka.

The device hears "done" (REPEAT INIT) for a file only after Kafka has acknowledged, with
acks=all, every record of it. Reading the socket pauses while too many bytes wait for Kafka.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

import contracts
from camproto import (
    CameraFile,
    ChunkReceived,
    CrcMismatch,
    DefaultPolicy,
    Event,
    FileEmpty,
    FileOffered,
    Metadata,
    MetadataReceived,
    RemoteProtocolError,
    ServerConnection,
    ServerState,
    SessionClosed,
    SessionStarted,
    TransferComplete,
    TransferStarted,
)
from contracts import ChunkHeader, RecordKind, Topic
from contracts import models as wire

from . import metrics
from .convert import capture_info, capture_ms, file_info
from .settings import IngestorSettings

_log = structlog.get_logger("fleetgate.ingestor")
_READ = 64 * 1024


class Sink(Protocol):
    """Where records go: Kafka in production (``KafkaSink``)."""

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        """Enqueue one record, waiting while the producer is full; the future resolves to
        its metadata (``.offset``) once the broker acknowledged it."""
        ...


class KafkaFailed(Exception):
    """A record was not acknowledged: the file is not durable, so the device is not told."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Record:
    offset: int
    crc_init: int
    crc: int
    file_crc: int
    parts: list[bytes]
    size: int


@dataclass(slots=True)
class _Transfer:
    id: str
    file: CameraFile
    origin: int
    started: float
    resume_offset: int
    record: _Record | None = None
    bytes: int = 0
    crc_mismatches: int = 0


@dataclass(slots=True)
class CameraSession:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sink: Sink
    settings: IngestorSettings
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    imei: str | None = None
    close_reason: str = "device_closed"
    _conn: ServerConnection = field(init=False)
    _metadata: dict[bytes, Metadata] = field(default_factory=dict)
    _transfer: _Transfer | None = None
    _pending: deque[tuple[asyncio.Future[Any], int]] = field(default_factory=deque)
    _pending_bytes: int = 0
    _received: int = 0
    _opened: float = field(default_factory=time.monotonic)
    peer: str = ""
    _log: Any = None

    def __post_init__(self) -> None:
        self._conn = ServerConnection(DefaultPolicy(metadata=self.settings.request_metadata))
        peer = self.writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._log = _log.bind(session=self.session_id, peer=self.peer)

    # The loop -------------------------------------------------------------------------

    async def run(self, stopping: Callable[[], bool] = lambda: False) -> str:
        """Serve the connection until it ends; return the close-reason category."""
        await self._session_event(wire.Connected, peer=self.peer)
        detail = ""
        try:
            detail = await self._serve(stopping)
        except RemoteProtocolError as exc:
            self.close_reason, detail = "protocol_error", str(exc)
            # Chunks that checked out before the error stay useful for a resume; a file
            # completed in the same read cannot be confirmed any more, so the device resends.
            kept = [e for e in exc.events if not isinstance(e, TransferComplete | SessionClosed)]
            try:
                await self._handle(kept)
            except KafkaFailed as kafka:
                self.close_reason, detail = "kafka_error", str(kafka)
        except KafkaFailed as exc:
            self.close_reason, detail = "kafka_error", str(exc)
        except (ConnectionError, TimeoutError) as exc:
            self.close_reason, detail = "device_closed", f"connection lost: {exc!r}"
        finally:
            await self._finish(detail)
        return self.close_reason

    async def _serve(self, stopping: Callable[[], bool]) -> str:
        loop = asyncio.get_running_loop()
        conn = self._conn
        last_data = loop.time()
        while True:
            await self._bound_pending(self.settings.max_buffered_bytes)
            idle = self.settings.idle_timeout if self.imei else self.settings.init_timeout
            now = loop.time()
            wait = last_data + idle - now
            deadline = conn.next_deadline()
            if deadline is not None:
                wait = min(wait, deadline - now)
            try:
                async with asyncio.timeout(max(wait, 0)):
                    data = await self.reader.read(_READ)
            except TimeoutError:
                now = loop.time()
                if now - last_data >= idle:
                    self.close_reason = "idle"
                    events = conn.close(f"no data for {idle:g} s")
                    await self._handle(events)
                    await self._write()
                    return f"no data for {idle:g} s"
                await self._handle(conn.handle_timeout(now))
                await self._write()
                if conn.state is ServerState.CLOSED:
                    self.close_reason = "device_closed"
                    return "device stopped answering RESUME"
                continue
            if not data:
                await self._handle(conn.receive_eof())
                return "device closed the connection"
            last_data = loop.time()
            await self._handle(conn.receive_data(data, last_data))
            await self._write()
            if conn.state is ServerState.CLOSED:
                return "session closed"
            if stopping() and conn.state in (ServerState.AWAIT_INIT, ServerState.AWAIT_PATH):
                self.close_reason = "shutdown"
                await self._handle(conn.close("ingestor shutting down"))
                await self._write()
                return "ingestor shutting down"

    async def _write(self) -> None:
        out = self._conn.data_to_send()
        if out:
            self.writer.write(out)
            await self.writer.drain()

    # Events ---------------------------------------------------------------------------

    async def _handle(self, events: list[Event] | list[object]) -> None:
        for event in events:
            if isinstance(event, ChunkReceived):
                await self._on_chunk(event)
            elif isinstance(event, TransferComplete):
                await self._on_complete(event)
            elif isinstance(event, TransferStarted):
                await self._on_started(event)
            elif isinstance(event, CrcMismatch):
                await self._on_crc_mismatch(event)
            elif isinstance(event, MetadataReceived):
                self._metadata[event.file.identifier] = event.metadata
                await self._session_event(
                    wire.MetadataReceived,
                    file=file_info(event.file),
                    capture=capture_info(event.metadata),
                )
            elif isinstance(event, FileOffered):
                await self._session_event(wire.FileOffered, file=file_info(event.file))
            elif isinstance(event, SessionStarted):
                self.imei = f"{event.imei:015d}"
                self._log = self._log.bind(imei=self.imei)
                await self._session_event(
                    wire.SessionStarted,
                    protocol=event.protocol,
                    settings=event.settings,
                    offered=[file_info(f) for f in event.offered],
                    path_file_ready=event.path_file_ready,
                )
            elif isinstance(event, SessionClosed):
                if event.clean:
                    self.close_reason = "clean"
            elif isinstance(event, FileEmpty):
                self._log.info("file_empty", file=event.file.path)

    async def _on_started(self, event: TransferStarted) -> None:
        assert self.imei is not None
        metadata = self._metadata.get(event.file.identifier)
        captured = capture_ms(metadata)
        total = event.size if event.size is not None else event.packets or 0
        transfer_id = contracts.transfer_id(
            self.imei,
            event.file.identifier,
            total,
            event.device_crc,
            captured,
            nonce="" if captured is not None else self.session_id,
        )
        start = wire.TransferStart(
            transfer_id=transfer_id,
            session_id=self.session_id,
            imei=self.imei,
            file=file_info(event.file),
            capture=None if metadata is None else capture_info(metadata),
            size=event.size,
            packets=event.packets,
            device_crc=event.device_crc,
            resume_offset=event.resume_offset,
            started_at=_now(),
        )
        headers = [
            _header(ChunkHeader.KIND, RecordKind.START),
            _header(ChunkHeader.TRANSFER, transfer_id),
        ]
        future = await self._send(Topic.CHUNKS, transfer_id.encode(), wire.encode(start), headers)
        origin = (await self._ack(future)).offset  # chunk records point back at this one
        self._transfer = _Transfer(
            id=transfer_id,
            file=event.file,
            origin=origin,
            started=time.monotonic(),
            resume_offset=event.resume_offset,
        )
        self._log = self._log.bind(transfer=transfer_id)
        await self._session_event(
            wire.TransferStarted,
            transfer_id=transfer_id,
            file=file_info(event.file),
            size=event.size,
            packets=event.packets,
            resume_offset=event.resume_offset,
        )

    async def _on_chunk(self, event: ChunkReceived) -> None:
        transfer = self._transfer
        assert transfer is not None
        size = len(event.data)
        transfer.bytes += size
        self._received += size
        metrics.file_bytes.inc(size)
        record = transfer.record
        if (
            record is not None
            and event.offset == record.offset + record.size
            and event.crc_init == record.crc
            and record.size + size <= self.settings.record_bytes
        ):
            record.parts.append(event.data)
            record.size += size
            record.crc, record.file_crc = event.crc, event.file_crc
            return
        await self._flush_record()
        transfer.record = _Record(
            offset=event.offset,
            crc_init=event.crc_init,
            crc=event.crc,
            file_crc=event.file_crc,
            parts=[event.data],
            size=size,
        )

    async def _flush_record(self) -> None:
        transfer = self._transfer
        if transfer is None or transfer.record is None:
            return
        record, transfer.record = transfer.record, None
        headers = [
            _header(ChunkHeader.KIND, RecordKind.CHUNK),
            _header(ChunkHeader.TRANSFER, transfer.id),
            _header(ChunkHeader.OFFSET, record.offset),
            _header(ChunkHeader.CRC_INIT, record.crc_init),
            _header(ChunkHeader.CRC, record.crc),
            _header(ChunkHeader.FILE_CRC, record.file_crc),
            _header(ChunkHeader.ORIGIN, transfer.origin),
        ]
        value = b"".join(record.parts)
        await self._send(Topic.CHUNKS, transfer.id.encode(), value, headers)

    async def _on_crc_mismatch(self, event: CrcMismatch) -> None:
        metrics.crc_mismatches.inc()
        transfer = self._transfer
        assert transfer is not None
        transfer.crc_mismatches += 1
        await self._flush_record()
        await self._session_event(
            wire.CrcMismatch,
            transfer_id=transfer.id,
            offset=event.offset,
            expected=event.expected,
            received=event.received,
        )

    async def _on_complete(self, event: TransferComplete) -> None:
        transfer = self._transfer
        assert transfer is not None and self.imei is not None
        await self._flush_record()
        end = wire.TransferEnd(
            transfer_id=transfer.id,
            session_id=self.session_id,
            imei=self.imei,
            size=event.size,
            file_crc=event.file_crc,
            device_crc_ok=event.device_crc_ok,
            ended_at=_now(),
        )
        headers = [
            _header(ChunkHeader.KIND, RecordKind.END),
            _header(ChunkHeader.TRANSFER, transfer.id),
            _header(ChunkHeader.ORIGIN, transfer.origin),
        ]
        last_byte = time.monotonic()
        await self._send(Topic.CHUNKS, transfer.id.encode(), wire.encode(end), headers)
        await self._bound_pending(0)  # every record of the file acknowledged
        durable = time.monotonic() - last_byte
        self._conn.confirm_file()
        await self._write()
        elapsed = time.monotonic() - transfer.started
        metrics.durable_seconds.observe(durable)
        metrics.transfer_seconds.observe(elapsed)
        metrics.files.labels(transfer.file.camera.value).inc()
        self._log.info(
            "transfer",
            file=transfer.file.path,
            camera=transfer.file.camera.value,
            size=event.size,
            received=transfer.bytes,
            resume_offset=transfer.resume_offset,
            crc_mismatches=transfer.crc_mismatches,
            device_crc_ok=event.device_crc_ok,
            seconds=round(elapsed, 3),
            durable_seconds=round(durable, 4),
        )
        await self._session_event(
            wire.TransferComplete,
            transfer_id=transfer.id,
            size=event.size,
            file_crc=event.file_crc,
            device_crc_ok=event.device_crc_ok,
            durable_seconds=durable,
        )
        self._transfer = None
        self._log = self._log.unbind("transfer")

    # Kafka ----------------------------------------------------------------------------

    async def _session_event(self, model: type[Any], **fields: Any) -> None:
        event = model(
            session_id=self.session_id,
            ingestor=self.settings.instance,
            imei=self.imei,
            at=_now(),
            **fields,
        )
        key = (self.imei or self.session_id).encode()
        await self._send(Topic.SESSIONS, key, wire.encode(event), [])

    async def _send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        try:
            # Enqueueing waits while the producer is full (backpressure) or has no metadata
            # (broker unreachable); the latter must not hang the session.
            async with asyncio.timeout(self.settings.ack_timeout):
                future = await self.sink.send(topic, key, value, headers)
        except Exception as exc:  # refused outright, or no room for ack_timeout seconds
            raise KafkaFailed(f"cannot enqueue to {topic}: {exc!r}") from exc
        metrics.kafka_records.labels(topic).inc()
        self._pending.append((future, len(value)))
        self._pending_bytes += len(value)
        return future

    async def _ack(self, future: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self.settings.ack_timeout):
                return await future
        except Exception as exc:
            raise KafkaFailed(f"record not acknowledged: {exc!r}") from exc

    async def _bound_pending(self, limit: int) -> None:
        """Wait for Kafka until at most ``limit`` bytes are unacknowledged."""
        while self._pending and (self._pending_bytes > limit or self._pending[0][0].done()):
            future, size = self._pending[0]
            await self._ack(future)
            self._pending.popleft()
            self._pending_bytes -= size

    async def _finish(self, detail: str) -> None:
        try:
            if self.close_reason != "kafka_error":
                await self._flush_record()  # valid bytes are worth keeping for a resume
                await self._session_event(
                    wire.Closed,
                    reason=detail or self.close_reason,
                    clean=self.close_reason == "clean",
                    bytes_received=self._received,
                    duration_seconds=time.monotonic() - self._opened,
                )
                await self._bound_pending(0)
        except KafkaFailed as exc:
            self.close_reason, detail = "kafka_error", str(exc)
        finally:
            metrics.sessions_closed.labels(self.close_reason).inc()
            level = "info" if self.close_reason in ("clean", "device_closed") else "warning"
            getattr(self._log, level)(
                "session_closed",
                reason=self.close_reason,
                detail=detail,
                bytes_received=self._received,
                seconds=round(time.monotonic() - self._opened, 3),
            )
            self.writer.close()
            try:
                async with asyncio.timeout(2):
                    await self.writer.wait_closed()
            except (TimeoutError, ConnectionError):
                pass


def _header(name: ChunkHeader, value: object) -> tuple[str, bytes]:
    return (name.value, str(value).encode())

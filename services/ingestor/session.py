"""One device connection: socket <-> camproto.ServerConnection <-> Kafka.

The device hears "done" (REPEAT INIT) for a file only after Kafka has acknowledged, with
acks=all, every record of it. Reading the socket pauses while too many bytes wait for Kafka.

Each chunk record Kafka acknowledges moves the transfer's durable offset, which goes out on
``fleetgate.camera.progress.v1`` (:mod:`ingestor.progress`); a device that comes back, here
or to another ingestor, resumes from there (:mod:`ingestor.resume`). On a stop request the
session closes at once unless a file is in flight; told to cut (the drain deadline), it
makes what it received durable, publishes that point, and only then sends CLOSE.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from camproto import (
    CameraFile,
    ChunkReceived,
    CrcMismatch,
    DefaultPolicy,
    Event,
    FileEmpty,
    FileGivenUp,
    FileOffered,
    Metadata,
    MetadataReceived,
    PathEmpty,
    RemoteProtocolError,
    ServerConnection,
    ServerState,
    SessionClosed,
    SessionStarted,
    TransferComplete,
    TransferStarted,
)
from contracts import ChunkHeader, RecordKind, Topic, TransferProgress
from contracts import models as wire

from . import metrics
from .allowlist import NotAllowed, check_imei
from .convert import capture_info, file_info
from .progress import ProgressBook, ProgressPublisher
from .resume import ResumePolicy
from .settings import IngestorSettings

_log = structlog.get_logger("fleetgate.ingestor")
_READ = 64 * 1024
#: States in which a file is being received: a stop request waits for it (until the cut).
_MID_TRANSFER = frozenset(
    {ServerState.AWAIT_SYNC, ServerState.RECEIVING, ServerState.AWAIT_CONFIRM}
)


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
    #: Once acknowledged, bytes [0, safe_end) are durable and a valid resume point (the
    #: file's last packet is never counted: a RESUME must point inside the file); safe_crc
    #: is their CRC-16.
    safe_end: int
    safe_crc: int


@dataclass(slots=True)
class _Transfer:
    id: str
    file: CameraFile
    origin: int  # Kafka offset of the transfer's first start record
    partition: int  # chunk-topic partition of its records
    started: float
    resume_offset: int
    total: int  # as START said: packets (DualCam) or bytes
    file_crc: int  # CRC-16 of the bytes received so far, from byte 0
    durable: int  # bytes [0, durable) acknowledged by Kafka: a resume point
    durable_crc: int
    #: The transfer was complete in Kafka already (the device never heard REPEAT INIT): the
    #: resent tail is checked and confirmed, nothing is published.
    replay: TransferProgress | None = None
    record: _Record | None = None
    #: Chunk records not yet acknowledged, in order: (future, safe_end, safe_crc).
    acks: deque[tuple[asyncio.Future[Any], int, int]] = field(default_factory=deque)
    broken: bool = False  # a chunk record failed: no more progress is published
    #: Kafka offset of the last record of the transfer acknowledged in this session.
    last_offset: int = -1
    #: An acknowledged record landed below an earlier one: the broker lost the log.
    lost: bool = False
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
    #: Where resume points come from, and where progress goes; the ingestor shares one of
    #: each between its sessions (a session alone makes its own).
    book: ProgressBook | None = None
    publisher: ProgressPublisher | None = None
    _policy: ResumePolicy = field(init=False)
    _own_publisher: bool = False
    _stop_requested: bool = False
    _cut: bool = False
    _woken: bool = False
    _read_timer: asyncio.Timeout | None = None
    _abort: str | None = None

    def __post_init__(self) -> None:
        if self.book is None:
            self.book = ProgressBook(self.settings.progress_max_age)
        if self.publisher is None:
            self.publisher = ProgressPublisher(self.sink, self.book, self.settings.ack_timeout)
            self._own_publisher = True
        self._policy = ResumePolicy(
            self.book, self.session_id, DefaultPolicy(metadata=self.settings.request_metadata)
        )
        self._conn = ServerConnection(self._policy)
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
            except NotAllowed as refused:
                self.close_reason, detail = "not_allowed", str(refused)
        except NotAllowed as exc:
            self.close_reason, detail = "not_allowed", str(exc)
        except KafkaFailed as exc:
            self.close_reason, detail = "kafka_error", str(exc)
        except (ConnectionError, TimeoutError) as exc:
            self.close_reason, detail = "device_closed", f"connection lost: {exc!r}"
        finally:
            self._read_timer = None
            await self._finish(detail)
        return self.close_reason

    async def _serve(self, stopping: Callable[[], bool]) -> str:
        loop = asyncio.get_running_loop()
        conn = self._conn
        last_data = opened = loop.time()
        while True:
            if self._cut and conn.state in _MID_TRANSFER:
                return await self._cut_transfer()
            if (stopping() or self._stop_requested) and conn.state not in _MID_TRANSFER:
                return await self._close("shutdown", "ingestor shutting down")
            await self._bound_pending(self.settings.max_buffered_bytes)
            idle = self.settings.idle_timeout if self.imei else self.settings.init_timeout
            # INIT must come within init_timeout of connecting, however the bytes trickle in.
            since = last_data if self.imei else opened
            now = loop.time()
            wait = since + idle - now
            deadline = conn.next_deadline()
            if deadline is not None:
                wait = min(wait, deadline - now)
            try:
                async with asyncio.timeout(max(wait, 0)) as self._read_timer:
                    data = await self.reader.read(_READ)
            except TimeoutError:
                self._read_timer = None
                if self._woken:  # a stop request: the loop's head decides
                    self._woken = False
                    continue
                now = loop.time()
                if now - since >= idle:
                    self.close_reason = "idle"
                    why = f"no data for {idle:g} s" if self.imei else f"no INIT within {idle:g} s"
                    await self._handle(conn.close(why))
                    await self._write()
                    return why
                await self._handle(conn.handle_timeout(now))
                await self._write()
                if conn.state is ServerState.CLOSED:
                    self.close_reason = "device_closed"
                    return conn.closed_reason or "device stopped answering RESUME"
                continue
            self._read_timer = None
            self._woken = False
            if not data:
                await self._handle(conn.receive_eof())
                return "device closed the connection"
            last_data = loop.time()
            await self._handle(conn.receive_data(data, last_data))
            await self._write()
            if self._abort is not None:
                return await self._close("resume_reset", self._abort)
            if conn.state is ServerState.CLOSED:
                return conn.closed_reason or "session closed"

    # Stopping -------------------------------------------------------------------------

    def request_stop(self, *, cut: bool = False) -> None:
        """Close at once if no file is in flight, else when it is done; with ``cut``, also
        mid-file: make what arrived durable, publish that point, then CLOSE."""
        self._stop_requested = True
        self._cut = self._cut or cut
        timer = self._read_timer
        if timer is not None:
            with contextlib.suppress(RuntimeError):  # the read is over already
                timer.reschedule(asyncio.get_running_loop().time())
                self._woken = True

    async def _close(self, reason: str, detail: str) -> str:
        """Send CLOSE SESSION: the device comes back later (here or elsewhere) for the rest."""
        self.close_reason = reason
        await self._handle(self._conn.close(detail))
        await self._write()
        return detail

    async def _cut_transfer(self) -> str:
        """The drain deadline passed mid-file: reach a durable point, then CLOSE."""
        transfer = self._transfer
        await self._flush_record()
        await self._bound_pending(0)  # every record of this session acknowledged
        durable = 0
        assert self.publisher is not None
        if transfer is not None:
            self._settle_acks(transfer)
            durable = transfer.durable
            await self.publisher.flush(transfer.id)  # and the progress record that says so
        return await self._close(
            "shutdown", f"ingestor shutting down; transfer durable up to byte {durable}"
        )

    async def _write(self) -> None:
        out = self._conn.data_to_send()
        if out:
            self.writer.write(out)
            await self.writer.drain()

    # Events ---------------------------------------------------------------------------

    async def _handle(self, events: list[Event] | list[object]) -> None:
        for event in events:
            if self._abort is not None:
                return
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
                check_imei(self.settings, self.imei)  # raises NotAllowed: nothing published
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
            elif isinstance(event, FileGivenUp):
                self._log.warning("file_given_up", file=event.file.path, sessions=event.sessions)
            elif isinstance(event, PathEmpty):
                self._log.info("path_empty")  # the device has no file ready

    async def _on_started(self, event: TransferStarted) -> None:
        assert self.imei is not None and self.book is not None
        metadata = self._metadata.get(event.file.identifier)
        total = event.size if event.size is not None else event.packets or 0
        decision = self._policy.take(event.file)  # the id and resume point START got
        transfer_id, entry = decision.transfer_id, decision.entry
        if entry is not None and not entry.complete and entry.offset != event.resume_offset:
            entry = None  # camproto found the point unusable: the file starts at 0
        self._log = self._log.bind(transfer=transfer_id)
        start_offset = -1
        if entry is not None and entry.complete:
            # Stored already; the device never heard REPEAT INIT. Take the resent tail,
            # confirm, publish nothing (no record, so no second file downstream).
            metrics.resumes.labels("complete").inc()
            origin, partition = entry.origin, entry.partition
        else:
            origin, partition = await self._publish_start(event, transfer_id, metadata)
            start_offset = origin
            if entry is not None:
                before = max(entry.origin, entry.last_offset or -1)
                if partition != entry.partition or origin <= before:
                    # The chunk log restarted below the transfer's first start record (a
                    # broker that lost its data): nothing there to resume from.
                    metrics.resumes.labels("lost").inc()
                    self._log.warning(
                        "resume_point_lost",
                        origin=entry.origin,
                        partition=entry.partition,
                        start_offset=origin,
                        start_partition=partition,
                        offset=entry.offset,
                    )
                    self.book.clear()
                    assert self.publisher is not None
                    self.publisher.forget(transfer_id)
                    self._abort = (
                        f"resume point of {transfer_id} lost: chunk log reset "
                        f"(start record at {partition}/{origin}, earlier records up to "
                        f"{entry.partition}/{before}); the device will restart it"
                    )
                    return
                metrics.resumes.labels("resumed").inc()
                metrics.resumed_bytes.inc(event.resume_offset)
                origin = entry.origin  # chunk records point back at the first start
        resumed = entry is not None and entry.offset == event.resume_offset
        resumed_crc = entry.crc if entry is not None and resumed else 0
        self._transfer = _Transfer(
            id=transfer_id,
            file=event.file,
            origin=origin,
            partition=partition,
            started=time.monotonic(),
            resume_offset=event.resume_offset,
            total=total,
            file_crc=resumed_crc,
            durable=event.resume_offset,
            durable_crc=resumed_crc,
            replay=entry if entry is not None and entry.complete else None,
            last_offset=-1 if entry is not None and entry.complete else start_offset,
        )
        await self._session_event(
            wire.TransferStarted,
            transfer_id=transfer_id,
            file=file_info(event.file),
            size=event.size,
            packets=event.packets,
            resume_offset=event.resume_offset,
        )

    async def _publish_start(
        self, event: TransferStarted, transfer_id: str, metadata: Metadata | None
    ) -> tuple[int, int]:
        """Write the start record; return its (Kafka offset, partition) once acknowledged."""
        assert self.imei is not None
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
        meta = await self._ack(future)
        return int(meta.offset), int(getattr(meta, "partition", -1))

    async def _on_chunk(self, event: ChunkReceived) -> None:
        transfer = self._transfer
        assert transfer is not None
        size = len(event.data)
        transfer.bytes += size
        self._received += size
        metrics.file_bytes.inc(size)
        before, transfer.file_crc = transfer.file_crc, event.file_crc
        if transfer.replay is not None:
            return  # durable already
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
        else:
            await self._flush_record()
            record = transfer.record = _Record(
                offset=event.offset,
                crc_init=event.crc_init,
                crc=event.crc,
                file_crc=event.file_crc,
                parts=[event.data],
                size=size,
                safe_end=event.offset,
                safe_crc=before,
            )
        record.safe_end, record.safe_crc = event.resume_end, event.resume_crc

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
        future = await self._send(Topic.CHUNKS, transfer.id.encode(), value, headers)
        transfer.acks.append((future, record.safe_end, record.safe_crc))
        future.add_done_callback(lambda _: self._settle_acks(transfer))

    def _settle_acks(self, transfer: _Transfer) -> None:
        """Move the durable offset over the chunk records acknowledged in order, and
        publish it (called as acknowledgements arrive)."""
        advanced = False
        while transfer.acks and transfer.acks[0][0].done():
            future, end, crc = transfer.acks.popleft()
            if future.cancelled() or future.exception() is not None:
                transfer.broken = True  # the session fails on it; nothing more is claimed
                transfer.acks.clear()
                return
            if not self._in_order(transfer, future.result()):
                return
            if end > transfer.durable:
                transfer.durable, transfer.durable_crc = end, crc
                advanced = True
        if advanced and not transfer.broken:
            assert self.publisher is not None
            self.publisher.publish(self._progress(transfer))

    def _in_order(self, transfer: _Transfer, meta: Any) -> bool:
        """Records of a transfer land in one partition at growing offsets. One that does not
        means the broker lost the log under it (an in-memory broker restarted): what was
        acknowledged is gone, so the file must not be confirmed, and no progress trusted."""
        offset, partition = getattr(meta, "offset", None), getattr(meta, "partition", None)
        if not isinstance(offset, int) or not isinstance(partition, int) or transfer.partition < 0:
            return True
        if partition == transfer.partition and offset > transfer.last_offset:
            transfer.last_offset = offset
            return True
        transfer.lost = transfer.broken = True
        transfer.acks.clear()
        self._log.warning(
            "chunk_log_reset",
            partition=partition,
            offset=offset,
            expected_partition=transfer.partition,
            after_offset=transfer.last_offset,
        )
        assert self.book is not None and self.publisher is not None
        self.book.clear()  # every entry points into the lost log
        self.publisher.forget(transfer.id)
        return False

    def _progress(
        self, transfer: _Transfer, size: int | None = None, file_crc: int | None = None
    ) -> TransferProgress:
        assert self.imei is not None
        return TransferProgress(
            transfer_id=transfer.id,
            imei=self.imei,
            identifier=transfer.file.path,
            total=transfer.total,
            offset=transfer.durable,
            crc=transfer.durable_crc,
            origin=transfer.origin,
            partition=transfer.partition,
            last_offset=None if transfer.last_offset < 0 else transfer.last_offset,
            complete=size is not None,
            size=size,
            file_crc=file_crc,
            session_id=self.session_id,
            ingestor=self.settings.instance,
            updated_at=_now(),
        )

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
        if transfer.replay is not None:
            await self._on_replayed(transfer, event)
            return
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
        self._settle_acks(transfer)
        if transfer.lost:
            raise KafkaFailed(f"the broker lost the records of {transfer.id}; not confirmed")
        assert self.publisher is not None
        if not transfer.broken:
            self.publisher.publish(self._progress(transfer, event.size, event.file_crc))
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

    async def _on_replayed(self, transfer: _Transfer, event: TransferComplete) -> None:
        """A transfer already complete in Kafka came again: confirm it, publish nothing."""
        entry = transfer.replay
        assert entry is not None
        if entry.file_crc is not None and entry.file_crc != event.file_crc:
            # Same IMEI, file, size and capture time, other bytes at the end: keep what is
            # stored (its records are all in Kafka) and say so.
            self._log.warning(
                "replay_differs", stored_crc=entry.file_crc, resent_crc=event.file_crc
            )
        self._conn.confirm_file()
        await self._write()
        self._log.info(
            "transfer_already_complete",
            file=transfer.file.path,
            size=event.size,
            resume_offset=transfer.resume_offset,
            received=transfer.bytes,
        )
        await self._session_event(
            wire.TransferComplete,
            transfer_id=transfer.id,
            size=event.size,
            file_crc=event.file_crc,
            device_crc_ok=event.device_crc_ok,
            durable_seconds=0.0,
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
        if self._transfer is not None and self._transfer.lost:
            raise KafkaFailed(f"the broker lost the records of {self._transfer.id}")
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
                transfer = self._transfer
                if transfer is not None:  # cut short: say where a resume can start
                    self._settle_acks(transfer)
                    assert self.publisher is not None
                    await self.publisher.flush(transfer.id)
        except KafkaFailed as exc:
            self.close_reason, detail = "kafka_error", str(exc)
        finally:
            # Records never awaited (the session failed first) still resolve later; take
            # their outcome so a failure is not reported again as "never retrieved".
            for future, _size in self._pending:
                future.add_done_callback(_retrieve)
            self._pending.clear()
            self._pending_bytes = 0
            if self._own_publisher and self.publisher is not None:
                broken = self.close_reason == "kafka_error"
                await self.publisher.close(within=0 if broken else self.settings.close_timeout)
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


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _header(name: ChunkHeader, value: object) -> tuple[str, bytes]:
    return (name.value, str(value).encode())

"""One camera connection's adapter: ``camproto.ServerConnection`` events <-> Kafka records.

The device hears "done" (REPEAT INIT) for a file only after Kafka has acknowledged, with
acks=all, every record of it (the ledger's barrier). Consecutive DATA packets are coalesced
into chunk records of up to ``record_bytes``.

Each chunk record Kafka acknowledges moves the transfer's durable offset, which goes out on
``fleetgate.camera.progress.v1`` (:mod:`.progress`); a device that comes back, here or to
another ingestor, resumes from there (:mod:`.resume`). The edge (:mod:`ingestor.connection`)
runs the socket, the timeouts, backpressure and the drain; told to cut mid-file, this
session makes what it received durable and publishes that point before the CLOSE.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaError

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
    TransferRefused,
    TransferRestarted,
    TransferStarted,
)
from contracts import ChunkMeta, Topic, TransferProgress
from contracts import models as wire

from ..adapter import Link, PeerError, Session
from ..sink import KafkaFailed
from . import metrics
from .convert import capture_info, file_info
from .progress import ProgressBook, ProgressPublisher, ProgressReader
from .resume import MAX_GENERATIONS, Claims, Decision, ResumePolicy
from .settings import CameraSettings

__all__ = ["CameraSession"]

#: States in which a file is being received: a stop request waits for it (until the cut).
_MID_TRANSFER = frozenset(
    {ServerState.AWAIT_SYNC, ServerState.RECEIVING, ServerState.AWAIT_CONFIRM}
)


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
    #: The safe point one packet before: a resume restarts there, to compare that packet.
    check_end: int
    check_crc: int


@dataclass(slots=True)
class _Transfer:
    id: str
    decision: Decision  # how the policy named it (to name it again if it starts over)
    file: CameraFile
    origin: int  # Kafka offset of the transfer's first start record
    partition: int  # chunk-topic partition of its records
    started: float
    resume_offset: int
    total: int  # as START said: packets (DualCam) or bytes
    clock: float  # when START came, in the edge's clock (the ``now`` it passes)
    file_crc: int  # CRC-16 of the bytes received so far, from byte 0
    durable: int  # bytes [0, durable) acknowledged by Kafka: a resume point
    durable_crc: int
    #: The start of the last durable packet and its CRC, once one is acknowledged here.
    check: tuple[int, int] | None = None
    #: The transfer was complete in Kafka already (the device never heard REPEAT INIT): the
    #: resent tail is checked and confirmed, nothing is published.
    replay: TransferProgress | None = None
    record: _Record | None = None
    #: Chunk records not yet acknowledged, in order: (future, safe_end, safe_crc, and the
    #: check point before it).
    acks: deque[tuple[asyncio.Future[Any], int, int, int, int]] = field(default_factory=deque)
    broken: bool = False  # a chunk record failed: no more progress is published
    #: Kafka offset of the last record of the transfer acknowledged in this session.
    last_offset: int = -1
    #: An acknowledged record landed below an earlier one: the broker lost the log.
    lost: bool = False
    bytes: int = 0
    crc_mismatches: int = 0
    #: How long its claim on the progress topic took (None: not claimed there).
    claim_seconds: float | None = None
    #: Claimed there: when (edge clock) a record must go out to show the holder is alive.
    refresh_at: float | None = None
    #: The progress record it resumed from (incomplete), while nothing more is durable.
    resumed_from: TransferProgress | None = None


class CameraSession(Session):
    """A camera connection: feeds ``camproto``, publishes transfers, confirms durable files."""

    def __init__(
        self,
        link: Link,
        settings: CameraSettings,
        book: ProgressBook,
        publisher: ProgressPublisher,
        claims: Claims | None = None,
        reader: ProgressReader | None = None,
    ) -> None:
        self.link = link
        self.settings = settings
        #: Where resume points come from, and where progress goes (shared by the sessions).
        self.book = book
        self.publisher = publisher
        #: Follows the progress topic into the book: with it, a transfer is claimed there
        #: before it is written (one writer across ingestors); without it, only here.
        self.reader = reader
        base = DefaultPolicy(
            metadata=settings.request_metadata, max_file_bytes=settings.file_size_limits()
        )
        self._policy = ResumePolicy(
            book, link.session_id, base, stale_seconds=settings.claim_stale_seconds
        )
        if claims is not None:
            self._policy.claims = claims
        self._conn = ServerConnection(self._policy)
        self._metadata: dict[bytes, Metadata] = {}
        self._transfer: _Transfer | None = None
        self._received = 0
        self._unmetered = 0  # file bytes not yet added to the metric
        self._opened = time.monotonic()
        self._abort: str | None = None
        self._abort_reason = "resume_reset"
        self._detail = "session closed"
        self._now = 0.0  # the edge's clock, as last passed in
        self._claim_seconds: float | None = None  # the last claim's round trip

    @property
    def session_id(self) -> str:
        return self.link.session_id

    @property
    def imei(self) -> str | None:
        return self.link.imei

    # What the edge asks ---------------------------------------------------------------

    @property
    def identified(self) -> bool:
        return self.link.imei is not None

    @property
    def busy(self) -> bool:
        return self._conn.state in _MID_TRANSFER

    @property
    def closed(self) -> bool:
        return self._conn.state is ServerState.CLOSED

    @property
    def detail(self) -> str:
        # camproto names why it closed (a timeout, a device status, an empty file ...).
        return self._conn.closed_reason or self._detail

    def next_deadline(self) -> float | None:
        deadline = self._conn.next_deadline()
        too_slow = self._too_slow_at()
        if too_slow is not None and (deadline is None or too_slow < deadline):
            deadline = too_slow
        transfer = self._transfer
        refresh = None if transfer is None else transfer.refresh_at
        if refresh is not None and (deadline is None or refresh < deadline):
            deadline = refresh
        return deadline

    def _keep_claim(self, now: float) -> None:
        """A transfer claimed on the progress topic shows its holder alive: a record at least
        every third of ``claim_stale_seconds`` (progress goes out with each chunk record
        acknowledged; a slow device sends fewer), so no other ingestor takes it as gone."""
        transfer = self._transfer
        if transfer is None or transfer.refresh_at is None or now < transfer.refresh_at:
            return
        transfer.refresh_at = now + self.settings.claim_stale_seconds / 3
        if transfer.broken or self._policy.taken_over(transfer.id):
            return
        entry = transfer.resumed_from
        if entry is not None and transfer.durable <= entry.offset:
            # Nothing durable past the point resumed from: say that point again (with its
            # check packet), so the compacted topic keeps a resume point that proves the file.
            self.publisher.publish(
                entry.model_copy(
                    update={
                        "session_id": self.session_id,
                        "ingestor": self.link.instance,
                        "updated_at": _now(),
                        "claim": None,
                        "stale_seconds": None,
                    }
                )
            )
            return
        self.publisher.publish(self._progress(transfer))

    def _too_slow_at(self) -> float | None:
        """When the file being received has been too slow (only while its data comes)."""
        transfer = self._transfer
        if transfer is None or self._conn.state not in (
            ServerState.AWAIT_SYNC,
            ServerState.RECEIVING,
        ):
            return None
        return self.settings.transfer_deadline(transfer.clock, transfer.bytes)

    def data_to_send(self) -> bytes:
        return self._conn.data_to_send()

    def summary(self) -> dict[str, Any]:
        return {"bytes_received": self._received}

    # What the edge feeds --------------------------------------------------------------

    async def start(self) -> None:
        await self._session_event(wire.Connected, peer=self.link.peer)

    async def receive_data(self, data: bytes, now: float) -> None:
        self._now = max(self._now, now)
        try:
            events = self._conn.receive_data(data, now)
        except RemoteProtocolError as exc:
            raise await self._salvage(exc) from exc
        await self._handle(events)
        if self._abort is not None:
            self.link.close_reason = self._abort_reason
            await self.close(self._abort)
            return
        if not await self._too_slow(now):  # a trickle keeps the idle timer quiet, not this
            self._keep_claim(now)

    async def receive_eof(self) -> None:
        try:
            events = self._conn.receive_eof()
        except RemoteProtocolError as exc:
            raise await self._salvage(exc) from exc
        await self._handle(events)

    async def handle_timeout(self, now: float) -> None:
        self._now = max(self._now, now)
        if await self._too_slow(now):
            return
        self._keep_claim(now)
        await self._handle(self._conn.handle_timeout(now))
        if self.closed:
            self.link.close_reason = "device_closed"
            self._detail = "device stopped answering RESUME"

    async def _too_slow(self, now: float) -> bool:
        """Close the session if the file being received is past its deadline (a trickle)."""
        too_slow = self._too_slow_at()
        transfer = self._transfer
        if too_slow is None or transfer is None or now < too_slow or self.closed:
            return False
        elapsed = now - transfer.clock
        rate = transfer.bytes / elapsed if elapsed > 0 else 0.0
        self.link.close_reason = "too_slow"
        self.link.log.warning(
            "transfer_too_slow",
            file=transfer.file.path,
            received=transfer.bytes,
            seconds=round(elapsed, 3),
            bytes_per_second=round(rate),
        )
        settings = self.settings
        await self.close(
            f"{transfer.file} too slow: {transfer.bytes} bytes in {elapsed:.1f} s "
            f"({rate:.0f} B/s; a file must average {settings.transfer_min_bytes_per_second:g} "
            f"B/s after {settings.transfer_rate_grace_seconds:g} s and take at most "
            f"{settings.transfer_max_seconds:g} s)"
        )
        return True

    async def close(self, detail: str) -> None:
        """Send CLOSE SESSION: the device comes back later (here or elsewhere) for the rest."""
        self._detail = detail
        await self._handle(self._conn.close(detail))

    async def _salvage(self, exc: RemoteProtocolError) -> PeerError:
        """Chunks that checked out before the error stay useful for a resume; a file
        completed in the same read cannot be confirmed any more, so the device resends."""
        kept = [e for e in exc.events if not isinstance(e, TransferComplete | SessionClosed)]
        await self._handle(kept)
        return PeerError(str(exc))

    async def cut(self) -> str:
        """The drain deadline passed mid-file: reach a durable point (then the edge CLOSEs)."""
        transfer = self._transfer
        await self._flush_record()
        await self.link.ledger.barrier()  # every record of this session acknowledged
        durable = 0
        if transfer is not None:
            self._settle_acks(transfer)
            durable = transfer.durable
            await self.publisher.flush(transfer.id)  # and the progress record that says so
        return f"ingestor shutting down; transfer durable up to byte {durable}"

    async def _write(self) -> None:
        """Write what the core has for the device now (a confirmation), mid-step."""
        await self.link.transmit()

    # Events ---------------------------------------------------------------------------

    async def _handle(self, events: list[Event] | list[object]) -> None:
        try:
            await self._handle_events(events)
        finally:
            if self._unmetered:
                metrics.file_bytes.inc(self._unmetered)
                self._unmetered = 0

    async def _handle_events(self, events: list[Event] | list[object]) -> None:
        for event in events:
            if self._abort is not None:
                return
            if isinstance(event, ChunkReceived):
                if not self._append(event):  # most packets: added to the record, no await
                    await self._on_chunk(event)
            elif isinstance(event, TransferComplete):
                await self._on_complete(event)
            elif isinstance(event, TransferStarted):
                await self._on_started(event, self._policy.take(event.file))
            elif isinstance(event, TransferRestarted):
                await self._on_restarted(event)
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
                link, imei = self.link, f"{event.imei:015d}"
                link.identify(imei)  # NotAllowed: nothing published
                # the device's last status (other sessions' fields kept), this connection
                status = link.registry.connected(imei, link.connection())
                await link.registry.publish(link.ledger, status)
                await self._session_event(
                    wire.SessionStarted,
                    protocol=event.protocol,
                    settings=event.settings,
                    offered=[file_info(f) for f in event.offered],
                    path_file_ready=event.path_file_ready,
                )
            elif isinstance(event, SessionClosed):
                if event.clean:
                    self.link.close_reason = "clean"
            elif isinstance(event, TransferRefused):
                self.link.close_reason = "refused"
                metrics.refused.labels(event.file.camera.value).inc()
                self.link.log.warning(
                    "transfer_refused",
                    file=event.file.path,
                    size=event.size,
                    packets=event.packets,
                    reason=event.reason,
                )
            elif isinstance(event, FileEmpty):
                self.link.log.info("file_empty", file=event.file.path)
            elif isinstance(event, FileGivenUp):
                self.link.log.warning(
                    "file_given_up", file=event.file.path, sessions=event.sessions
                )
            elif isinstance(event, PathEmpty):
                self.link.log.info("path_empty")  # the device has no file ready

    async def _on_started(self, event: TransferStarted, decision: Decision) -> None:
        """START came (``decision``: the id and resume point the policy gave it)."""
        assert self.imei is not None
        metadata = self._metadata.get(event.file.identifier)
        total = event.size if event.size is not None else event.packets or 0
        transfer_id, entry, point = decision.transfer_id, decision.entry, decision.point
        if entry is not None and point.offset != event.resume_offset:
            entry = None  # camproto found the point unusable: the file starts at 0
        self.link.log = self.link.log.bind(transfer=transfer_id)
        start_offset = -1
        if entry is not None and entry.complete:
            # Stored already; the device never heard REPEAT INIT. Take the resent tail,
            # confirm, publish nothing (no record, so no second file downstream).
            metrics.resumes.labels(metrics.PROTOCOL, "complete").inc()
            origin, partition = entry.origin, entry.partition
        else:
            self._claim_seconds = None
            claimed = await self._claim(event, decision, entry)
            if claimed is None:
                return  # another session resumes it: closing, the device comes back
            if claimed is not decision:  # another session writes it: the next free id
                decision, transfer_id, entry, point = (
                    claimed,
                    claimed.transfer_id,
                    None,
                    claimed.point,
                )
                self.link.log = self.link.log.bind(transfer=transfer_id)
            # The RESUME that asks for the data goes out now: its interval runs from here,
            # not from the start record's acknowledgement (slow in a burst; the data waits
            # in the socket meanwhile, and chunk records follow the start record).
            await self._write()
            origin, partition = await self._publish_start(event, transfer_id, metadata)
            start_offset = origin
            if entry is not None:
                before = max(entry.origin, entry.last_offset or -1)
                if partition != entry.partition or origin <= before:
                    # The chunk log restarted below the transfer's first start record (a
                    # broker that lost its data): nothing there to resume from.
                    metrics.resumes.labels(metrics.PROTOCOL, "lost").inc()
                    self.link.log.warning(
                        "resume_point_lost",
                        origin=entry.origin,
                        partition=entry.partition,
                        start_offset=origin,
                        start_partition=partition,
                        offset=entry.offset,
                    )
                    self.book.clear()
                    self.publisher.forget(transfer_id)
                    self._abort = (
                        f"resume point of {transfer_id} lost: chunk log reset "
                        f"(start record at {partition}/{origin}, earlier records up to "
                        f"{entry.partition}/{before}); the device will restart it"
                    )
                    return
                metrics.resumes.labels(metrics.PROTOCOL, "resumed").inc()
                metrics.resumed_bytes.inc(event.resume_offset)
                origin = entry.origin  # chunk records point back at the first start
        resumed_crc = point.crc if entry is not None else 0
        self._transfer = _Transfer(
            id=transfer_id,
            decision=decision,
            file=event.file,
            origin=origin,
            partition=partition,
            started=time.monotonic(),
            resume_offset=event.resume_offset,
            total=total,
            clock=self._now,
            file_crc=resumed_crc,
            durable=event.resume_offset,
            durable_crc=resumed_crc,
            replay=entry if entry is not None and entry.complete else None,
            last_offset=-1 if entry is not None and entry.complete else start_offset,
            claim_seconds=None if start_offset < 0 else self._claim_seconds,
        )
        if transfer_id in self._policy.claimed:
            self._transfer.refresh_at = self._now + self.settings.claim_stale_seconds / 3
            if entry is not None and not entry.complete:
                self._transfer.resumed_from = entry
        await self._session_event(
            wire.TransferStarted,
            transfer_id=transfer_id,
            file=file_info(event.file),
            size=event.size,
            packets=event.packets,
            resume_offset=event.resume_offset,
        )

    async def _claim(
        self, event: TransferStarted, decision: Decision, entry: TransferProgress | None
    ) -> Decision | None:
        """Claim ``decision``'s transfer on the progress topic before writing anything of it
        (:mod:`.arbiter`): send the claim, wait for Kafka's ack, read the topic back up to it.
        Won: the decision. Lost while asking from byte 0: the file starts over under the
        next free id (claimed in turn). Lost while resuming (the device was asked for a
        point in the file another session writes): None, and the session closes without
        confirming; the device comes back and the next START knows the holder."""
        reader = self.reader
        if reader is None or decision.generation >= MAX_GENERATIONS:
            return decision  # not read across ingestors, or an id of this session's own
        for _ in range(MAX_GENERATIONS + 1):
            tid = decision.transfer_id
            began = time.monotonic()
            try:
                async with asyncio.timeout(self.settings.claim_timeout_seconds):
                    partition, offset = await self.publisher.claim(
                        self._claim_record(event, decision, entry)
                    )
                    wait = self.settings.claim_timeout_seconds
                    if not await reader.reached(partition, offset, wait):
                        raise TimeoutError("the progress reader did not reach the claim")
            except (KafkaFailed, KafkaError, TimeoutError) as exc:
                metrics.claims.labels("failed").inc()
                raise KafkaFailed(
                    f"claim of transfer {tid} not acknowledged and read back within "
                    f"{self.settings.claim_timeout_seconds:g} s: {exc!r}"
                ) from exc
            took = time.monotonic() - began
            metrics.claim_seconds.observe(took)
            self._claim_seconds = (
                took if self._claim_seconds is None else self._claim_seconds + took
            )
            if self._policy.won(tid):
                metrics.claims.labels("won").inc()
                return decision
            metrics.claims.labels("lost").inc()
            holder = self.book.holder(tid)
            self.link.log.info(
                "transfer_claim_lost",
                transfer=tid,
                holder=None if holder is None else holder.session_id,
                holder_ingestor=None if holder is None else holder.ingestor,
                resume_offset=event.resume_offset,
            )
            if event.resume_offset:
                self._policy.release(tid)
                self._abort = (
                    f"transfer {tid} is written by session "
                    f"{'?' if holder is None else holder.session_id} on ingestor "
                    f"{'?' if holder is None else holder.ingestor}; closing without writing, "
                    "the device comes back"
                )
                self._abort_reason = "superseded"
                return None
            decision, entry = self._policy.restarted(decision), None
            if decision.generation >= MAX_GENERATIONS:
                return decision
        raise KafkaFailed(f"no transfer id of {event.file} could be claimed")  # pragma: no cover

    def _claim_record(
        self, event: TransferStarted, decision: Decision, entry: TransferProgress | None
    ) -> TransferProgress:
        """The claim: the progress this session starts from (the entry it resumes, so the
        compacted topic keeps the resume point), named as its own."""
        assert self.imei is not None
        total = event.size if event.size is not None else event.packets or 0
        if entry is None or entry.complete:
            entry = TransferProgress(
                transfer_id=decision.transfer_id,
                imei=self.imei,
                identifier=event.file.path,
                total=total,
                offset=0,
                crc=0,
                origin=-1,  # no start record yet
                partition=-1,
                session_id=self.session_id,
                ingestor=self.link.instance,
                updated_at=_now(),
            )
        return entry.model_copy(
            update={
                "session_id": self.session_id,
                "ingestor": self.link.instance,
                "updated_at": _now(),
                "claim": "takeover" if decision.takeover else "start",
                "stale_seconds": self.settings.claim_stale_seconds,
            }
        )

    async def _on_restarted(self, event: TransferRestarted) -> None:
        """The device's bytes from the resume point are another file's than the ones Kafka
        holds: name it anew (the next generation of its identity) and take it from byte 0.
        The transfer resumed stays as it was (stored, or left incomplete)."""
        transfer = self._transfer
        assert transfer is not None
        await self._flush_record()
        metrics.resumes.labels(metrics.PROTOCOL, "differs").inc()
        decision = self._policy.restarted(transfer.decision)
        self.link.log.warning(
            "transfer_restarted",
            file=event.file.path,
            resume_offset=event.offset,
            reason=event.reason,
            new_transfer=decision.transfer_id,
            generation=decision.generation,
        )
        self.link.log = self.link.log.unbind("transfer")
        started = TransferStarted(
            file=event.file,
            size=event.size,
            packets=event.packets,
            device_crc=event.device_crc,
            resume_offset=0,
        )
        await self._on_started(started, decision)

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
        headers = ChunkMeta.start(transfer_id).headers()
        future = await self._send(Topic.CHUNKS, transfer_id.encode(), wire.encode(start), headers)
        meta = await self.link.ledger.acknowledged(future)
        return int(meta.offset), int(getattr(meta, "partition", -1))

    def _superseded(self, transfer: _Transfer) -> bool:
        """Another session took ``transfer`` over (this device's new connection, most likely,
        while this one was not seen to be gone): write nothing more of it, close."""
        if not self._policy.taken_over(transfer.id):
            return False
        if self._abort is None:
            self._abort = (
                f"another connection of this IMEI took transfer {transfer.id} over; "
                "nothing more of it is written here"
            )
            self._abort_reason = "superseded"
        return True

    def _append(self, event: ChunkReceived) -> bool:
        """The hot path: a packet that continues the record being built joins it. False if
        it needs :meth:`_on_chunk` (a new record, a replayed transfer)."""
        transfer = self._transfer
        assert transfer is not None
        record = transfer.record
        size = len(event.data)
        if (
            record is None
            or transfer.replay is not None
            or self._policy.taken_over(transfer.id)
            or event.offset != record.offset + record.size
            or event.crc_init != record.crc
            or record.size + size > self.settings.record_bytes
        ):
            return False
        transfer.bytes += size
        self._received += size
        self._unmetered += size  # counted once per read, not per packet
        transfer.file_crc = event.file_crc
        record.parts.append(event.data)
        record.size += size
        record.crc, record.file_crc = event.crc, event.file_crc
        if event.resume_end > record.safe_end:
            record.check_end, record.check_crc = record.safe_end, record.safe_crc
            record.safe_end, record.safe_crc = event.resume_end, event.resume_crc
        return True

    async def _on_chunk(self, event: ChunkReceived) -> None:
        """A packet that starts a record (or of a transfer durable already)."""
        transfer = self._transfer
        assert transfer is not None
        if self._superseded(transfer):
            return
        size = len(event.data)
        transfer.bytes += size
        self._received += size
        metrics.file_bytes.inc(size)
        before, transfer.file_crc = transfer.file_crc, event.file_crc
        if transfer.replay is not None:
            return  # durable already
        # Not a continuation of the record being built (that is :meth:`_append`): a new one.
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
            check_end=event.offset,
            check_crc=before,
        )
        if event.resume_end > record.safe_end:
            record.check_end, record.check_crc = record.safe_end, record.safe_crc
            record.safe_end, record.safe_crc = event.resume_end, event.resume_crc

    async def _flush_record(self) -> None:
        transfer = self._transfer
        if transfer is None or transfer.record is None:
            return
        if self._superseded(transfer):
            transfer.record = None  # the new owner has them from the device again
            return
        record, transfer.record = transfer.record, None
        headers = ChunkMeta.chunk(
            transfer.id,
            offset=record.offset,
            crc_init=record.crc_init,
            crc=record.crc,
            file_crc=record.file_crc,
            origin=transfer.origin,
        ).headers()
        value = b"".join(record.parts)
        future = await self._send(Topic.CHUNKS, transfer.id.encode(), value, headers)
        transfer.acks.append(
            (future, record.safe_end, record.safe_crc, record.check_end, record.check_crc)
        )
        future.add_done_callback(lambda _: self._settle_acks(transfer))

    def _settle_acks(self, transfer: _Transfer) -> None:
        """Move the durable offset over the chunk records acknowledged in order, and
        publish it (called as acknowledgements arrive)."""
        advanced = False
        while transfer.acks and transfer.acks[0][0].done():
            future, end, crc, check_end, check_crc = transfer.acks.popleft()
            if future.cancelled() or future.exception() is not None:
                transfer.broken = True  # the session fails on it; nothing more is claimed
                transfer.acks.clear()
                return
            if not self._in_order(transfer, future.result()):
                return
            if end > transfer.durable:
                transfer.durable, transfer.durable_crc = end, crc
                transfer.check = (check_end, check_crc) if check_end < end else None
                advanced = True
        if advanced and not transfer.broken and not self._policy.taken_over(transfer.id):
            self.publisher.publish(self._progress(transfer))
            if transfer.refresh_at is not None:
                transfer.refresh_at = self._now + self.settings.claim_stale_seconds / 3

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
        # Every later wait for Kafka in this session fails: nothing of it may be confirmed.
        self.link.ledger.fail(f"the broker lost the records of {transfer.id}")
        self.link.log.warning(
            "chunk_log_reset",
            partition=partition,
            offset=offset,
            expected_partition=transfer.partition,
            after_offset=transfer.last_offset,
        )
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
            check_offset=None if transfer.check is None else transfer.check[0],
            check_crc=None if transfer.check is None else transfer.check[1],
            origin=transfer.origin,
            partition=transfer.partition,
            last_offset=None if transfer.last_offset < 0 else transfer.last_offset,
            complete=size is not None,
            size=size,
            file_crc=file_crc,
            session_id=self.session_id,
            ingestor=self.link.instance,
            updated_at=_now(),
        )

    async def _on_crc_mismatch(self, event: CrcMismatch) -> None:
        metrics.crc_mismatches.labels(metrics.PROTOCOL).inc()
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
        if self._superseded(transfer):
            return  # not confirmed here: the device comes back
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
        headers = ChunkMeta.end(transfer.id, origin=transfer.origin).headers()
        last_byte = time.monotonic()
        await self._send(Topic.CHUNKS, transfer.id.encode(), wire.encode(end), headers)
        await self.link.ledger.barrier()  # every record of the file acknowledged
        durable = time.monotonic() - last_byte
        self._settle_acks(transfer)
        if transfer.lost:
            raise KafkaFailed(f"the broker lost the records of {transfer.id}; not confirmed")
        if not transfer.broken:
            self.publisher.publish(self._progress(transfer, event.size, event.file_crc))
        self._conn.confirm_file()
        await self._write()
        elapsed = time.monotonic() - transfer.started
        metrics.durable_seconds.labels(metrics.PROTOCOL).observe(durable)
        metrics.transfer_seconds.labels(metrics.PROTOCOL).observe(elapsed)
        metrics.files.labels(transfer.file.camera.value).inc()
        self.link.log.info(
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
            claim_seconds=None
            if transfer.claim_seconds is None
            else round(transfer.claim_seconds, 4),
        )
        await self._session_event(
            wire.TransferComplete,
            transfer_id=transfer.id,
            size=event.size,
            file_crc=event.file_crc,
            device_crc_ok=event.device_crc_ok,
            durable_seconds=durable,
        )
        self._policy.release(transfer.id)
        self._transfer = None
        self.link.log = self.link.log.unbind("transfer")

    async def _on_replayed(self, transfer: _Transfer, event: TransferComplete) -> None:
        """A transfer already complete in Kafka came again: confirm it, publish nothing."""
        # camproto compared the file's CRC with the stored one (another file starts over).
        self._conn.confirm_file()
        await self._write()
        self.link.log.info(
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
        self._policy.release(transfer.id)
        self._transfer = None
        self.link.log = self.link.log.unbind("transfer")

    # Kafka ----------------------------------------------------------------------------

    async def _session_event(self, model: type[Any], **fields: Any) -> None:
        event = model(
            session_id=self.session_id,
            ingestor=self.link.instance,
            imei=self.imei,
            at=_now(),
            **fields,
        )
        key = (self.imei or self.session_id).encode()
        await self._send(Topic.SESSIONS, key, wire.encode(event), [])

    async def _send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        return await self.link.ledger.publish(topic, key, value, headers)

    async def finish(self, detail: str) -> None:
        """Valid bytes are worth keeping for a resume: flush them, say the session closed,
        and, cut short mid-file, publish where a resume can start."""
        # The socket is gone: the device's next session may take its transfer on at once.
        self._policy.claims.release_session(self.session_id)
        await self._flush_record()
        await self._session_event(
            wire.Closed,
            reason=detail,
            clean=self.link.close_reason == "clean",
            bytes_received=self._received,
            duration_seconds=time.monotonic() - self._opened,
        )
        await self.link.ledger.barrier()
        transfer = self._transfer
        if transfer is not None:
            self._settle_acks(transfer)
            await self.publisher.flush(transfer.id)

"""Reassembly of camera files from ``fleetgate.camera.chunks.v1`` records, without Kafka or S3.

One :class:`Reassembler` holds every transfer in progress on this instance: the transfer's
``start`` record, the next file offset it expects, the CRC-16 of the bytes so far (chained
from byte 0, as the device computes it), their SHA-256, and a spool file on local disk with
the bytes themselves (memory per transfer stays constant whatever the file's size).

Records of one transfer arrive in order on one partition, but any of them may come again (a
device resends after a reconnect, Kafka redelivers after a crash), and this instance may have
lost its state (restart, partition moved). :meth:`Reassembler.feed` takes one record and says
what to do next (:data:`Outcome`):

* :class:`Progress`: nothing more to do.
* :class:`Skipped`: the record added nothing (duplicate, or a transfer already finished).
* :class:`Rewind`: bytes before this record are missing here; read the partition again from
  Kafka offset ``origin`` up to this record, feed those records with ``rewinding=True``, then
  this record again with ``rewinding=True``.
* :class:`Completed`: every byte arrived and checked out; store the spool file, then call
  :meth:`Reassembler.finish`. Until then the transfer is ``completing``: later records of it
  are skipped, and neither :meth:`Reassembler.expire` nor a rebalance drops it.
* :class:`Failed`: the transfer cannot be stored (``category`` and ``reason`` say why); its
  state is gone, and a later ``start`` record of it starts over.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from camproto import DATA_CHUNK, crc16, packet_count
from contracts import ChunkHeaderError, ChunkMeta, RecordKind, TransferEnd, TransferStart, decode
from contracts.chunks import Headers

if TYPE_CHECKING:
    from _hashlib import HASH

__all__ = [
    "FAILURE_CATEGORIES",
    "Completed",
    "Failed",
    "Outcome",
    "Progress",
    "Reassembler",
    "Record",
    "RecordError",
    "Rewind",
    "Skipped",
    "Transfer",
    "announced_bytes",
    "end_size",
]

#: ``Failed.category`` values (a metric label: keep this set small and fixed).
FAILURE_CATEGORIES = ("crc", "file_crc", "size", "missing", "malformed", "spool", "internal")

_SAFE_NAME = re.compile(r"[0-9A-Za-z_-]{1,64}")


class RecordError(ValueError):
    """A record that does not follow the contract (missing or unparsable header or value)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One ``fleetgate.camera.chunks.v1`` record, headers parsed."""

    kind: RecordKind
    transfer_id: str
    partition: int
    offset: int  # the record's Kafka offset
    value: bytes
    file_offset: int = 0
    crc_init: int = 0
    crc: int = 0
    file_crc: int = 0
    origin: int | None = None

    @classmethod
    def parse(
        cls, key: bytes | None, value: bytes | None, headers: Headers | None, partition: int,
        offset: int,
    ) -> Record:  # fmt: skip
        """Read a record as Kafka delivered it; :class:`RecordError` if it breaks the contract."""
        try:
            meta = ChunkMeta.from_headers(key, headers)
        except ChunkHeaderError as exc:
            raise RecordError(str(exc)) from None
        return cls(
            meta.kind,
            meta.transfer_id,
            partition,
            offset,
            value or b"",
            file_offset=meta.offset,
            crc_init=meta.crc_init,
            crc=meta.crc,
            file_crc=meta.file_crc,
            origin=meta.origin,
        )


@dataclass(slots=True, eq=False)
class Transfer:
    """What this instance holds of one file in progress."""

    start: TransferStart
    path: Path  # spool file with bytes [0, expected)
    partition: int
    origin: int  # Kafka offset of the start record that created this state
    expected: int = 0  # next file offset; also the number of bytes held
    file_crc: int = 0  # CRC-16 of bytes [0, expected), chained from 0
    sha256: HASH = field(default_factory=hashlib.sha256)
    touched: float = field(default_factory=time.monotonic)
    records: int = 0
    duplicates: int = 0
    #: Every byte checked out and the file is being stored: its records are ignored from now
    #: on, and neither expiry nor a rebalance drops it.
    completing: bool = False

    @property
    def transfer_id(self) -> str:
        return self.start.transfer_id


@dataclass(frozen=True, slots=True)
class Progress:
    transfer: Transfer


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str  # duplicate | done | failed


@dataclass(frozen=True, slots=True)
class Rewind:
    origin: int


@dataclass(frozen=True, slots=True)
class Completed:
    transfer: Transfer
    end: TransferEnd
    #: The whole-file CRC the device announced in START matches (None: it announced none).
    device_crc_ok: bool | None
    partition: int
    offset: int  # Kafka offset of the end record


@dataclass(frozen=True, slots=True)
class Failed:
    transfer_id: str
    start: TransferStart | None  # None when the start record could not be found
    category: str  # one of FAILURE_CATEGORIES
    reason: str
    offset: int  # Kafka offset of the record where it failed
    partition: int
    size: int = 0  # bytes held when it failed


Outcome = Progress | Skipped | Rewind | Completed | Failed


class _Bounded:
    """A set that forgets its oldest members beyond ``size``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, None] = OrderedDict()

    def add(self, item: str) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def discard(self, item: str) -> None:
        self._items.pop(item, None)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)


class Reassembler:
    """Every transfer this instance is assembling, plus those recently finished or failed."""

    def __init__(
        self,
        spool: Path,
        *,
        remember: int = 100_000,
        max_file_bytes: Mapping[str, int] | None = None,
    ) -> None:
        self.spool = spool
        self.spool.mkdir(parents=True, exist_ok=True)
        self.transfers: dict[str, Transfer] = {}
        #: Largest file accepted per camera kind (``FileInfo.camera``); a kind not listed has
        #: no limit but the size START announces.
        self.max_file_bytes: Mapping[str, int] = dict(max_file_bytes or {})
        self._done = _Bounded(remember)
        self._failed = _Bounded(remember)

    def __len__(self) -> int:
        return len(self.transfers)

    def is_done(self, transfer_id: str) -> bool:
        return transfer_id in self._done

    @property
    def spool_bytes(self) -> int:
        """Bytes held in spool files, over every transfer (completing ones included)."""
        return sum(t.expected for t in self.transfers.values())

    # Records ----------------------------------------------------------------------------

    def feed(self, record: Record, *, rewinding: bool = False) -> Outcome:
        """Apply one record. While ``rewinding``, missing bytes fail the transfer at once."""
        tid = record.transfer_id
        if record.kind is RecordKind.START:
            return self._on_start(record)
        if tid in self._done:
            return Skipped("done")
        if tid in self._failed:
            return Skipped("failed")
        transfer = self.transfers.get(tid)
        if transfer is not None and transfer.completing:
            return Skipped("done")
        if transfer is None:
            if rewinding:
                return self._fail_unknown(record, "missing", "no start record before it")
            if record.origin is None or record.origin >= record.offset:
                return self._fail_unknown(record, "missing", "no usable fg-origin header")
            return Rewind(record.origin)
        transfer.touched = time.monotonic()
        transfer.records += 1
        transfer.partition = record.partition
        if record.kind is RecordKind.CHUNK:
            return self._on_chunk(transfer, record, rewinding)
        return self._on_end(transfer, record, rewinding)

    def malformed(self, transfer_id: str, reason: str, partition: int, offset: int) -> Outcome:
        """A record of ``transfer_id`` broke the contract: fail the transfer if it is held."""
        transfer = self.transfers.get(transfer_id)
        if transfer is None or transfer.completing:
            return Skipped("malformed")
        return self._fail(transfer, "malformed", reason, partition, offset)

    def give_up(self, transfer_id: str, reason: str, partition: int, offset: int) -> Outcome:
        """Handling a record of ``transfer_id`` keeps failing: fail the transfer if held."""
        transfer = self.transfers.get(transfer_id)
        if transfer is None or transfer.completing:
            return Skipped("internal")
        return self._fail(transfer, "internal", reason, partition, offset)

    def _on_start(self, record: Record) -> Outcome:
        tid = record.transfer_id
        try:
            start = decode(TransferStart, record.value)
        except ValidationError as exc:
            return self.malformed(tid, f"start record: {_first_error(exc)}", *_where(record))
        if start.transfer_id != tid:
            return self.malformed(tid, "start record of another transfer id", *_where(record))
        self._failed.discard(tid)  # a new attempt starts over
        transfer = self.transfers.get(tid)
        if tid in self._done or (transfer is not None and transfer.completing):
            return Skipped("done")
        if transfer is not None:  # a resumed session: what we hold stays valid
            transfer.touched = time.monotonic()
            transfer.partition = record.partition
            return Progress(transfer)
        path = self.spool / f"{_spool_name(tid)}.part"
        transfer = Transfer(
            start=start, path=path, partition=record.partition, origin=record.offset
        )
        limit = self.max_file_bytes.get(start.file.camera)
        announced = announced_bytes(start)
        if limit is not None and announced is not None and announced > limit:
            reason = (
                f"START announces {announced} bytes, over the {limit} bytes allowed for a "
                f"{start.file.camera} file (max_file_bytes)"
            )
            return self._fail(transfer, "size", reason, *_where(record))
        try:
            path.unlink(missing_ok=True)
            path.touch()
        except OSError as exc:
            return self._fail(transfer, "spool", f"spool file: {exc}", *_where(record))
        self.transfers[tid] = transfer
        return Progress(transfer)

    def _on_chunk(self, transfer: Transfer, record: Record, rewinding: bool) -> Outcome:
        begin, data = record.file_offset, record.value
        end = begin + len(data)
        bound = announced_bytes(transfer.start)
        if bound is not None and end > bound:
            reason = f"a chunk reaches byte {end}, past the {bound} bytes START announced"
            return self._fail(transfer, "size", reason, *_where(record))
        if end <= transfer.expected:
            transfer.duplicates += 1
            return Skipped("duplicate")
        if begin > transfer.expected:
            if rewinding:
                return self._fail(
                    transfer,
                    "missing",
                    f"bytes {transfer.expected}..{begin} never arrived",
                    *_where(record),
                )
            return Rewind(_origin(transfer, record))
        computed = crc16(data, record.crc_init)
        if computed != record.crc:
            return self._fail(
                transfer,
                "crc",
                f"CRC mismatch in the chunk at byte {begin} ({len(data)} bytes): "
                f"computed {computed:#06x}, record says {record.crc:#06x}",
                *_where(record),
            )
        tail = memoryview(data)[transfer.expected - begin :]
        file_crc = crc16(tail, transfer.file_crc)
        if file_crc != record.file_crc:
            return self._fail(
                transfer,
                "file_crc",
                f"file CRC mismatch at byte {end}: computed {file_crc:#06x}, "
                f"record says {record.file_crc:#06x}",
                *_where(record),
            )
        if len(tail) < len(data):
            transfer.duplicates += 1
        try:
            with transfer.path.open("ab") as spool:
                spool.write(tail)
        except OSError as exc:
            return self._fail(transfer, "spool", f"spool write failed: {exc}", *_where(record))
        transfer.sha256.update(tail)
        transfer.file_crc = file_crc
        transfer.expected = end
        return Progress(transfer)

    def _on_end(self, transfer: Transfer, record: Record, rewinding: bool) -> Outcome:
        try:
            end = decode(TransferEnd, record.value)
        except ValidationError as exc:
            reason = f"end record: {_first_error(exc)}"
            return self._fail(transfer, "malformed", reason, *_where(record))
        held = transfer.expected
        if held < end.size and not rewinding:
            return Rewind(_origin(transfer, record))
        start = transfer.start
        problem = None
        if held != end.size:
            problem = f"{held} bytes arrived, the end record says {end.size}"
        elif start.size is not None and held != start.size:
            problem = f"{held} bytes arrived, START announced {start.size}"
        elif start.packets is not None and packet_count(held) != start.packets:
            problem = f"{held} bytes arrived, START announced {start.packets} packets"
        if problem is not None:
            return self._fail(transfer, "size", problem, *_where(record))
        if end.file_crc != transfer.file_crc:
            reason = (
                f"file CRC {transfer.file_crc:#06x} of the bytes held, the end record says "
                f"{end.file_crc:#06x}"
            )
            return self._fail(transfer, "file_crc", reason, *_where(record))
        device_ok = None if start.device_crc is None else start.device_crc == transfer.file_crc
        transfer.completing = True
        return Completed(transfer, end, device_ok, *_where(record))

    # Endings ----------------------------------------------------------------------------

    def finish(self, transfer: Transfer) -> None:
        """The file is stored: forget its bytes, and ignore its records from now on."""
        self._done.add(transfer.transfer_id)
        self._drop(transfer)

    def fail(self, done: Completed, reason: str) -> Failed:
        """Storing a completed transfer went wrong in a way retrying cannot mend."""
        return self._fail(done.transfer, "internal", reason, done.partition, done.offset)

    def _fail(
        self, transfer: Transfer, category: str, reason: str, partition: int, offset: int
    ) -> Failed:
        self._failed.add(transfer.transfer_id)
        self._drop(transfer)
        return Failed(
            transfer.transfer_id,
            transfer.start,
            category,
            reason,
            offset,
            partition,
            transfer.expected,
        )

    def _fail_unknown(self, record: Record, category: str, reason: str) -> Failed:
        self._failed.add(record.transfer_id)
        return Failed(record.transfer_id, None, category, reason, record.offset, record.partition)

    def _drop(self, transfer: Transfer) -> None:
        if self.transfers.get(transfer.transfer_id) is transfer:
            del self.transfers[transfer.transfer_id]
        with contextlib.suppress(OSError):
            transfer.path.unlink(missing_ok=True)

    def expire(
        self, idle: float, now: float | None = None, keep: str | None = None
    ) -> list[Transfer]:
        """Drop transfers (but ``keep``) without a record for ``idle`` seconds; a later
        record of one of them rewinds."""
        now = time.monotonic() if now is None else now
        stale = [
            t
            for t in self.transfers.values()
            if now - t.touched >= idle and t.transfer_id != keep and not t.completing
        ]
        for transfer in stale:
            self._drop(transfer)
        return stale

    def release(self, transfer_id: str) -> int:
        """Free the spool of a transfer in progress (not one being stored); its next record
        rewinds. Returns the bytes freed."""
        transfer = self.transfers.get(transfer_id)
        if transfer is None or transfer.completing:
            return 0
        self._drop(transfer)
        return transfer.expected

    def drop_partitions(self, partitions: Iterable[int]) -> list[Transfer]:
        """Drop the transfers of partitions this instance no longer consumes."""
        gone = set(partitions)
        dropped = [t for t in self.transfers.values() if t.partition in gone and not t.completing]
        for transfer in dropped:
            self._drop(transfer)
        return dropped

    def close(self) -> None:
        for transfer in list(self.transfers.values()):
            self._drop(transfer)


def announced_bytes(start: TransferStart) -> int | None:
    """The most bytes the file START announced can have (DualCam: whole packets)."""
    if start.size is not None:
        return start.size
    if start.packets is not None:
        return start.packets * DATA_CHUNK
    return None


def end_size(record: Record) -> int:
    """The file size an end record states (0 if it cannot be read: the record then fails
    the transfer when fed)."""
    try:
        end = decode(TransferEnd, record.value)
    except ValidationError:
        return 0
    return int(end.size)


def _spool_name(transfer_id: str) -> str:
    if _SAFE_NAME.fullmatch(transfer_id):
        return transfer_id
    return hashlib.sha256(transfer_id.encode()).hexdigest()[:32]


def _where(record: Record) -> tuple[int, int]:
    return record.partition, record.offset


def _origin(transfer: Transfer, record: Record) -> int:
    """Where to read again from: the record's fg-origin, else the start we hold."""
    if record.origin is not None and record.origin < record.offset:
        return record.origin
    return transfer.origin


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "value"
    return f"{where}: {first.get('msg', '')}"

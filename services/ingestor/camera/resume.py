"""Where a transfer resumes: the server policy that consults the :class:`ProgressBook`.

A transfer is recognised across reconnects and ingestors by its id
(:func:`contracts.transfer_id`): the IMEI, the file's identifier (DualCam slot or path), the
size or packet count START announces, the whole-file CRC START announces (DSM/ADAS), and the
capture time of the file's metadata (0x000B). Without a capture time (no metadata asked or
none in it) two different photos of one DualCam slot would look alike, so the id also takes
the session's nonce: such a transfer is never resumed from another session; it starts at 0.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import contracts
from camproto import (
    CameraFile,
    DefaultPolicy,
    DelegatingPolicy,
    EmptyFileMemory,
    ResumePoint,
    ServerPolicy,
    SessionInfo,
    TransferInfo,
)
from contracts import TransferProgress

from .arbiter import is_live
from .convert import capture_ms
from .progress import ProgressBook

__all__ = [
    "EMPTY_FILES",
    "MAX_GENERATIONS",
    "Claims",
    "Decision",
    "ResumePolicy",
    "resume_point_of",
    "transfer_key",
]

#: Files that came back empty (START 0), per device, shared by every session of this process:
#: one empty in 3 sessions in a row is given up until the device offers something else.
EMPTY_FILES = EmptyFileMemory(limit=3)


#: Different files that share one identity (IMEI, file, size, capture time), at most: past
#: that, a file gets an id of its own session (never resumed elsewhere).
MAX_GENERATIONS = 16


def transfer_key(imei: int | str, transfer: TransferInfo, nonce: str, generation: int = 0) -> str:
    """The transfer id of the file START announced; ``nonce`` is the session's id, used only
    when the metadata gives no capture time; ``generation`` tells apart different files of
    the same identity (:func:`contracts.transfer_id`)."""
    imei_text = imei if isinstance(imei, str) else f"{imei:015d}"
    captured = capture_ms(transfer.metadata)
    total = transfer.size if transfer.size is not None else transfer.packets or 0
    return contracts.transfer_id(
        imei_text,
        transfer.file.identifier,
        total,
        transfer.device_crc,
        captured,
        nonce="" if captured is not None else nonce,
        generation=generation,
    )


def resume_point_of(entry: TransferProgress) -> ResumePoint:
    """Where a transfer known from its progress record resumes, and what proves the device
    still holds the same file.

    Incomplete, with a check point: one packet before the durable offset, the device's
    resent packet to give the stored CRC at the offset again (whatever the device does with
    its CRC chain). Complete: at its last packet, the file to end with the stored CRC.
    """
    if entry.complete:
        return ResumePoint(entry.offset, entry.crc, entry.file_crc)
    check = entry.check_offset
    if check is not None and entry.check_crc is not None and 0 <= check < entry.offset:
        return ResumePoint(check, entry.check_crc, verify_offset=entry.offset, verify_crc=entry.crc)
    return ResumePoint(entry.offset, entry.crc)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def proves_the_file(entry: TransferProgress) -> bool:
    """Whether resuming from ``entry`` compares bytes the device resends with Kafka's."""
    return entry.complete or (entry.check_offset is not None and entry.check_crc is not None)


@dataclass(slots=True)
class Claims:
    """Which session of this process writes each transfer: one at a time.

    A session claims the transfer it starts (or resumes) when START arrives, and releases it
    when the file is confirmed, started over under another id, or the session ends. A
    session may take over a transfer another one holds when its resume point proves the file
    (:func:`proves_the_file`); the one that lost it stops writing it.

    Across ingestors the progress topic decides (:mod:`.arbiter`); this process's own
    knowledge comes first, so it remembers its sessions that ended (``ended``): a holder the
    topic names that ended here writes nothing any more.
    """

    owners: dict[str, str] = field(default_factory=dict)
    held: dict[str, set[str]] = field(default_factory=dict)  # session -> its transfers
    ended: OrderedDict[str, None] = field(default_factory=OrderedDict)
    remember_ended: int = 100_000

    def __len__(self) -> int:
        return len(self.owners)

    def owner(self, transfer_id: str) -> str | None:
        return self.owners.get(transfer_id)

    def claim(self, transfer_id: str, session: str) -> None:
        """Make ``session`` the writer (taking it from another one, if any)."""
        previous = self.owners.get(transfer_id)
        if previous is not None and previous != session:
            self.release(transfer_id, previous)
        self.owners[transfer_id] = session
        self.held.setdefault(session, set()).add(transfer_id)

    def release(self, transfer_id: str, session: str) -> None:
        if self.owners.get(transfer_id) == session:
            del self.owners[transfer_id]
        held = self.held.get(session)
        if held is not None:
            held.discard(transfer_id)
            if not held:
                del self.held[session]

    def release_session(self, session: str) -> None:
        for transfer_id in self.held.pop(session, set()):
            if self.owners.get(transfer_id) == session:
                del self.owners[transfer_id]
        self.ended[session] = None
        while len(self.ended) > self.remember_ended:
            self.ended.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Decision:
    """What :meth:`ResumePolicy.resume_point` decided for one START."""

    transfer_id: str
    file: CameraFile
    point: ResumePoint
    #: The progress record the point came from; None when the transfer starts at 0.
    entry: TransferProgress | None
    imei: int = 0
    info: TransferInfo | None = None
    generation: int = 0
    #: It resumes from a point that proves the file while another session holds it.
    takeover: bool = False


@dataclass(slots=True)
class ResumePolicy(DelegatingPolicy):
    """:class:`camproto.DefaultPolicy`, plus resume points from the progress book, one writer
    per transfer (``claims``), and files given up after coming back empty session after
    session (``empty_files``).

    The file START announces may be any of the generations of its identity in the book: the
    most recently updated one that no other session of this process is writing is the
    candidate. A known, incomplete transfer resumes at its durable offset with the CRC of the
    bytes before it; a known complete one (its device never heard REPEAT INIT) resumes at the
    start of its last packet, with the whole file's CRC for camproto to compare, so the
    device resends one packet and hears "done". When the candidate is written by another
    session, or camproto finds the bytes differ (:meth:`restarted`), the file starts at 0
    under the first generation nobody uses. Each decision is queued for the session
    (:meth:`take`), which must use the same transfer id and origin.
    """

    book: ProgressBook
    nonce: str
    base: ServerPolicy = field(default_factory=DefaultPolicy)
    decisions: deque[Decision] = field(default_factory=deque)
    empty_files: EmptyFileMemory = field(default_factory=lambda: EMPTY_FILES)
    #: Shared by the sessions of one ingestor (the camera protocol holds it).
    claims: Claims = field(default_factory=Claims)
    #: Seconds without a record after which a holder another ingestor named is taken to be
    #: gone (:func:`arbiter.is_live`).
    stale_seconds: float = 60.0
    clock: Callable[[], datetime] = _utcnow
    #: Transfers this session won on the progress topic (:meth:`won`).
    claimed: set[str] = field(default_factory=set)

    def given_up(self, session: SessionInfo, offered: Sequence[CameraFile]) -> Collection[bytes]:
        return self.empty_files.given_up(session.imei, offered)

    def start_answered(
        self, session: SessionInfo, file: CameraFile, offered: Sequence[CameraFile], *, empty: bool
    ) -> int | None:
        return self.empty_files.answered(session.imei, file, offered, empty=empty)

    def resume_point(self, session: SessionInfo, transfer: TransferInfo) -> ResumePoint:
        ids = [transfer_key(session.imei, transfer, self.nonce, g) for g in range(MAX_GENERATIONS)]
        known = [(g, e) for g, tid in enumerate(ids) if (e := self.book.get(tid)) is not None]
        total = transfer.size if transfer.size is not None else transfer.packets or 0
        point, entry, generation = ResumePoint(), None, None
        takeover = False
        latest = max(known, key=lambda item: item[1].updated_at, default=None)
        if latest is not None:
            g, candidate = latest
            usable = candidate.total == total and (candidate.offset > 0 or candidate.complete)
            if not self._taken(ids[g]):
                generation = g
                if usable:
                    entry, point = candidate, resume_point_of(candidate)
            elif usable and proves_the_file(candidate):
                # Another session writes it: most likely this device's old connection, here
                # or on another ingestor, not yet seen to be gone. The point proves the file,
                # so this session takes the transfer over; the other stops writing it.
                generation, entry, point = g, candidate, resume_point_of(candidate)
                takeover = True
        if generation is None:
            generation = self._free(ids, {g for g, _ in known})
        decision = self._decide(session.imei, transfer, generation, point, entry, takeover)
        self.decisions.append(decision)
        return point

    def restarted(self, decision: Decision) -> Decision:
        """camproto found the device's bytes are another file than ``decision``'s: the
        decision for it from byte 0, under a generation nobody uses."""
        info = decision.info
        assert info is not None
        self.release(decision.transfer_id)
        ids = [transfer_key(decision.imei, info, self.nonce, g) for g in range(MAX_GENERATIONS)]
        known = {g for g, tid in enumerate(ids) if self.book.get(tid) is not None}
        generation = self._free(ids, known | {decision.generation})
        return self._decide(decision.imei, info, generation, ResumePoint(), None)

    def release(self, transfer_id: str) -> None:
        """The session is done with ``transfer_id`` (confirmed, or given up)."""
        self.claims.release(transfer_id, self.nonce)
        self.claimed.discard(transfer_id)

    def owns(self, transfer_id: str) -> bool:
        """Whether this session holds ``transfer_id``."""
        return self.claims.owner(transfer_id) == self.nonce

    def won(self, transfer_id: str) -> bool:
        """After this session's claim of ``transfer_id`` was read back from the progress
        topic: whether it is the holder now (then :meth:`taken_over` follows the topic)."""
        holder = self.book.holder(transfer_id)
        if holder is None or holder.session_id != self.nonce:
            return False
        self.claimed.add(transfer_id)
        return True

    def taken_over(self, transfer_id: str) -> bool:
        """Whether another session writes ``transfer_id`` now (it took it over, here or, once
        this session won it on the progress topic, on another ingestor)."""
        owner = self.claims.owner(transfer_id)
        if owner is not None and owner != self.nonce:
            return True
        if transfer_id not in self.claimed:
            return False
        holder = self.book.holder(transfer_id)
        return holder is not None and holder.session_id != self.nonce

    def _taken(self, transfer_id: str) -> bool:
        """Whether another session may be writing ``transfer_id``: one of this ingestor
        (known exactly), else the holder the progress topic names, unless it ended here or
        went silent for ``stale_seconds``."""
        owner = self.claims.owner(transfer_id)
        if owner is not None:
            return owner != self.nonce
        holder = self.book.holder(transfer_id)
        return (
            holder is not None
            and holder.session_id != self.nonce
            and holder.session_id not in self.claims.ended
            and is_live(holder, self.clock(), self.stale_seconds)
        )

    def _free(self, ids: list[str], known: set[int]) -> int:
        """The first generation neither in the book nor written by a session now."""
        for generation, tid in enumerate(ids):
            if generation not in known and not self._taken(tid) and not self.owns(tid):
                return generation
        return MAX_GENERATIONS  # every one in use: an id of this session's own

    def _decide(
        self,
        imei: int,
        info: TransferInfo,
        generation: int,
        point: ResumePoint,
        entry: TransferProgress | None,
        takeover: bool = False,
    ) -> Decision:
        if generation < MAX_GENERATIONS:
            tid = transfer_key(imei, info, self.nonce, generation)
        else:
            tid = transfer_key(imei, info, f"{self.nonce}/own", generation)
        self.claims.claim(tid, self.nonce)
        return Decision(tid, info.file, point, entry, imei, info, generation, takeover)

    def take(self, file: CameraFile) -> Decision:
        """The decision made for ``file``'s START (the oldest one not taken yet)."""
        while self.decisions:
            decision = self.decisions.popleft()
            if decision.file == file:
                return decision
        raise LookupError(f"no resume decision for {file}")

"""Where a transfer resumes: the server policy that consults the :class:`ProgressBook`.

A transfer is recognised across reconnects and ingestors by its id
(:func:`contracts.transfer_id`): the IMEI, the file's identifier (DualCam slot or path), the
size or packet count START announces, the whole-file CRC START announces (DSM/ADAS), and the
capture time of the file's metadata (0x000B). Without a capture time (no metadata asked or
none in it) two different photos of one DualCam slot would look alike, so the id also takes
the session's nonce: such a transfer is never resumed from another session; it starts at 0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

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

from .convert import capture_ms
from .progress import ProgressBook

__all__ = ["EMPTY_FILES", "Decision", "ResumePolicy", "transfer_key"]

#: Files that came back empty (START 0), per device, shared by every session of this process:
#: one empty in 3 sessions in a row is given up until the device offers something else.
EMPTY_FILES = EmptyFileMemory(limit=3)


def transfer_key(imei: int | str, transfer: TransferInfo, nonce: str) -> str:
    """The transfer id of the file START announced; ``nonce`` is the session's id, used only
    when the metadata gives no capture time."""
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
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What :meth:`ResumePolicy.resume_point` decided for one START."""

    transfer_id: str
    file: CameraFile
    point: ResumePoint
    #: The progress record the point came from; None when the transfer starts at 0.
    entry: TransferProgress | None


@dataclass(slots=True)
class ResumePolicy(DelegatingPolicy):
    """:class:`camproto.DefaultPolicy`, plus resume points from the progress book, and files
    given up after coming back empty session after session (``empty_files``).

    A known, incomplete transfer resumes at its durable offset with the CRC of the bytes
    before it; a known complete one (its device never heard REPEAT INIT) resumes at the start
    of its last packet, so the device resends one packet and hears "done". Each decision is
    queued for the session (:meth:`take`), which must use the same transfer id and origin.
    """

    book: ProgressBook
    nonce: str
    base: ServerPolicy = field(default_factory=DefaultPolicy)
    decisions: deque[Decision] = field(default_factory=deque)
    empty_files: EmptyFileMemory = field(default_factory=lambda: EMPTY_FILES)

    def given_up(self, session: SessionInfo, offered: Sequence[CameraFile]) -> Collection[bytes]:
        return self.empty_files.given_up(session.imei, offered)

    def start_answered(
        self, session: SessionInfo, file: CameraFile, offered: Sequence[CameraFile], *, empty: bool
    ) -> int | None:
        return self.empty_files.answered(session.imei, file, offered, empty=empty)

    def resume_point(self, session: SessionInfo, transfer: TransferInfo) -> ResumePoint:
        tid = transfer_key(session.imei, transfer, self.nonce)
        entry = self.book.get(tid)
        total = transfer.size if transfer.size is not None else transfer.packets or 0
        point = ResumePoint()
        if entry is not None and entry.total == total and (entry.offset > 0 or entry.complete):
            point = ResumePoint(entry.offset, entry.crc)
        else:
            entry = None
        self.decisions.append(Decision(tid, transfer.file, point, entry))
        return point

    def take(self, file: CameraFile) -> Decision:
        """The decision made for ``file``'s START (the oldest one not taken yet)."""
        while self.decisions:
            decision = self.decisions.popleft()
            if decision.file == file:
                return decision
        raise LookupError(f"no resume decision for {file}")

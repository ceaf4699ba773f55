"""Events the protocol machines return. Frozen, slotted, keyword-only; don't subclass them.

Offsets are always in bytes from the start of the file, whatever unit the wire uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from .files import CameraFile
from .metadata import Metadata

__all__ = [
    "ChunkReceived",
    "CloseRequested",
    "CrcMismatch",
    "Event",
    "FileAccepted",
    "FileEmpty",
    "FileGivenUp",
    "FileOffered",
    "FileRequested",
    "MetadataReceived",
    "MetadataRequested",
    "PathEmpty",
    "PathRequested",
    "ResumeRequested",
    "SessionClosed",
    "SessionStarted",
    "StatusReceived",
    "TransferComplete",
    "TransferRefused",
    "TransferRestarted",
    "TransferStarted",
]


class Event:
    """Base class of every event."""

    __slots__ = ()


# Server side: what the device did.


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted(Event):
    """The device's first INIT.

    ``offered`` lists the DualCam slots its settings announce; ``path_file_ready`` is settings
    bit 25 (a DSM/ADAS file waits, its path comes on request).
    """

    imei: int
    protocol: int
    settings: int
    offered: tuple[CameraFile, ...]
    path_file_ready: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class FileOffered(Event):
    """The device has this file: a DualCam slot in an INIT, or a path it answered with."""

    file: CameraFile


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataReceived(Event):
    file: CameraFile
    metadata: Metadata


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRefused(Event):
    """The policy refused the file START announced (too large, say); the session closes."""

    file: CameraFile
    size: int | None
    packets: int | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRestarted(Event):
    """What the device sends from the resume point is not the rest of what the server kept:
    another file under the same name, size and time. The server asked for it again from
    byte 0 (a RESUME); the application names it as a new transfer. ``offset`` was the resume
    point, ``reason`` says how it differs."""

    file: CameraFile
    size: int | None
    packets: int | None
    device_crc: int | None
    offset: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferStarted(Event):
    """The device answered FILE REQUEST with START; data will follow from ``resume_offset``.

    DualCam gives ``packets`` (size unknown until the last packet); path files give ``size``
    and ``device_crc``, the CRC the device announces for the whole file.
    """

    file: CameraFile
    size: int | None
    packets: int | None
    device_crc: int | None
    resume_offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEmpty(Event):
    """START announced nothing to send (``No packages are left for this file``)."""

    file: CameraFile


@dataclass(frozen=True, slots=True, kw_only=True)
class FileGivenUp(Event):
    """``file`` came back empty in ``sessions`` sessions in a row: the server stops asking for
    it until the device offers something else (the policy's decision)."""

    file: CameraFile
    sessions: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PathEmpty(Event):
    """FILE PATH RESPONSE was a bare NUL (``000D 0001 00``): the device has no file ready."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkReceived(Event):
    """A DATA packet whose CRC checked out.

    ``crc`` is the packet's CRC field, computed by the device from ``crc_init`` (the previous
    packet's CRC, or 0 where the device restarted its chain after a RESUME). ``file_crc`` is the
    CRC of the whole file up to the end of this chunk. ``last`` says it completes the file.

    ``resume_end`` is where a RESUME could start once this chunk is kept: its end, except for
    the file's last chunk (a RESUME must point inside the file), whose own offset it is;
    ``resume_crc`` is the CRC of the bytes before ``resume_end``.
    """

    file: CameraFile
    offset: int
    data: bytes
    crc: int
    crc_init: int
    file_crc: int
    last: bool
    resume_end: int
    resume_crc: int


_CHUNK_SLOTS = tuple(
    ChunkReceived.__dict__[name].__set__
    for name in (
        "file",
        "offset",
        "data",
        "crc",
        "crc_init",
        "file_crc",
        "last",
        "resume_end",
        "resume_crc",
    )
)


def chunk_received(
    file: CameraFile,
    offset: int,
    data: bytes,
    crc: int,
    crc_init: int,
    file_crc: int,
    last: bool,
    resume_end: int,
    resume_crc: int,
) -> ChunkReceived:
    """The same :class:`ChunkReceived` as its constructor makes, for the hot path (one per
    KiB of file): the frozen ``__init__`` sets each field through ``object.__setattr__``,
    which costs about twice as much as filling the slots directly."""
    event: ChunkReceived = object.__new__(ChunkReceived)
    s0, s1, s2, s3, s4, s5, s6, s7, s8 = _CHUNK_SLOTS
    s0(event, file)
    s1(event, offset)
    s2(event, data)
    s3(event, crc)
    s4(event, crc_init)
    s5(event, file_crc)
    s6(event, last)
    s7(event, resume_end)
    s8(event, resume_crc)
    return event


@dataclass(frozen=True, slots=True, kw_only=True)
class CrcMismatch(Event):
    """A DATA packet failed its CRC; the server asked for a resend from ``offset``."""

    file: CameraFile
    offset: int
    expected: int
    received: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferComplete(Event):
    """Every byte arrived. The server says nothing to the device until ``confirm_file()``.

    ``device_crc_ok`` compares ``file_crc`` with the CRC in START, where the device sent one.
    """

    file: CameraFile
    size: int
    file_crc: int
    device_crc_ok: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReceived(Event):
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionClosed(Event):
    """The session ended: ``clean`` when the protocol finished, else ``reason`` says why."""

    reason: str
    clean: bool


# Device side: what the server asked for.


@dataclass(frozen=True, slots=True, kw_only=True)
class PathRequested(Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataRequested(Event):
    file: CameraFile | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRequested(Event):
    file: CameraFile


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeRequested(Event):
    """RESUME: the server wants data from ``offset`` bytes."""

    file: CameraFile
    offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileAccepted(Event):
    """REPEAT INIT after a whole file: the server has it, the device may drop it."""

    file: CameraFile


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseRequested(Event):
    """The server sent CLOSE SESSION."""

"""The server's decisions the protocol leaves open, and the pieces to compose a policy from.

A :class:`ServerPolicy` answers the questions a :class:`~camproto.ServerConnection` asks: fetch
the DSM/ADAS file announced by settings bit 25? which offered file next? metadata first? where
to resume? which offered files to leave alone, because they came back empty session after
session? :class:`PolicyBase` gives every answer a default; :class:`DelegatingPolicy` passes every
question to ``self.base``, so a policy that changes one decision overrides one method.

:class:`EmptyFileMemory` is the pure, cross-session part of "a file that came back empty on
several sessions in a row is given up, until the device offers something else". The server
machine bounds the same loop within a session by itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ._wire import DATA_CHUNK
from .files import Camera, CameraFile, DualCamSlot
from .metadata import Metadata

__all__ = [
    "DefaultPolicy",
    "DelegatingPolicy",
    "EmptyFileMemory",
    "FileSizeLimits",
    "PolicyBase",
    "ResumePoint",
    "ServerPolicy",
    "SessionInfo",
    "TransferInfo",
]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    imei: int
    protocol: int
    settings: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferInfo:
    """What the server knows when START arrives: enough to recognise a transfer seen before."""

    file: CameraFile
    size: int | None
    packets: int | None
    device_crc: int | None
    metadata: Metadata | None


@dataclass(frozen=True, slots=True)
class FileSizeLimits:
    """The largest file START may announce, per camera kind (bytes; None: no limit).

    A DualCam START counts 1024-byte packets, so its size is taken as ``packets * 1024`` (the
    most it can be); DSM/ADAS START counts bytes. ``other`` covers dashcam and unknown paths.
    """

    dualcam: int | None = None
    dsm: int | None = None
    adas: int | None = None
    other: int | None = None

    def limit(self, camera: Camera) -> int | None:
        if camera is Camera.DUALCAM:
            return self.dualcam
        if camera is Camera.DSM:
            return self.dsm
        if camera is Camera.ADAS:
            return self.adas
        return self.other

    def refusal(self, transfer: TransferInfo) -> str | None:
        """Why START of ``transfer`` is refused, or None if it is within the limit."""
        limit = self.limit(transfer.file.camera)
        if limit is None:
            return None
        if transfer.packets is not None:
            size, said = transfer.packets * DATA_CHUNK, f"{transfer.packets} packets"
        else:
            size = transfer.size or 0
            said = f"{size} bytes"
        if size <= limit:
            return None
        camera = transfer.file.camera.value
        return f"START announces {said}, over the {limit}-byte limit for {camera} files"


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where to resume: ``offset`` bytes already kept, ``crc`` the CRC of those bytes.

    ``file_crc``, for a file kept whole already (resumed at its last packet), is the CRC of
    all of it: a resent file that ends with another CRC is another file. ``verify_offset``,
    past ``offset``, says bytes up to it are kept too, with ``verify_crc`` the CRC at their
    end: resuming a packet early, the server compares the device's bytes with them whatever
    the device does with its CRC chain. The server checks what the device sends against the
    point and starts over from 0 (:class:`~camproto.TransferRestarted`) when it is another
    file.
    """

    offset: int = 0
    crc: int = 0
    file_crc: int | None = None
    verify_offset: int | None = None
    verify_crc: int = 0


class ServerPolicy(Protocol):
    """Decisions the protocol leaves to the server's operator."""

    def want_path_file(self, session: SessionInfo) -> bool:
        """Settings bit 25 is set: ask for the path of the waiting DSM/ADAS file?"""
        ...

    def choose_file(self, session: SessionInfo, offered: Sequence[CameraFile]) -> CameraFile | None:
        """Which offered file to fetch next; None ends the session."""
        ...

    def want_metadata(self, session: SessionInfo, file: CameraFile) -> bool:
        """Ask for the file's metadata before requesting it?"""
        ...

    def resume_point(self, session: SessionInfo, transfer: TransferInfo) -> ResumePoint:
        """Where this file's data should start: 0, or what is already durable."""
        ...

    def refuse_transfer(self, session: SessionInfo, transfer: TransferInfo) -> str | None:
        """START announced ``transfer``: a reason to refuse it (the session is closed), or
        None to take it. Asked before :meth:`resume_point`."""
        ...

    def given_up(self, session: SessionInfo, offered: Sequence[CameraFile]) -> Collection[bytes]:
        """Identifiers among ``offered`` not to request: given up in earlier sessions."""
        ...

    def start_answered(
        self, session: SessionInfo, file: CameraFile, offered: Sequence[CameraFile], *, empty: bool
    ) -> int | None:
        """START came for ``file``: ``empty`` (0, nothing to send) or with data.

        Called once per session per empty file (the session never asks again). Returns the
        number of sessions in a row it came back empty when that gives it up, else None.
        """
        ...


class PolicyBase:
    """Defaults for every decision: fetch everything, no metadata, from 0, give up nothing.

    Subclass it and override what differs; a new question added to :class:`ServerPolicy` then
    gets its default here instead of breaking every policy.
    """

    __slots__ = ()

    def want_path_file(self, session: SessionInfo) -> bool:
        return True

    def choose_file(self, session: SessionInfo, offered: Sequence[CameraFile]) -> CameraFile | None:
        return offered[0] if offered else None

    def want_metadata(self, session: SessionInfo, file: CameraFile) -> bool:
        return False

    def resume_point(self, session: SessionInfo, transfer: TransferInfo) -> ResumePoint:
        return ResumePoint()

    def refuse_transfer(self, session: SessionInfo, transfer: TransferInfo) -> str | None:
        return None

    def given_up(self, session: SessionInfo, offered: Sequence[CameraFile]) -> Collection[bytes]:
        return ()

    def start_answered(
        self, session: SessionInfo, file: CameraFile, offered: Sequence[CameraFile], *, empty: bool
    ) -> int | None:
        return None


class DelegatingPolicy(PolicyBase):
    """Every decision from ``self.base`` (an attribute the subclass provides).

    Wrap a policy and change one decision::

        @dataclass
        class Resuming(DelegatingPolicy):
            base: ServerPolicy
            def resume_point(self, session, transfer): ...
    """

    __slots__ = ()
    base: ServerPolicy

    def want_path_file(self, session: SessionInfo) -> bool:
        return self.base.want_path_file(session)

    def choose_file(self, session: SessionInfo, offered: Sequence[CameraFile]) -> CameraFile | None:
        return self.base.choose_file(session, offered)

    def want_metadata(self, session: SessionInfo, file: CameraFile) -> bool:
        return self.base.want_metadata(session, file)

    def resume_point(self, session: SessionInfo, transfer: TransferInfo) -> ResumePoint:
        return self.base.resume_point(session, transfer)

    def refuse_transfer(self, session: SessionInfo, transfer: TransferInfo) -> str | None:
        return self.base.refuse_transfer(session, transfer)

    def given_up(self, session: SessionInfo, offered: Sequence[CameraFile]) -> Collection[bytes]:
        return self.base.given_up(session, offered)

    def start_answered(
        self, session: SessionInfo, file: CameraFile, offered: Sequence[CameraFile], *, empty: bool
    ) -> int | None:
        return self.base.start_answered(session, file, offered, empty=empty)


@dataclass(slots=True)
class _Streaks:
    #: identifier -> sessions in a row its START came back empty
    empty: dict[bytes, int] = field(default_factory=dict)
    #: What the device offered when the first file was given up; an offer with anything
    #: outside it is "something else" and forgives everything.
    offer: frozenset[bytes] | None = None


@dataclass(slots=True)
class EmptyFileMemory:
    """Per device, how many sessions in a row each file came back empty (START 0).

    A file empty in ``limit`` sessions in a row is given up: :meth:`given_up` lists it and the
    server does not ask for it again. That lasts until the device offers something else (an
    identifier outside what it offered when the file was given up) or the file comes with
    data. Pure and bounded: at most ``max_devices`` devices, least recently seen dropped first.
    """

    limit: int = 3
    max_devices: int = 100_000
    _devices: OrderedDict[int, _Streaks] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.limit < 1 or self.max_devices < 1:
            raise ValueError("limit and max_devices must be at least 1")

    def given_up(self, imei: int, offered: Sequence[CameraFile]) -> frozenset[bytes]:
        """The identifiers in ``offered`` not to request; an offer of something else forgives."""
        streaks = self._devices.get(imei)
        if streaks is None:
            return frozenset()
        self._devices.move_to_end(imei)
        ids = {file.identifier for file in offered}
        if streaks.offer is not None and not ids <= streaks.offer:
            del self._devices[imei]
            return frozenset()
        return frozenset(i for i in ids if streaks.empty.get(i, 0) >= self.limit)

    def answered(
        self, imei: int, file: CameraFile, offered: Sequence[CameraFile], *, empty: bool
    ) -> int | None:
        """Note one session's START for ``file``; the streak if this gives the file up."""
        streaks = self._devices.get(imei)
        if not empty:
            if streaks is not None:
                streaks.empty.pop(file.identifier, None)
                if not streaks.empty:
                    del self._devices[imei]
            return None
        if streaks is None:
            streaks = self._devices[imei] = _Streaks()
            while len(self._devices) > self.max_devices:
                self._devices.popitem(last=False)
        self._devices.move_to_end(imei)
        count = streaks.empty[file.identifier] = streaks.empty.get(file.identifier, 0) + 1
        if count != self.limit:
            return None
        ids = frozenset(f.identifier for f in offered) | {file.identifier}
        streaks.offer = ids if streaks.offer is None else streaks.offer | ids
        return count


_DEFAULT_ORDER = (
    DualCamSlot.VIDEO_REAR,
    DualCamSlot.VIDEO_FRONT,
    DualCamSlot.PHOTO_REAR,
    DualCamSlot.PHOTO_FRONT,
)


@dataclass(frozen=True, slots=True)
class DefaultPolicy(PolicyBase):
    """Fetch everything: path files first, then DualCam slots in ``order``, from offset 0.

    With ``empty_files``, files that came back empty in that many sessions in a row are given
    up (:class:`EmptyFileMemory`); share one memory between the sessions of a server. A START
    over ``max_file_bytes`` (:class:`FileSizeLimits`) is refused.
    """

    order: tuple[DualCamSlot, ...] = _DEFAULT_ORDER
    metadata: bool = True
    path_files: bool = True
    empty_files: EmptyFileMemory | None = None
    max_file_bytes: FileSizeLimits = FileSizeLimits()

    def want_path_file(self, session: SessionInfo) -> bool:
        return self.path_files

    def choose_file(self, session: SessionInfo, offered: Sequence[CameraFile]) -> CameraFile | None:
        for file in offered:
            if file.slot is None:
                return file
        slots = {file.slot: file for file in offered}
        for slot in self.order:
            if slot in slots:
                return slots[slot]
        return None

    def want_metadata(self, session: SessionInfo, file: CameraFile) -> bool:
        return self.metadata

    def refuse_transfer(self, session: SessionInfo, transfer: TransferInfo) -> str | None:
        return self.max_file_bytes.refusal(transfer)

    def given_up(self, session: SessionInfo, offered: Sequence[CameraFile]) -> Collection[bytes]:
        memory = self.empty_files
        return () if memory is None else memory.given_up(session.imei, offered)

    def start_answered(
        self, session: SessionInfo, file: CameraFile, offered: Sequence[CameraFile], *, empty: bool
    ) -> int | None:
        memory = self.empty_files
        if memory is None:
            return None
        return memory.answered(session.imei, file, offered, empty=empty)

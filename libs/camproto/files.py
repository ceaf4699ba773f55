"""What a camera offers: DualCam slots announced by settings bits, and files named by path."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

__all__ = [
    "PATH_FILE_READY_BIT",
    "Camera",
    "CameraFile",
    "DualCamSlot",
    "Media",
    "offered_slots",
]

#: Settings bit 25: a file is ready; the server must ask for its path (0x000C).
PATH_FILE_READY_BIT = 25


class DualCamSlot(IntEnum):
    """DualCam files, valued by the settings bit that announces them."""

    PHOTO_FRONT = 26
    PHOTO_REAR = 27
    VIDEO_FRONT = 28
    VIDEO_REAR = 29

    @property
    def identifier(self) -> bytes:
        """The 7-byte identifier of FILE REQUEST and METADATA REQUEST."""
        return _IDENTIFIERS[self]

    @property
    def metadata_type(self) -> int:
        """The file-type byte of DualCam metadata (4, 8, 16, 32)."""
        return 1 << (self.value - 24)


_IDENTIFIERS = {
    DualCamSlot.PHOTO_FRONT: b"%photof",
    DualCamSlot.PHOTO_REAR: b"%photor",
    DualCamSlot.VIDEO_FRONT: b"%videof",
    DualCamSlot.VIDEO_REAR: b"%videor",
}
_SLOT_BY_IDENTIFIER = {v: k for k, v in _IDENTIFIERS.items()}


class Camera(StrEnum):
    DUALCAM = "dualcam"
    DSM = "dsm"
    ADAS = "adas"
    DASHCAM = "dashcam"
    UNKNOWN = "unknown"


class Media(StrEnum):
    PHOTO = "photo"
    VIDEO = "video"
    UNKNOWN = "unknown"


def offered_slots(settings: int) -> tuple[DualCamSlot, ...]:
    """DualCam slots whose bits are set, in bit order."""
    return tuple(slot for slot in DualCamSlot if settings >> slot.value & 1)


@dataclass(frozen=True, slots=True)
class CameraFile:
    """A file a camera can upload: a DualCam slot, or a path the device named.

    ``identifier`` is the exact byte string the server echoes in FILE REQUEST: ``%photof`` and
    friends, or the path as the device sent it (a trailing NUL included).
    """

    identifier: bytes
    slot: DualCamSlot | None = None

    @classmethod
    def for_slot(cls, slot: DualCamSlot) -> CameraFile:
        return cls(slot.identifier, slot)

    @classmethod
    def for_path(cls, path: bytes) -> CameraFile:
        return cls(path, None)

    @classmethod
    def from_identifier(cls, identifier: bytes) -> CameraFile:
        """A DualCam slot if ``identifier`` names one, else a path."""
        return cls(identifier, _SLOT_BY_IDENTIFIER.get(identifier))

    @property
    def by_path(self) -> bool:
        """Path files count offsets in bytes; DualCam slots in 1024-byte packets."""
        return self.slot is None

    @property
    def path(self) -> str:
        """The identifier as text, trailing NULs removed, undecodable bytes escaped."""
        return self.identifier.rstrip(b"\0").decode("utf-8", "backslashreplace")

    @property
    def camera(self) -> Camera:
        if self.slot is not None:
            return Camera.DUALCAM
        name = self.path.lower()
        if "mdas" in name or "adas" in name:
            return Camera.ADAS
        if "dsm" in name:
            return Camera.DSM
        if "dualcam" in name:
            return Camera.DUALCAM
        if "dashcam" in name:
            return Camera.DASHCAM
        return Camera.UNKNOWN

    @property
    def media(self) -> Media:
        if self.slot is not None:
            return Media.VIDEO if self.slot >= DualCamSlot.VIDEO_FRONT else Media.PHOTO
        name = self.path.lower()
        if name.endswith((".mp4", ".h265", ".h264", ".avi")) or "video" in name:
            return Media.VIDEO
        if name.endswith((".jpg", ".jpeg", ".png")) or "picture" in name or "photo" in name:
            return Media.PHOTO
        return Media.UNKNOWN

    def __str__(self) -> str:
        return self.path

"""The object-key scheme: where a stored file lands in the bucket, and as what content type.

Keys are built only from values the assembler controls or has sanitised::

    {imei}/{YYYY}/{MM}/{DD}/{YYYYMMDDTHHMMSSZ}_{camera}_{kind}_{transfer}.{ext}

``imei`` is the device's IMEI (digits); the date and time are the capture time the camera's
metadata gives (``capture.captured_at``) or, when it gives none or an implausible one, the
time the transfer started, both in UTC; ``camera`` is dualcam, dsm, adas, dashcam or unknown;
``kind`` is the DualCam slot (photo_front, photo_rear, video_front, video_rear) or the media
(photo, video, unknown); ``transfer`` is the first 12 hex digits of the transfer id (of its
SHA-256 if it is not hex); ``ext`` comes from a fixed table, never from the device's path
itself: the path's suffix is used only when it is one of :data:`ALLOWED_EXTENSIONS`.
Details: ``docs/assembler.md``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from contracts import TransferStart

__all__ = [
    "ALLOWED_EXTENSIONS",
    "CONTENT_TYPES",
    "ObjectName",
    "capture_time",
    "file_extension",
    "object_name",
]

#: Path suffixes a DSM/ADAS/dashcam file may keep; anything else is stored as ``.bin``.
ALLOWED_EXTENSIONS = frozenset({"jpg", "jpeg", "mp4", "h265", "h264", "avi"})

#: Content type of each extension the scheme can produce.
CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "mp4": "video/mp4",
    "h265": "video/H265",
    "h264": "video/H264",
    "avi": "video/x-msvideo",
    "bin": "application/octet-stream",
}

#: Capture times before this are a camera without a clock, not a real capture.
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
#: A capture time this far after the transfer started is a wrong clock.
_SKEW = timedelta(days=1)
_UNSAFE = re.compile(r"[^a-z0-9_]+")
_NOT_DIGITS = re.compile(r"[^0-9]+")
_NOT_HEX = re.compile(r"[^0-9a-f]+")


@dataclass(frozen=True, slots=True)
class ObjectName:
    key: str
    content_type: str
    extension: str
    kind: str


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _token(text: str | None, fallback: str = "unknown") -> str:
    """Lower-case letters, digits and underscores only; ``fallback`` when nothing is left."""
    cleaned = _UNSAFE.sub("", (text or "").lower())[:32]
    return cleaned or fallback


def capture_time(start: TransferStart) -> datetime:
    """The capture time from the camera's metadata, else the transfer's start (UTC)."""
    started = _utc(start.started_at)
    captured = None if start.capture is None else start.capture.captured_at
    if captured is not None:
        captured = _utc(captured)
        if _EARLIEST <= captured <= started + _SKEW:
            return captured
    return started


def file_extension(start: TransferStart) -> str:
    """``jpg``/``h265`` for DualCam slots; an allowed suffix of the path; else ``bin``."""
    file = start.file
    if file.camera == "dualcam" and file.slot is not None:
        return "h265" if file.slot.startswith("video") else "jpg"
    name = file.identifier.replace("\0", "").strip().lower()
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if "." in base:
        suffix = base.rsplit(".", 1)[1]
        if suffix in ALLOWED_EXTENSIONS:
            return suffix
    return "bin"


def object_name(start: TransferStart) -> ObjectName:
    """Key and content type of the file ``start`` announced."""
    moment = capture_time(start)
    imei = _NOT_DIGITS.sub("", start.imei)[:20] or "unknown"
    camera = _token(start.file.camera)
    kind = _token(start.file.slot or start.file.media)
    transfer = _NOT_HEX.sub("", start.transfer_id.lower())[:12]
    if len(transfer) < 12:  # not a fleetgate transfer id: a digest of it instead
        transfer = hashlib.sha256(start.transfer_id.encode()).hexdigest()[:12]
    extension = file_extension(start)
    key = f"{imei}/{moment:%Y/%m/%d}/{moment:%Y%m%dT%H%M%SZ}_{camera}_{kind}_{transfer}.{extension}"
    return ObjectName(key, CONTENT_TYPES[extension], extension, kind)

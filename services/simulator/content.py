"""What the simulated cameras upload: files, metadata and IMEIs, all deterministic from a seed.

Photos look like JPEG (SOI, JFIF APP0, DQT, SOF0, DHT, SOS, scan bytes, EOI); videos look like a
raw H.265 elementary stream (VPS, SPS and PPS before every IDR slice, trailing slices between,
each behind a ``00 00 00 01`` start code). Neither decodes to a picture: the bytes only have to
look right to code that sniffs them, and to be exactly as long as asked.

DualCam cameras keep files in four slots (``%photof`` ... ``%videor``); photos go to the front
and rear photo slots in turn, videos likewise. DSM cameras name files by path, e.g.
``dsm/picture/241121/123456.jpg\\0``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from camproto import CameraFile, DeviceFile, DsmMetadata, DualCamMetadata, DualCamSlot
from camproto.metadata import DSM_EVENTS, DUALCAM_TRIGGERS

__all__ = [
    "KIB",
    "MIB",
    "MIN_PHOTO_SIZE",
    "MIN_VIDEO_SIZE",
    "ContentSpec",
    "DeviceKind",
    "DevicePlan",
    "h265_bytes",
    "imei_for",
    "jpeg_bytes",
    "luhn_digit",
    "plan_fleet",
]

KIB = 1024
MIB = 1024 * KIB


class DeviceKind(StrEnum):
    DUALCAM = "dualcam"
    DSM = "dsm"


# --- photos --------------------------------------------------------------------------------

_LUMA_QUANT = bytes(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
)  # fmt: skip
_JPEG_HEAD = (
    bytes.fromhex("ffd8")  # SOI
    + bytes.fromhex("ffe0 0010 4a46494600 0101 00 0001 0001 00 00")  # APP0 JFIF 1.1
    + bytes.fromhex("ffdb 0043 00")  # DQT, table 0
    + _LUMA_QUANT
    + bytes.fromhex("ffc0 0011 08 02d0 0500 03 012200 021101 031101")  # SOF0 1280x720 4:2:0
    + bytes.fromhex("ffc4 001f 00 00010501010101010100000000000000 000102030405060708090a0b")  # DHT
    + bytes.fromhex("ffda 000c 03 0100 0211 0311 00 3f 00")  # SOS
)
_JPEG_TAIL = bytes.fromhex("ffd9")  # EOI
#: Smallest photo: the headers and EOI with no scan data.
MIN_PHOTO_SIZE = len(_JPEG_HEAD) + len(_JPEG_TAIL)
#: Scan data never holds 0xFF, so no marker appears before EOI.
_NO_MARKER = bytes(range(255)) + b"\xfe"


def jpeg_bytes(size: int, rng: random.Random) -> bytes:
    """A JPEG-looking photo of exactly ``size`` bytes (at least :data:`MIN_PHOTO_SIZE`)."""
    if size < MIN_PHOTO_SIZE:
        raise ValueError(f"a photo needs at least {MIN_PHOTO_SIZE} bytes, not {size}")
    scan = rng.randbytes(size - MIN_PHOTO_SIZE).translate(_NO_MARKER)
    return _JPEG_HEAD + scan + _JPEG_TAIL


# --- videos --------------------------------------------------------------------------------

_START_CODE = b"\x00\x00\x00\x01"
# Two-byte H.265 NAL unit headers: type << 1, then layer 0 and temporal id 1.
_VPS, _SPS, _PPS = b"\x40\x01", b"\x42\x01", b"\x44\x01"
_IDR_W_RADL, _TRAIL_R = b"\x26\x01", b"\x02\x01"
_NAL_OVERHEAD = len(_START_CODE) + 2
#: A NAL unit with one payload byte.
_MIN_NAL = _NAL_OVERHEAD + 1
#: Smallest video: VPS, SPS, PPS and one IDR slice, each with a little payload.
MIN_VIDEO_SIZE = 128
#: Payload never holds 0x00, so no start code appears inside a NAL unit.
_NO_ZERO = b"\x01" + bytes(range(1, 256))
#: Bytes per second of video the durations in metadata assume (a 6 MiB video lasts 20 s).
_VIDEO_RATE = 6 * MIB // 20


def video_duration(size: int) -> int:
    """Seconds of video that ``size`` bytes stand for, as the metadata reports it."""
    return max(1, round(size / _VIDEO_RATE))


def h265_bytes(size: int, rng: random.Random, framerate: int = 25) -> bytes:
    """An H.265-looking elementary stream of exactly ``size`` bytes.

    One group of pictures per second of :func:`video_duration`: VPS, SPS, PPS, an IDR slice
    about three frames big, then ``framerate - 1`` trailing slices of about one frame each.
    """
    if size < MIN_VIDEO_SIZE:
        raise ValueError(f"a video needs at least {MIN_VIDEO_SIZE} bytes, not {size}")
    out = bytearray(rng.randbytes(size).translate(_NO_ZERO))
    frame = max(_MIN_NAL, size // (video_duration(size) * max(framerate, 1)))
    position = 0
    index = 0
    while position < size:
        if index % max(framerate, 1) == 0:
            units = [(_VPS, 24), (_SPS, 48), (_PPS, 8), (_IDR_W_RADL, 3 * frame)]
        else:
            units = [(_TRAIL_R, rng.randint(frame // 2 + 1, frame + frame // 2))]
        for header, length in units:
            remaining = size - position
            if remaining <= 0:
                break
            # Never leave a tail too short to be a NAL unit of its own.
            length = remaining if remaining < length + _MIN_NAL else max(length, _MIN_NAL)
            out[position : position + _NAL_OVERHEAD] = _START_CODE + header
            position += length
        index += 1
    return bytes(out)


# --- devices -------------------------------------------------------------------------------

#: Type allocation codes of FMB trackers seen in public captures (Traccar test, forum post).
_TACS = ("35209408", "35061207")
#: Serial numbers advance by this prime, coprime with 10**6: a million devices get distinct ones.
_SERIAL_STEP = 7919
#: File times start here (2024-11-21 12:34:56 UTC) plus a per-device offset within a day.
_EPOCH_MS = 1_732_192_496_000
_DRIVERS = ("JONAS", "AUSRA", "MINDAUGAS", "EGLE", "TOMAS", "RASA", "LINAS", "GIEDRE")
#: Where the fleet drives (around Vilnius), degrees.
_HOME = (54.6872, 25.2797)


def luhn_digit(digits: str) -> int:
    """The Luhn check digit to append to ``digits`` (as IMEIs carry in their 15th digit)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return (10 - total % 10) % 10


def imei_for(seed: int, index: int) -> int:
    """A valid 15-digit IMEI (TAC, serial, Luhn digit), distinct for each index below 10**6."""
    rng = random.Random(f"{seed}:imei")
    tac = rng.choice(_TACS)
    serial = (rng.randrange(10**6) + index * _SERIAL_STEP) % 10**6
    body = f"{tac}{serial:06d}"
    return int(f"{body}{luhn_digit(body)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentSpec:
    """How many files each device has, and their sizes in bytes."""

    photos: int = 1
    videos: int = 1
    photo_size: int = 50 * KIB
    video_size: int = 6 * MIB

    def __post_init__(self) -> None:
        if self.photos < 0 or self.videos < 0:
            raise ValueError("photos and videos per device cannot be negative")
        if self.photos + self.videos == 0:
            raise ValueError("each device needs at least one photo or video")
        if self.photos and self.photo_size < MIN_PHOTO_SIZE:
            raise ValueError(f"photo size must be at least {MIN_PHOTO_SIZE} bytes")
        if self.videos and self.video_size < MIN_VIDEO_SIZE:
            raise ValueError(f"video size must be at least {MIN_VIDEO_SIZE} bytes")

    @property
    def files_per_device(self) -> int:
        return self.photos + self.videos

    @property
    def bytes_per_device(self) -> int:
        return self.photos * self.photo_size + self.videos * self.video_size


@dataclass(frozen=True, slots=True, kw_only=True)
class DevicePlan:
    """One simulated camera: which kind, its IMEI, and the seed its files grow from."""

    index: int
    kind: DeviceKind
    imei: int
    seed: int

    def files(self, spec: ContentSpec) -> list[DeviceFile]:
        """The device's files in upload-queue order; the same for the same seed and spec."""
        rng = random.Random(f"{self.seed}:device:{self.index}")
        lat = _HOME[0] + rng.uniform(-0.3, 0.3)
        lon = _HOME[1] + rng.uniform(-0.5, 0.5)
        framerate = rng.choice((20, 25, 30))
        timestamp_ms = _EPOCH_MS + rng.randrange(86_400) * 1000
        media = [False] * spec.photos + [True] * spec.videos
        files: list[DeviceFile] = []
        for number, is_video in enumerate(media):
            # One event every 7..60 s; DSM paths are named by the second, so they stay unique.
            timestamp_ms += rng.randint(7, 60) * 1000
            size = spec.video_size if is_video else spec.photo_size
            data = h265_bytes(size, rng, framerate) if is_video else jpeg_bytes(size, rng)
            # Photos alternate front/rear slots; so do videos.
            rear = (number - spec.photos if is_video else number) % 2 == 1
            if self.kind is DeviceKind.DUALCAM:
                item = self._dualcam(data, is_video, rear, timestamp_ms, framerate, lat, lon, rng)
            else:
                item = self._dsm(data, is_video, timestamp_ms, lat, lon, rng)
            files.append(item)
        return files

    @staticmethod
    def _dualcam(
        data: bytes,
        is_video: bool,
        rear: bool,
        timestamp_ms: int,
        framerate: int,
        lat: float,
        lon: float,
        rng: random.Random,
    ) -> DeviceFile:
        if is_video:
            slot = DualCamSlot.VIDEO_REAR if rear else DualCamSlot.VIDEO_FRONT
        else:
            slot = DualCamSlot.PHOTO_REAR if rear else DualCamSlot.PHOTO_FRONT
        metadata = DualCamMetadata(
            version=1,
            file_type=slot.metadata_type,
            timestamp_ms=timestamp_ms,
            trigger=rng.randrange(len(DUALCAM_TRIGGERS)),
            duration_s=video_duration(len(data)) if is_video else 0,
            framerate=framerate,
            timezone_min=120,
            latitude=round(lat + rng.uniform(-0.01, 0.01), 6),
            longitude=round(lon + rng.uniform(-0.01, 0.01), 6),
        )
        return DeviceFile(CameraFile.for_slot(slot), data, metadata.encode())

    @staticmethod
    def _dsm(
        data: bytes,
        is_video: bool,
        timestamp_ms: int,
        lat: float,
        lon: float,
        rng: random.Random,
    ) -> DeviceFile:
        when = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
        folder, ext = ("video", "mp4") if is_video else ("picture", "jpg")
        path = f"dsm/{folder}/{when:%y%m%d}/{when:%H%M%S}.{ext}\0".encode()
        metadata = DsmMetadata(
            timestamp_ms=timestamp_ms,
            file_type=0 if is_video else 1,  # ADAS/DSM file types: 0 video, 1 snapshot
            trigger=13,  # DSM event
            latitude=round(lat + rng.uniform(-0.01, 0.01), 6),
            longitude=round(lon + rng.uniform(-0.01, 0.01), 6),
            events=tuple(rng.sample(DSM_EVENTS, rng.randint(1, 2))),
            driver_name=rng.choice(_DRIVERS),
        )
        return DeviceFile(CameraFile.for_path(path), data, metadata.encode())


def plan_fleet(devices: int, dualcam_ratio: float, seed: int) -> list[DevicePlan]:
    """``devices`` cameras, ``floor(devices * dualcam_ratio)`` of them DualCam, spread evenly."""
    if devices < 0:
        raise ValueError("the number of devices cannot be negative")
    if not 0.0 <= dualcam_ratio <= 1.0:
        raise ValueError(f"DualCam ratio must be between 0 and 1, not {dualcam_ratio}")
    plans = []
    for index in range(devices):
        # Bresenham: device i is DualCam when floor((i+1)r) steps past floor(i*r).
        dualcam = int((index + 1) * dualcam_ratio) > int(index * dualcam_ratio)
        kind = DeviceKind.DUALCAM if dualcam else DeviceKind.DSM
        plans.append(DevicePlan(index=index, kind=kind, imei=imei_for(seed, index), seed=seed))
    return plans

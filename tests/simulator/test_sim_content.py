"""Generated content: JPEG/H.265 look, exact sizes, seeds, IMEIs, slots, paths, metadata."""

from __future__ import annotations

import random
import re

import pytest

from camproto import Camera, DsmMetadata, DualCamMetadata, DualCamSlot, Media, decode_metadata
from simulator.content import (
    KIB,
    MIN_PHOTO_SIZE,
    MIN_VIDEO_SIZE,
    ContentSpec,
    DeviceKind,
    h265_bytes,
    imei_for,
    jpeg_bytes,
    luhn_digit,
    plan_fleet,
)

_DSM_PATH = re.compile(rb"dsm/(picture/\d{6}/\d{6}\.jpg|video/\d{6}/\d{6}\.mp4)\0")


@pytest.mark.parametrize("size", [MIN_PHOTO_SIZE, MIN_PHOTO_SIZE + 1, 50 * KIB, 123_457])
def test_photo_looks_like_jpeg(size: int) -> None:
    photo = jpeg_bytes(size, random.Random(1))
    assert len(photo) == size
    assert photo.startswith(bytes.fromhex("ffd8ffe0")) and photo[6:11] == b"JFIF\0"
    assert photo.endswith(bytes.fromhex("ffd9"))
    scan = photo[photo.index(bytes.fromhex("ffda")) + 14 : -2]
    assert b"\xff" not in scan  # no marker before EOI


@pytest.mark.parametrize("size", [MIN_VIDEO_SIZE, 1000, 300 * KIB, 6 * 1024 * KIB + 7])
def test_video_looks_like_h265(size: int) -> None:
    video = h265_bytes(size, random.Random(2), framerate=25)
    assert len(video) == size
    assert video.startswith(b"\x00\x00\x00\x01\x40\x01")  # VPS
    units = video.split(b"\x00\x00\x00\x01")
    assert units[0] == b"" and all(len(unit) >= 3 for unit in units[1:])
    kinds = {unit[0] >> 1 for unit in units[1:]}
    assert {32, 33, 34, 19} <= kinds <= {32, 33, 34, 19, 1}  # VPS SPS PPS IDR, trailing slices
    assert all(unit[1] == 1 for unit in units[1:])


def test_too_small_files_are_refused() -> None:
    with pytest.raises(ValueError, match="photo"):
        jpeg_bytes(MIN_PHOTO_SIZE - 1, random.Random())
    with pytest.raises(ValueError, match="video"):
        h265_bytes(MIN_VIDEO_SIZE - 1, random.Random())
    with pytest.raises(ValueError, match="photo size"):
        ContentSpec(photo_size=10)
    with pytest.raises(ValueError, match="at least one"):
        ContentSpec(photos=0, videos=0)


def test_content_is_deterministic_from_the_seed() -> None:
    spec = ContentSpec(photos=2, videos=1, photo_size=3 * KIB, video_size=20 * KIB)
    first = plan_fleet(4, 0.5, seed=7)
    again = plan_fleet(4, 0.5, seed=7)
    other = plan_fleet(4, 0.5, seed=8)
    assert first == again
    for a, b, c in zip(first, again, other, strict=True):
        assert a.files(spec) == b.files(spec)
        assert [f.data for f in a.files(spec)] != [f.data for f in c.files(spec)]
    datas = [item.data for plan in first for item in plan.files(spec)]
    assert len(set(datas)) == len(datas)  # every file differs


def test_imeis_are_valid_and_distinct() -> None:
    imeis = [imei_for(3, index) for index in range(2000)]
    assert len(set(imeis)) == len(imeis)
    for imei in imeis:
        digits = str(imei)
        assert len(digits) == 15
        assert luhn_digit(digits[:14]) == int(digits[14])
    assert luhn_digit("35209408273691") == 6  # 352094082736916, from a public capture


@pytest.mark.parametrize(("devices", "ratio", "dualcams"), [(10, 0.3, 3), (7, 0.0, 0), (5, 1, 5)])
def test_fleet_mix_follows_the_ratio(devices: int, ratio: float, dualcams: int) -> None:
    plans = plan_fleet(devices, ratio, seed=0)
    assert [plan.index for plan in plans] == list(range(devices))
    assert sum(plan.kind is DeviceKind.DUALCAM for plan in plans) == dualcams
    with pytest.raises(ValueError, match="ratio"):
        plan_fleet(devices, 1.5, seed=0)


def test_dualcam_files_fill_slots_with_matching_metadata() -> None:
    spec = ContentSpec(photos=3, videos=2, photo_size=2 * KIB, video_size=600 * KIB)
    plan = next(p for p in plan_fleet(2, 0.5, seed=1) if p.kind is DeviceKind.DUALCAM)
    files = plan.files(spec)
    slots = [item.file.slot for item in files]
    assert slots == [
        DualCamSlot.PHOTO_FRONT,
        DualCamSlot.PHOTO_REAR,
        DualCamSlot.PHOTO_FRONT,
        DualCamSlot.VIDEO_FRONT,
        DualCamSlot.VIDEO_REAR,
    ]
    stamps = []
    for item in files:
        assert item.file.slot is not None
        metadata = decode_metadata(item.metadata, Camera.DUALCAM, 5)
        assert isinstance(metadata, DualCamMetadata)
        assert metadata.file_type == item.file.slot.metadata_type
        video = item.file.media is Media.VIDEO
        assert metadata.duration_s == (2 if video else 0)  # 600 KiB at 6 MiB per 20 s
        assert metadata.framerate in (20, 25, 30)
        assert abs(metadata.latitude - 54.7) < 1 and abs(metadata.longitude - 25.3) < 1
        assert item.data[:4] == (b"\x00\x00\x00\x01" if video else bytes.fromhex("ffd8ffe0"))
        stamps.append(metadata.timestamp_ms)
    assert stamps == sorted(set(stamps))


def test_dsm_files_have_paths_and_event_metadata() -> None:
    spec = ContentSpec(photos=2, videos=2, photo_size=2 * KIB, video_size=4 * KIB)
    plan = next(p for p in plan_fleet(2, 0.5, seed=1) if p.kind is DeviceKind.DSM)
    files = plan.files(spec)
    paths = [item.file.identifier for item in files]
    assert len(set(paths)) == len(paths)
    for item in files:
        assert _DSM_PATH.fullmatch(item.file.identifier), item.file.identifier
        assert item.file.camera is Camera.DSM and item.file.slot is None
        metadata = decode_metadata(item.metadata, Camera.DSM, 5)
        assert isinstance(metadata, DsmMetadata)
        video = item.file.media is Media.VIDEO
        assert metadata.file_type == (0 if video else 1)
        assert metadata.trigger_name == "dsm_event" and 1 <= len(metadata.events) <= 2
        assert metadata.driver_name.isalpha()
        # The path is named by the file's own time.
        assert item.file.identifier.split(b"/")[2] == _yymmdd(metadata.timestamp_ms)
    assert [item.file.media for item in files] == [Media.PHOTO] * 2 + [Media.VIDEO] * 2


def _yymmdd(timestamp_ms: int) -> bytes:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%y%m%d").encode()

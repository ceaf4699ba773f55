"""assembler.keys: the object-key scheme never lets a device choose where its file lands."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assembler.keys import ALLOWED_EXTENSIONS, CONTENT_TYPES, capture_time, object_name
from contracts import CaptureInfo, FileInfo, TransferStart

STARTED = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
TID = "0123456789abcdef0123456789abcdef"
KEY = re.compile(
    r"\A([0-9]{1,20}|unknown)/[0-9]{4}/[0-9]{2}/[0-9]{2}/[0-9]{8}T[0-9]{6}Z_[a-z0-9_]{1,32}_"
    r"[a-z0-9_]{1,32}_[0-9a-f]{1,12}\.(jpg|jpeg|mp4|h265|h264|avi|bin)\Z"
)


def _start(
    identifier: str,
    *,
    slot: str | None = None,
    camera: str = "dsm",
    media: str = "video",
    captured_at: datetime | None = None,
    imei: str = "356307042441013",
    tid: str = TID,
    started_at: datetime = STARTED,
) -> TransferStart:
    # model_construct: the assembler must cope even with values the contract would refuse.
    values: dict[str, Any] = {"camera": camera, "media": media}
    file = FileInfo.model_construct(identifier=identifier, slot=slot, **values)
    capture = None if captured_at is None else CaptureInfo(captured_at=captured_at)
    return TransferStart.model_construct(
        transfer_id=tid,
        session_id="s",
        imei=imei,
        file=file,
        capture=capture,
        started_at=started_at,
        resume_offset=0,
    )


@pytest.mark.parametrize(
    ("slot", "key", "content_type"),
    [
        ("photo_front", "20260301T123045Z_dualcam_photo_front_0123456789ab.jpg", "image/jpeg"),
        ("photo_rear", "20260301T123045Z_dualcam_photo_rear_0123456789ab.jpg", "image/jpeg"),
        ("video_front", "20260301T123045Z_dualcam_video_front_0123456789ab.h265", "video/H265"),
        ("video_rear", "20260301T123045Z_dualcam_video_rear_0123456789ab.h265", "video/H265"),
    ],
)
def test_dualcam_keys(slot: str, key: str, content_type: str) -> None:
    captured = datetime(2026, 3, 1, 12, 30, 45, 999000, tzinfo=UTC)
    media = slot.split("_")[0]
    name = object_name(_start("%x", slot=slot, camera="dualcam", media=media, captured_at=captured))
    assert name.key == f"356307042441013/2026/03/01/{key}"
    assert name.content_type == content_type


@pytest.mark.parametrize(
    ("path", "extension", "content_type"),
    [
        ("/mnt/DSM/event_1.MP4\0", "mp4", "video/mp4"),
        ("/ADAS/x.jpeg", "jpeg", "image/jpeg"),
        ("C:\\dsm\\clip.h264\0\0", "h264", "video/H264"),
        ("/dsm/clip.avi", "avi", "video/x-msvideo"),
        ("/dsm/clip.h265", "h265", "video/H265"),
        ("/dsm/clip.exe", "bin", "application/octet-stream"),
        ("/dsm/clip.mp4/evil", "bin", "application/octet-stream"),
        ("/dsm/clip.mp4.sh", "bin", "application/octet-stream"),
        ("noextension", "bin", "application/octet-stream"),
        ("../../etc/passwd\0", "bin", "application/octet-stream"),
    ],
)
def test_path_files_keep_only_an_allowed_suffix(
    path: str, extension: str, content_type: str
) -> None:
    name = object_name(_start(path))
    assert (
        name.key
        == f"356307042441013/2026/05/04/20260504T030201Z_dsm_video_0123456789ab.{extension}"
    )
    assert (name.extension, name.content_type) == (extension, content_type)


def test_a_device_path_never_reaches_the_key() -> None:
    name = object_name(_start("../../etc/passwd\0", camera="dsm", media="unknown"))
    assert name.key == "356307042441013/2026/05/04/20260504T030201Z_dsm_unknown_0123456789ab.bin"
    assert "passwd" not in name.key and ".." not in name.key and "\0" not in name.key


@pytest.mark.parametrize(
    ("captured", "expected"),
    [
        (None, STARTED),
        (datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), STARTED),  # a camera without a clock
        (STARTED + timedelta(days=2), STARTED),  # a clock far ahead
        (STARTED + timedelta(hours=3), STARTED + timedelta(hours=3)),
        (datetime(2026, 5, 4, 5, 2, 1, tzinfo=timezone(timedelta(hours=2))), STARTED),
        (datetime(2026, 5, 4, 3, 2, 1), STARTED),  # naive: UTC
    ],
)
def test_capture_time(captured: datetime | None, expected: datetime) -> None:
    assert capture_time(_start("/a.jpg", captured_at=captured)) == expected


def test_odd_values_are_sanitised() -> None:
    name = object_name(
        _start("/a.jpg", imei="35-63/07", camera="../DSM", media="", tid="XYZ/../", slot=None)
    )
    digest = hashlib.sha256(b"XYZ/../").hexdigest()[:12]
    assert name.key == f"356307/2026/05/04/20260504T030201Z_dsm_unknown_{digest}.jpg"
    name = object_name(_start("/a.jpg", imei="", camera="", media="photo", tid="ABCDEF0123456789"))
    assert name.key == "unknown/2026/05/04/20260504T030201Z_unknown_photo_abcdef012345.jpg"


def test_every_extension_has_a_content_type() -> None:
    assert ALLOWED_EXTENSIONS | {"bin"} == set(CONTENT_TYPES)


@given(
    identifier=st.text(),
    slot=st.one_of(st.none(), st.text()),
    camera=st.text(),
    media=st.text(),
    imei=st.text(),
    tid=st.text(),
    captured=st.one_of(
        st.none(), st.datetimes(timezones=st.just(UTC), min_value=datetime(1900, 1, 1))
    ),
)
def test_keys_follow_the_scheme_whatever_the_device_says(
    identifier: str,
    slot: str | None,
    camera: str,
    media: str,
    imei: str,
    tid: str,
    captured: datetime | None,
) -> None:
    start = _start(identifier, slot=slot, camera=camera, media=media, imei=imei, tid=tid,
                   captured_at=captured)  # fmt: skip
    name = object_name(start)
    assert KEY.match(name.key), name.key
    assert name.content_type == CONTENT_TYPES[name.extension]

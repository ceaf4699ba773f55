"""START over the policy's file-size limit: refused, the session closed with the reason."""

from __future__ import annotations

import pytest

from camproto import (
    Camera,
    CameraFile,
    DefaultPolicy,
    DelegatingPolicy,
    DualCamSlot,
    FileSizeLimits,
    PolicyBase,
    ServerConnection,
    ServerPolicy,
    ServerState,
    SessionClosed,
    SessionInfo,
    TransferInfo,
    TransferRefused,
    TransferStarted,
)
from tests.camproto.camproto_helpers import drive, start_frame

h = bytes.fromhex

KIB = 1024
LIMITS = FileSizeLimits(dualcam=100 * KIB, dsm=10 * KIB, adas=20 * KIB, other=30 * KIB)
SESSION = SessionInfo(imei=1, protocol=5, settings=0)
PHOTOF = CameraFile.for_slot(DualCamSlot.PHOTO_FRONT)
DSM = CameraFile.for_path(b"dsm/picture/231020/231452.jpg\x00")


def info(file: CameraFile, *, size: int | None = None, packets: int | None = None) -> TransferInfo:
    return TransferInfo(file=file, size=size, packets=packets, device_crc=None, metadata=None)


@pytest.mark.parametrize(
    ("file", "size", "packets", "refused"),
    [
        (PHOTOF, None, 100, None),  # 100 packets: at most 100 KiB, the limit
        (PHOTOF, None, 101, "START announces 101 packets, over the 102400-byte limit"),
        (PHOTOF, None, 0xFFFFFFFF, "START announces 4294967295 packets"),
        (DSM, 10 * KIB, None, None),
        (DSM, 10 * KIB + 1, None, "START announces 10241 bytes, over the 10240-byte limit"),
        (DSM, 0xFFFFFFFF, None, "START announces 4294967295 bytes, over the 10240-byte"),
        (CameraFile.for_path(b"mdas9/video/1.mp4"), 20 * KIB + 1, None, "limit for adas files"),
        (CameraFile.for_path(b"x/1.mp4"), 30 * KIB, None, None),
        (CameraFile.for_path(b"x/1.mp4"), 30 * KIB + 1, None, "limit for unknown files"),
    ],
)
def test_file_size_limits(
    file: CameraFile, size: int | None, packets: int | None, refused: str | None
) -> None:
    reason = LIMITS.refusal(info(file, size=size, packets=packets))
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_no_limit_by_default() -> None:
    assert FileSizeLimits().refusal(info(DSM, size=0xFFFFFFFF)) is None
    assert FileSizeLimits(dsm=1).limit(Camera.DUALCAM) is None
    assert PolicyBase().refuse_transfer(SESSION, info(DSM, size=0xFFFFFFFF)) is None


class Wrapped(DelegatingPolicy):
    def __init__(self, base: ServerPolicy) -> None:
        self.base = base


@pytest.mark.parametrize("path", [False, True])
def test_oversize_start_is_refused_and_the_session_closed(path: bool) -> None:
    policy = Wrapped(DefaultPolicy(max_file_bytes=FileSizeLimits(dualcam=4 * KIB, dsm=4 * KIB)))
    server = drive(ServerState.AWAIT_START, path=path, policy=policy)
    assert isinstance(server, ServerConnection)
    events = server.receive_data(start_frame(0xFFFFFFFF), 1.0)
    file = DSM if path else PHOTOF
    unit = "bytes" if path else "packets"
    reason = f"START announces 4294967295 {unit}, over the 4096-byte limit for {file.camera} files"
    assert events == [
        TransferRefused(
            file=file,
            size=0xFFFFFFFF if path else None,
            packets=None if path else 0xFFFFFFFF,
            reason=reason,
        ),
        SessionClosed(reason=f"{file} refused: {reason}", clean=False),
    ]
    assert server.data_to_send() == h("00000000")  # CLOSE SESSION, no RESUME
    assert server.state is ServerState.CLOSED
    assert server.closed_reason == f"{file} refused: {reason}"


def test_start_within_the_limit_goes_on() -> None:
    policy = DefaultPolicy(max_file_bytes=FileSizeLimits(dualcam=3 * KIB))
    server = drive(ServerState.AWAIT_START, policy=policy)
    assert server is not None
    events = server.receive_data(start_frame(3), 0.0)
    assert events == [
        TransferStarted(file=PHOTOF, size=None, packets=3, device_crc=None, resume_offset=0)
    ]

"""A resume point names bytes kept; what the device sends from there must continue them.

Another file with the same name, size and time (a camera whose clock is stuck) does not: the
server asks for it again from byte 0 (TransferRestarted) instead of confirming a mix of two
files, or refusing it forever when the device chains its CRC across RESUME.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from camproto import (
    DATA_CHUNK,
    CameraDevice,
    ChunkReceived,
    CrcMismatch,
    DefaultPolicy,
    DelegatingPolicy,
    DualCamSlot,
    ResumePoint,
    ServerConfig,
    ServerConnection,
    ServerPolicy,
    SessionInfo,
    TransferComplete,
    TransferInfo,
    TransferRestarted,
    TransferStarted,
    crc16,
)
from tests.camproto.camproto_helpers import (
    DSM_PATH,
    DevicePair,
    path_file,
    payload_bytes,
    slot_file,
)

OLD = payload_bytes(5000, seed=1)  # the file kept (or its first bytes)
NEW = payload_bytes(5000, seed=2)  # another file: same slot, size and time


@dataclass
class Fixed(DelegatingPolicy):
    point: ResumePoint
    base: ServerPolicy = field(default_factory=lambda: DefaultPolicy(metadata=False))

    def resume_point(self, session: SessionInfo, transfer: TransferInfo) -> ResumePoint:
        return self.point


def pair(data: bytes, point: ResumePoint, *, chained: bool, path: bool = False) -> DevicePair:
    item = path_file(DSM_PATH, data) if path else slot_file(DualCamSlot.VIDEO_REAR, data)
    device = CameraDevice(imei=1, files=[item], restart_crc_after_resume=not chained)
    server = ServerConnection(Fixed(point), ServerConfig(), opened=0.0)
    run = DevicePair(device, server, write_limit=1)
    run.store.partial[item.file.identifier] = bytearray(OLD[: point.offset])  # what was kept
    return run


KEPT = 3 * DATA_CHUNK  # an incomplete transfer: three packets kept
LAST = (len(OLD) - 1) // DATA_CHUNK * DATA_CHUNK  # a complete one: resumed at its last packet


@pytest.mark.parametrize("path", [False, True])
def test_chained_device_with_other_bytes_before_the_point_starts_over(path: bool) -> None:
    run = pair(NEW, ResumePoint(KEPT, crc16(OLD[:KEPT])), chained=True, path=path).run()
    (restarted,) = run.events_of(TransferRestarted)
    assert restarted.offset == KEPT and "another file" in restarted.reason
    assert len(run.events_of(CrcMismatch)) == 2  # once could be a bad packet; twice is not
    assert (restarted.packets, restarted.size) == ((None, 5000) if path else (5, None))
    # the whole file came again from byte 0, and is what completed
    (complete,) = run.events_of(TransferComplete)
    assert complete.file_crc == crc16(NEW) and complete.size == len(NEW)
    assert list(run.store.files().values()) == [NEW]
    assert run.device.uploaded and not run.device.files


@pytest.mark.parametrize(("offset", "complete"), [(KEPT, False), (LAST, True)])
def test_chained_device_with_the_same_bytes_resumes(offset: int, complete: bool) -> None:
    point = ResumePoint(offset, crc16(OLD[:offset]), crc16(OLD) if complete else None)
    run = pair(OLD, point, chained=True).run()
    assert run.events_of(TransferRestarted) == [] and run.events_of(CrcMismatch) == []
    (done,) = run.events_of(TransferComplete)
    assert done.file_crc == crc16(OLD)
    sent = sum(len(e.data) for e in run.events_of(ChunkReceived))
    assert sent == len(OLD) - point.offset  # only the rest came


@pytest.mark.parametrize("chained", [False, True])
def test_a_complete_file_resent_with_another_ending_starts_over(chained: bool) -> None:
    point = ResumePoint(LAST, crc16(OLD[:LAST]), file_crc=crc16(OLD))
    run = pair(NEW, point, chained=chained).run()
    (restarted,) = run.events_of(TransferRestarted)
    assert restarted.offset == LAST
    if not chained:  # the packet checks out alone; the file's CRC does not
        assert "ends with CRC" in restarted.reason
    started = run.events_of(TransferStarted)
    assert [s.resume_offset for s in started] == [LAST]
    assert list(run.store.files().values()) == [NEW]


def test_restart_chain_device_resent_complete_file_is_confirmed() -> None:
    point = ResumePoint(LAST, crc16(OLD[:LAST]), file_crc=crc16(OLD))
    run = pair(OLD, point, chained=False).run()
    assert run.events_of(TransferRestarted) == []
    (complete,) = run.events_of(TransferComplete)
    assert complete.file_crc == crc16(OLD)


def test_one_resume_attempt_starts_over_at_the_first_mismatch() -> None:
    item = slot_file(DualCamSlot.VIDEO_REAR, NEW)
    device = CameraDevice(imei=1, files=[item], restart_crc_after_resume=False)
    policy = Fixed(ResumePoint(KEPT, crc16(OLD[:KEPT])))
    server = ServerConnection(policy, ServerConfig(max_resume_attempts=1), opened=0.0)
    run = DevicePair(device, server, write_limit=1)
    run.store.partial[item.file.identifier] = bytearray(OLD[:KEPT])
    run.run()
    assert len(run.events_of(CrcMismatch)) == 1 and len(run.events_of(TransferRestarted)) == 1
    assert list(run.store.files().values()) == [NEW]


def test_a_bad_packet_at_the_point_is_resent_not_restarted() -> None:
    device = CameraDevice(
        imei=1,
        files=[slot_file(DualCamSlot.VIDEO_REAR, OLD)],
        restart_crc_after_resume=False,
        bad_crc_packets={KEPT // DATA_CHUNK + 1},
    )
    server = ServerConnection(Fixed(ResumePoint(KEPT, crc16(OLD[:KEPT]))), opened=0.0)
    run = DevicePair(device, server, write_limit=1)
    run.store.partial[b"%videor"] = bytearray(OLD[:KEPT])
    run.run()
    assert len(run.events_of(CrcMismatch)) == 1 and run.events_of(TransferRestarted) == []
    (complete,) = run.events_of(TransferComplete)
    assert complete.file_crc == crc16(OLD)


def early(kept: int, back: int, data: bytes = OLD) -> ResumePoint:
    """Resume ``back`` bytes before ``kept``: those are resent and compared."""
    return ResumePoint(
        kept - back, crc16(data[: kept - back]), verify_offset=kept, verify_crc=crc16(data[:kept])
    )


@pytest.mark.parametrize(
    ("path", "back"),
    # DualCam resumes in whole packets; a DSM file anywhere
    [(False, DATA_CHUNK), (False, 2 * DATA_CHUNK), (True, DATA_CHUNK), (True, 500)],
)
@pytest.mark.parametrize("chained", [False, True])
def test_a_packet_resent_before_the_point_proves_the_file(
    path: bool, back: int, chained: bool
) -> None:
    same = pair(OLD, early(KEPT, back), chained=chained, path=path).run()
    assert same.events_of(TransferRestarted) == []
    assert list(same.store.files().values()) == [OLD]
    other = pair(NEW, early(KEPT, back), chained=chained, path=path).run()
    (restarted,) = other.events_of(TransferRestarted)
    assert restarted.offset == KEPT - back
    if not chained:  # the packet checks out alone; the bytes kept do not
        assert f"the bytes resent before byte {KEPT}" in restarted.reason
    assert list(other.store.files().values()) == [NEW]


@pytest.mark.parametrize("verify", [KEPT, 6000])
def test_a_verify_offset_not_past_the_point_or_beyond_the_file_is_ignored(verify: int) -> None:
    point = ResumePoint(KEPT, crc16(OLD[:KEPT]), verify_offset=verify, verify_crc=1)
    run = pair(OLD, point, chained=False).run()
    assert run.events_of(TransferRestarted) == []
    assert list(run.store.files().values()) == [OLD]

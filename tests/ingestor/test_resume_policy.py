"""The resume policy's choice of transfer id: generations of one identity, one writer each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from camproto import (
    CameraFile,
    DualCamMetadata,
    DualCamSlot,
    ResumePoint,
    SessionInfo,
    TransferInfo,
)
from contracts import TransferProgress
from ingestor.camera.progress import ProgressBook
from ingestor.camera.resume import MAX_GENERATIONS, Claims, ResumePolicy, transfer_key

IMEI = 352094082736916
SESSION = SessionInfo(imei=IMEI, protocol=5, settings=0)
FILE = CameraFile.for_slot(DualCamSlot.VIDEO_REAR)
META = DualCamMetadata(
    version=1, file_type=32, timestamp_ms=1_732_192_496_000, trigger=1, duration_s=1,
    framerate=25, timezone_min=0, latitude=0.0, longitude=0.0,
)  # fmt: skip
INFO = TransferInfo(file=FILE, size=None, packets=10, device_crc=None, metadata=META)


def gen(generation: int) -> str:
    return transfer_key(IMEI, INFO, "unused", generation)


def progress(tid: str, *, complete: bool = False, age: float = 0.0) -> TransferProgress:
    return TransferProgress(
        transfer_id=tid, imei=f"{IMEI:015d}", identifier="%videor", total=10,
        offset=9 * 1024 if complete else 4096, crc=0x1234, origin=0, partition=0,
        complete=complete, size=10 * 1024 if complete else None,
        file_crc=0xBEEF if complete else None, session_id="s0", ingestor="a",
        updated_at=datetime.now(UTC) - timedelta(seconds=age),
    )  # fmt: skip


def policy(book: ProgressBook, claims: Claims, nonce: str) -> ResumePolicy:
    return ResumePolicy(book, nonce, claims=claims)


def test_generation_zero_is_the_id_fleetgate_always_had() -> None:
    assert gen(0) == transfer_key(IMEI, INFO, "other nonce")  # a capture time: no nonce
    assert len({gen(g) for g in range(MAX_GENERATIONS)}) == MAX_GENERATIONS


def test_a_second_session_starts_over_under_another_generation() -> None:
    book, claims = ProgressBook(), Claims()
    first, second = policy(book, claims, "s1"), policy(book, claims, "s2")
    assert first.resume_point(SESSION, INFO) == ResumePoint()
    assert second.resume_point(SESSION, INFO) == ResumePoint()
    ids = [first.take(FILE).transfer_id, second.take(FILE).transfer_id]
    assert ids == [gen(0), gen(1)] and claims.owner(gen(1)) == "s2"
    claims.release_session("s1")
    claims.release_session("s2")
    assert len(claims) == 0 and claims.held == {}


def test_the_most_recent_generation_is_resumed_unless_another_session_writes_it() -> None:
    book, claims = ProgressBook(), Claims()
    book.apply(progress(gen(0), complete=True, age=60))
    book.apply(progress(gen(1), age=1))
    one = policy(book, claims, "s1")
    assert one.resume_point(SESSION, INFO) == ResumePoint(4096, 0x1234)
    assert one.take(FILE).generation == 1
    other = policy(book, claims, "s2")  # gen 1 is s1's now: from 0, under gen 2
    assert other.resume_point(SESSION, INFO) == ResumePoint()
    assert other.take(FILE).transfer_id == gen(2)


def test_a_complete_transfer_is_resumed_with_its_file_crc() -> None:
    book = ProgressBook()
    book.apply(progress(gen(0), complete=True))
    one = policy(book, Claims(), "s1")
    assert one.resume_point(SESSION, INFO) == ResumePoint(9 * 1024, 0x1234, 0xBEEF)


def test_restarted_takes_a_generation_nobody_uses() -> None:
    book, claims = ProgressBook(), Claims()
    book.apply(progress(gen(0), complete=True))
    one = policy(book, claims, "s1")
    one.resume_point(SESSION, INFO)
    decision = one.take(FILE)
    again = one.restarted(decision)
    assert again.transfer_id == gen(1) and again.entry is None and again.point == ResumePoint()
    assert claims.owner(gen(0)) is None and claims.owner(gen(1)) == "s1"
    one.release(again.transfer_id)
    assert len(claims) == 0


def test_every_generation_in_use_gives_an_id_of_the_session() -> None:
    book, claims = ProgressBook(), Claims()
    for g in range(MAX_GENERATIONS):
        claims.claim(gen(g), f"other{g}")
    one = policy(book, claims, "s1")
    one.resume_point(SESSION, INFO)
    tid = one.take(FILE).transfer_id
    assert tid not in {gen(g) for g in range(MAX_GENERATIONS)}
    claims.release(tid, "nobody")  # not the owner: nothing changes
    assert claims.owner(tid) == "s1"


def checked(tid: str) -> TransferProgress:
    entry = progress(tid)
    return entry.model_copy(update={"check_offset": 3072, "check_crc": 0x4321})


def test_a_session_takes_over_a_transfer_its_point_proves() -> None:
    book, claims = ProgressBook(), Claims()
    book.apply(checked(gen(0)))
    old, new = policy(book, claims, "old"), policy(book, claims, "new")
    old.resume_point(SESSION, INFO)
    assert old.take(FILE).transfer_id == gen(0) and old.owns(gen(0))
    # the device's new connection, while the old one is not seen to be gone yet
    point = new.resume_point(SESSION, INFO)
    assert point == ResumePoint(3072, 0x4321, verify_offset=4096, verify_crc=0x1234)
    assert new.take(FILE).transfer_id == gen(0)
    assert new.owns(gen(0)) and not old.owns(gen(0)) and claims.held == {"new": {gen(0)}}


def test_a_point_that_proves_nothing_is_not_taken_over() -> None:
    book, claims = ProgressBook(), Claims()
    book.apply(progress(gen(0)))  # no check point (an older record)
    old, new = policy(book, claims, "old"), policy(book, claims, "new")
    old.resume_point(SESSION, INFO)
    assert new.resume_point(SESSION, INFO) == ResumePoint()
    assert new.take(FILE).transfer_id == gen(1) and old.owns(gen(0))

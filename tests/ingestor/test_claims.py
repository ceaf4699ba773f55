"""One writer per transfer across ingestors: the rule every ingestor applies to the progress
topic's records in order (:func:`ingestor.camera.arbiter.holder_after`), and the resume
policy's use of the holder it names. Tables of records in, holder out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from camproto import ResumePoint
from contracts import TransferProgress
from ingestor.camera.arbiter import Holder, holder_after, is_live
from ingestor.camera.progress import ProgressBook
from ingestor.camera.resume import Claims, ResumePolicy
from tests.ingestor.test_resume_policy import FILE, IMEI, INFO, SESSION, gen

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TID = "t" * 32


def record(
    session: str,
    ingestor: str,
    at: float,
    *,
    claim: Literal["start", "takeover"] | None = None,
    stale: float | None = 60.0,
    complete: bool = False,
    offset: int = 0,
) -> TransferProgress:
    return TransferProgress(
        transfer_id=TID, imei=f"{IMEI:015d}", identifier="%videor", total=10, offset=offset,
        crc=0, origin=-1, partition=-1, complete=complete, session_id=session,
        ingestor=ingestor, updated_at=T0 + timedelta(seconds=at), claim=claim,
        stale_seconds=stale if claim else None,
    )  # fmt: skip


def holder(session: str, ingestor: str, at: float) -> Holder:
    return Holder(session, ingestor, T0 + timedelta(seconds=at))


A0 = holder("a1", "a", 0)
CASES = {
    # name: (holder before, record read, holder after)
    "first claim holds": (None, record("a1", "a", 0, claim="start"), A0),
    "progress of nobody's transfer holds": (None, record("a1", "a", 0, offset=4096), A0),
    "the holder's progress keeps it alive": (
        A0, record("a1", "a", 5, offset=4096), holder("a1", "a", 5)
    ),
    "an older record of the holder changes nothing": (
        holder("a1", "a", 5), record("a1", "a", 1, offset=4096), holder("a1", "a", 5)
    ),
    "a concurrent claim of another ingestor loses": (
        A0, record("b1", "b", 0.01, claim="start"), A0
    ),
    "a claim just short of stale loses": (A0, record("b1", "b", 59.9, claim="start"), A0),
    "a claim after the holder went stale wins": (
        A0, record("b1", "b", 60, claim="start"), holder("b1", "b", 60)
    ),
    "a stale claim judged by the claimant's setting": (
        A0, record("b1", "b", 10, claim="start", stale=10), holder("b1", "b", 10)
    ),
    "a takeover wins at once": (A0, record("b1", "b", 1, claim="takeover"), holder("b1", "b", 1)),
    "a claim from the holder's own ingestor wins": (
        A0, record("a2", "a", 1, claim="start"), holder("a2", "a", 1)
    ),
    "late progress of a session taken over changes nothing": (
        holder("b1", "b", 1), record("a1", "a", 2, offset=8192), holder("b1", "b", 1)
    ),
    "the holder's complete record frees the transfer": (
        A0, record("a1", "a", 9, complete=True), None
    ),
    "anyone's complete record frees it": (A0, record("b1", "b", 9, complete=True), None),
    "a claim after complete holds": (
        None, record("b1", "b", 9, claim="start"), holder("b1", "b", 9)
    ),
}  # fmt: skip


@pytest.mark.parametrize(("before", "read", "after"), CASES.values(), ids=CASES.keys())
def test_holder_after(before: Holder | None, read: TransferProgress, after: Holder | None) -> None:
    assert holder_after(before, read) == after


def test_every_reader_agrees_on_the_order_of_two_claims() -> None:
    """Two sessions claim at once: whoever's claim lands first holds, for every reader."""
    a, b = record("a1", "a", 0.002, claim="start"), record("b1", "b", 0.001, claim="start")
    for first, second, winner in ((a, b, "a1"), (b, a, "b1")):
        found = holder_after(holder_after(None, first), second)
        assert found is not None and found.session_id == winner


LIVE = {
    "just published": (0.0, True),
    "silent a while": (59.9, True),
    "silent for stale_seconds": (60.0, False),
    "long gone": (3600.0, False),
}


@pytest.mark.parametrize(("silent", "live"), LIVE.values(), ids=LIVE.keys())
def test_is_live(silent: float, live: bool) -> None:
    assert is_live(A0, T0 + timedelta(seconds=silent), 60.0) is live


# The resume policy with a holder named by the topic ------------------------------------------


def observed(book: ProgressBook, *records: TransferProgress) -> ProgressBook:
    for item in records:
        book.observe(item)
    return book


def claim_of(tid: str, session: str, ingestor: str, *, offset: int = 0) -> TransferProgress:
    now = datetime.now(UTC)
    check = {"check_offset": offset - 1024, "check_crc": 0x4321} if offset else {}
    return TransferProgress(
        transfer_id=tid, imei=f"{IMEI:015d}", identifier="%videor", total=10, offset=offset,
        crc=0x1234, origin=5 if offset else -1, partition=0 if offset else -1,
        session_id=session, ingestor=ingestor, updated_at=now, claim="start", stale_seconds=60,
        **check,
    )  # fmt: skip


def test_a_live_holder_elsewhere_sends_a_new_file_to_the_next_generation() -> None:
    book = observed(ProgressBook(), claim_of(gen(0), "b1", "b"))
    mine = ResumePolicy(book, "a1", claims=Claims(), stale_seconds=60)
    assert mine.resume_point(SESSION, INFO) == ResumePoint()
    decision = mine.take(FILE)
    assert decision.transfer_id == gen(1) and not decision.takeover


def test_a_holder_gone_stale_or_ended_here_is_no_writer() -> None:
    book = observed(ProgressBook(), claim_of(gen(0), "b1", "b"))
    later = datetime.now(UTC) + timedelta(seconds=61)
    stale = ResumePolicy(book, "a1", claims=Claims(), stale_seconds=60, clock=lambda: later)
    stale.resume_point(SESSION, INFO)
    assert stale.take(FILE).transfer_id == gen(0)
    claims = Claims()
    claims.release_session("b1")  # b1 was a session of this process, now ended
    here = ResumePolicy(book, "a2", claims=claims, stale_seconds=60)
    here.resume_point(SESSION, INFO)
    assert here.take(FILE).transfer_id == gen(0)


def test_a_point_that_proves_the_file_takes_over_a_live_holder() -> None:
    book = observed(ProgressBook(), claim_of(gen(0), "b1", "b", offset=8192))
    mine = ResumePolicy(book, "a1", claims=Claims(), stale_seconds=60)
    point = mine.resume_point(SESSION, INFO)
    decision = mine.take(FILE)
    assert decision.transfer_id == gen(0) and decision.takeover
    assert point.offset == 8192 - 1024 and point.verify_offset == 8192


def test_won_and_taken_over_follow_the_topic() -> None:
    book = ProgressBook()
    mine = ResumePolicy(book, "a1", claims=Claims(), stale_seconds=60)
    mine.resume_point(SESSION, INFO)
    tid = mine.take(FILE).transfer_id
    book.observe(claim_of(tid, "b1", "b"))  # b's claim landed first
    book.observe(claim_of(tid, "a1", "a"))
    assert not mine.won(tid)
    book.forget(tid)
    book.observe(claim_of(tid, "a1", "a"))
    assert mine.won(tid) and not mine.taken_over(tid)
    book.observe(claim_of(tid, "b1", "b").model_copy(update={"claim": "takeover"}))
    assert mine.taken_over(tid)

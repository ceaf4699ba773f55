"""assembler.state: reassembly rules, without Kafka or S3."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from assembler.state import (
    Completed,
    Failed,
    Outcome,
    Progress,
    Reassembler,
    Record,
    RecordError,
    Rewind,
    Skipped,
)
from contracts import ChunkHeader, RecordKind, encode
from tests.assembler.assembler_helpers import CameraFile, Chunk, chunk_records, dsm, dualcam


class Feed:
    """Kafka offsets for hand-made records of one partition."""

    def __init__(self, reassembler: Reassembler, partition: int = 0) -> None:
        self.r = reassembler
        self.partition = partition
        self.offset = 0
        self.log: list[Record] = []

    def _record(self, kind: RecordKind, tid: str, value: bytes, **headers: int) -> Record:
        record = Record(kind, tid, self.partition, self.offset, value, **headers)
        self.offset += 1
        self.log.append(record)
        return record

    def start(self, f: CameraFile, session: str = "s1", resume_offset: int = 0) -> Record:
        return self._record(RecordKind.START, f.tid, encode(f.start(session, resume_offset)))

    def chunk(self, f: CameraFile, chunk: Chunk, origin: int) -> Record:
        return self._record(
            RecordKind.CHUNK,
            f.tid,
            chunk.value,
            file_offset=chunk.offset,
            crc_init=chunk.crc_init,
            crc=chunk.crc,
            file_crc=chunk.file_crc,
            origin=origin,
        )

    def end(self, f: CameraFile, origin: int, **changes: object) -> Record:
        end = f.end().model_copy(update=changes)
        return self._record(RecordKind.END, f.tid, encode(end), origin=origin)

    def whole(self, f: CameraFile, record_bytes: int = 64 * 1024) -> list[Record]:
        start = self.start(f)
        out = [start]
        out += [
            self.chunk(f, c, start.offset) for c in chunk_records(f.data, 0, None, record_bytes)
        ]
        out.append(self.end(f, start.offset))
        return out

    def replay(self, origin: int, stop: int, tid: str) -> None:
        """What the agent does on Rewind: feed [origin, stop) of this transfer again."""
        for record in self.log[origin:stop]:
            if record.transfer_id == tid:
                outcome = self.r.feed(record, rewinding=True)
                assert not isinstance(outcome, Rewind)


@pytest.fixture
def reassembler(tmp_path: Path) -> Reassembler:
    return Reassembler(tmp_path / "spool", remember=3)


def _run(r: Reassembler, records: list[Record]) -> list[Outcome]:
    return [r.feed(record) for record in records]


def test_a_whole_file_completes_with_its_crc_sha256_and_bytes(reassembler: Reassembler) -> None:
    f = dsm(os.urandom(200_000), "/DSM/a.mp4\0")
    outcomes = _run(reassembler, Feed(reassembler).whole(f))
    assert all(isinstance(o, Progress) for o in outcomes[:-1])
    done = outcomes[-1]
    assert isinstance(done, Completed)
    t = done.transfer
    assert (t.expected, t.file_crc, done.device_crc_ok) == (len(f.data), f.crc, True)
    assert t.sha256.hexdigest() == hashlib.sha256(f.data).hexdigest()
    assert t.path.read_bytes() == f.data
    assert len(reassembler) == 1
    reassembler.finish(t)
    assert not t.path.exists() and len(reassembler) == 0 and reassembler.is_done(f.tid)


def test_every_record_twice_stores_the_bytes_once(reassembler: Reassembler) -> None:
    f = dualcam(os.urandom(150_000), "photo_front")
    feed = Feed(reassembler)
    records = feed.whole(f)
    outcomes = []
    for record in records[:-1]:
        outcomes += [reassembler.feed(record), reassembler.feed(record)]
    skipped = [o for o in outcomes if isinstance(o, Skipped)]
    assert [s.reason for s in skipped] == ["duplicate"] * 3  # the start record is kept too
    done = reassembler.feed(records[-1])
    assert isinstance(done, Completed) and done.transfer.path.read_bytes() == f.data
    reassembler.finish(done.transfer)
    assert reassembler.feed(records[-1]) == Skipped("done")
    assert reassembler.feed(records[0]) == Skipped("done")


def test_a_resumed_session_with_other_record_cuts_appends_only_the_new_tail(
    reassembler: Reassembler,
) -> None:
    f = dualcam(os.urandom(300_000), "video_front")
    feed = Feed(reassembler)
    first = feed.start(f)
    reassembler.feed(first)
    for c in chunk_records(f.data, 0, 100 * 1024):
        assert isinstance(reassembler.feed(feed.chunk(f, c, first.offset)), Progress)
    second = feed.start(f, session="s2")
    transfer = reassembler.transfers[f.tid]
    assert isinstance(reassembler.feed(second), Progress)
    assert reassembler.transfers[f.tid] is transfer and transfer.expected == 100 * 1024
    for c in chunk_records(f.data, 0, None, record_bytes=48 * 1024):  # 96 KiB..144 KiB overlaps
        reassembler.feed(feed.chunk(f, c, second.offset))
    assert transfer.duplicates == 3  # two whole records and one in part
    done = reassembler.feed(feed.end(f, second.offset))
    assert isinstance(done, Completed) and done.transfer.path.read_bytes() == f.data


def test_a_chunk_without_state_rewinds_to_its_origin(reassembler: Reassembler) -> None:
    f = dsm(os.urandom(300_000), "/DSM/r.mp4\0")
    other = dualcam(os.urandom(5000), "photo_rear")
    feed = Feed(reassembler)
    records = feed.whole(f)
    feed.whole(other)  # interleaved records of another transfer are left alone
    lost = Reassembler(reassembler.spool.parent / "other")  # an instance that saw nothing
    current = records[3]
    assert lost.feed(current) == Rewind(records[0].offset)
    feed.r = lost
    feed.replay(records[0].offset, current.offset, f.tid)
    assert lost.transfers[f.tid].expected == 2 * 64 * 1024
    assert isinstance(lost.feed(current, rewinding=True), Progress)
    assert other.tid not in lost.transfers
    outcomes = _run(lost, records[4:])
    assert isinstance(outcomes[-1], Completed) and outcomes[-1].transfer.path.read_bytes() == f.data


def test_an_end_record_without_state_rewinds_too(reassembler: Reassembler) -> None:
    f = dsm(os.urandom(70_000), "/DSM/e.jpg\0", media="photo")
    feed = Feed(reassembler)
    records = feed.whole(f)
    reassembler.transfers.clear()
    assert reassembler.feed(records[-1]) == Rewind(0)
    feed.replay(0, records[-1].offset, f.tid)
    assert isinstance(reassembler.feed(records[-1], rewinding=True), Completed)


def test_a_gap_rewinds_and_fails_if_the_bytes_are_not_there(reassembler: Reassembler) -> None:
    f = dsm(os.urandom(300_000), "/DSM/g.mp4\0")
    feed = Feed(reassembler)
    start = feed.start(f)
    chunks = chunk_records(f.data)
    reassembler.feed(start)
    reassembler.feed(feed.chunk(f, chunks[0], start.offset))
    late = feed.chunk(f, chunks[2], start.offset)  # chunks[1] never made it to Kafka
    assert reassembler.feed(late) == Rewind(start.offset)
    failed = reassembler.feed(late, rewinding=True)
    assert isinstance(failed, Failed)
    assert (failed.category, failed.reason) == ("missing", "bytes 65536..131072 never arrived")
    assert failed.start is not None and failed.offset == late.offset and failed.size == 65536
    assert len(reassembler) == 0 and not list(reassembler.spool.iterdir())


def test_no_start_record_while_rewinding_fails_without_a_start(reassembler: Reassembler) -> None:
    f = dsm(os.urandom(100_000), "/DSM/n.mp4\0")
    feed = Feed(reassembler)
    feed.offset = 10
    record = feed.chunk(f, chunk_records(f.data)[1], origin=3)
    failed = reassembler.feed(record, rewinding=True)
    assert isinstance(failed, Failed) and failed.start is None and failed.category == "missing"
    assert reassembler.feed(record) == Skipped("failed")


@pytest.mark.parametrize("origin", [None, 10, 11])
def test_no_usable_origin_fails(reassembler: Reassembler, origin: int | None) -> None:
    f = dsm(os.urandom(100_000), "/DSM/o.mp4\0")
    c = chunk_records(f.data)[1]
    record = Record(RecordKind.CHUNK, f.tid, 0, 10, c.value, c.offset, c.crc_init, c.crc,
                    c.file_crc, origin)  # fmt: skip
    failed = reassembler.feed(record)
    assert isinstance(failed, Failed) and failed.reason == "no usable fg-origin header"


def test_a_bad_crc_fails_and_a_new_start_starts_over(reassembler: Reassembler) -> None:
    f = dsm(os.urandom(200_000), "/DSM/c.mp4\0")
    feed = Feed(reassembler)
    start = feed.start(f)
    reassembler.feed(start)
    chunks = chunk_records(f.data)
    reassembler.feed(feed.chunk(f, chunks[0], start.offset))
    spool = reassembler.transfers[f.tid].path
    bad = Chunk(chunks[1].offset, b"\0" + chunks[1].value[1:], *(chunks[1].crc_init,
                chunks[1].crc, chunks[1].file_crc))  # fmt: skip
    failed = reassembler.feed(feed.chunk(f, bad, start.offset))
    assert isinstance(failed, Failed) and failed.category == "crc"
    assert failed.reason.startswith("CRC mismatch in the chunk at byte 65536 (65536 bytes)")
    assert not spool.exists() and len(reassembler) == 0
    assert reassembler.feed(feed.chunk(f, chunks[2], start.offset)) == Skipped("failed")
    assert reassembler.feed(feed.end(f, start.offset)) == Skipped("failed")
    outcomes = _run(reassembler, feed.whole(f))  # the device sends it again
    assert isinstance(outcomes[-1], Completed)
    assert outcomes[-1].transfer.path.read_bytes() == f.data


def test_a_wrong_file_crc_header_fails(reassembler: Reassembler) -> None:
    f = dualcam(os.urandom(100_000), "photo_front")
    feed = Feed(reassembler)
    start = feed.start(f)
    reassembler.feed(start)
    c = chunk_records(f.data)[0]
    # Chained from the wrong CRC: the record's own CRC checks out, the file CRC does not.
    value = c.value
    from camproto import crc16

    bad = Chunk(0, value, 0x1234, crc16(value, 0x1234), crc16(value, 0x1234))
    failed = reassembler.feed(feed.chunk(f, bad, start.offset))
    assert isinstance(failed, Failed) and failed.category == "file_crc"


@pytest.mark.parametrize(
    ("change", "category", "reason"),
    [
        ({"size": 10}, "size", "100000 bytes arrived, the end record says 10"),
        ({"file_crc": 1}, "file_crc", "the end record says 0x0001"),
    ],
)
def test_end_record_checks(
    reassembler: Reassembler, change: dict[str, int], category: str, reason: str
) -> None:
    f = dsm(os.urandom(100_000), "/DSM/s.mp4\0")
    feed = Feed(reassembler)
    records = feed.whole(f)
    _run(reassembler, records[:-1])
    failed = reassembler.feed(feed.end(f, 0, **change))
    assert isinstance(failed, Failed) and failed.category == category and reason in failed.reason


def test_an_end_record_saying_more_bytes_rewinds_then_fails(reassembler: Reassembler) -> None:
    f = dsm(os.urandom(100_000), "/DSM/m.mp4\0")
    feed = Feed(reassembler)
    records = feed.whole(f)
    _run(reassembler, records[:-1])
    end = feed.end(f, 0, size=200_000)
    assert reassembler.feed(end) == Rewind(0)
    failed = reassembler.feed(end, rewinding=True)
    assert isinstance(failed, Failed) and failed.category == "size"


def test_start_announcements_are_checked(reassembler: Reassembler) -> None:
    f = dsm(os.urandom(5000), "/DSM/a.jpg\0")
    feed = Feed(reassembler)
    start = f.start().model_copy(update={"size": 6000})
    reassembler.feed(feed._record(RecordKind.START, f.tid, encode(start)))
    for c in chunk_records(f.data):
        reassembler.feed(feed.chunk(f, c, 0))
    failed = reassembler.feed(feed.end(f, 0))
    assert (
        isinstance(failed, Failed) and failed.reason == "5000 bytes arrived, START announced 6000"
    )

    g = dualcam(os.urandom(5000), "photo_rear")
    start = g.start().model_copy(update={"packets": 6})
    reassembler.feed(feed._record(RecordKind.START, g.tid, encode(start)))
    for c in chunk_records(g.data):
        reassembler.feed(feed.chunk(g, c, 0))
    failed = reassembler.feed(feed.end(g, 0))
    assert isinstance(failed, Failed) and failed.reason.endswith("START announced 6 packets")

    # More bytes than START announced fail at the first chunk past them (the spool of a
    # lying device never holds more than it announced).
    h = dualcam(os.urandom(5000), "photo_front")
    start = h.start().model_copy(update={"packets": 3})
    reassembler.feed(feed._record(RecordKind.START, h.tid, encode(start)))
    outcomes = [reassembler.feed(feed.chunk(h, c, 0)) for c in chunk_records(h.data, 0, None, 1024)]
    assert [type(o).__name__ for o in outcomes] == ["Progress"] * 3 + ["Failed", "Skipped"]
    failed = outcomes[3]
    assert isinstance(failed, Failed) and failed.category == "size"
    assert failed.reason == "a chunk reaches byte 4096, past the 3072 bytes START announced"
    assert failed.size == 3072 and h.tid not in reassembler.transfers


def test_max_file_bytes_per_camera_kind_refuses_a_start(tmp_path: Path) -> None:
    limits = {"dsm": 4000, "dualcam": 10_000}
    r = Reassembler(tmp_path / "spool", max_file_bytes=limits)
    feed = Feed(r)
    big = dsm(os.urandom(5000), "/DSM/big.mp4\0")
    failed = r.feed(feed.start(big))
    assert isinstance(failed, Failed) and failed.category == "size"
    assert failed.reason == (
        "START announces 5000 bytes, over the 4000 bytes allowed for a dsm file (max_file_bytes)"
    )
    assert failed.start is not None and failed.start.imei == big.imei  # so file.failed names it
    assert big.tid not in r.transfers and not list((tmp_path / "spool").iterdir())
    later = [r.feed(feed.chunk(big, c, 0)) for c in chunk_records(big.data)]
    assert all(isinstance(o, Skipped) and o.reason == "failed" for o in later)
    # The limit is per kind: a DualCam file of the same size is taken, and stored whole.
    ok = dualcam(os.urandom(5000), "video_front")
    done = _run(r, feed.whole(ok))[-1]
    assert isinstance(done, Completed) and done.transfer.path.read_bytes() == ok.data
    # 0xFFFFFFFF packets: refused at START, before a byte is spooled.
    huge = dualcam(os.urandom(2048), "video_rear")
    start = huge.start().model_copy(update={"packets": 0xFFFFFFFF})
    failed = r.feed(feed._record(RecordKind.START, huge.tid, encode(start)))
    assert isinstance(failed, Failed) and "4398046510080 bytes" in failed.reason


def test_spool_bytes_counts_every_transfer_held(reassembler: Reassembler) -> None:
    feed = Feed(reassembler)
    a, b = dsm(os.urandom(3000), "/DSM/a.mp4\0"), dsm(os.urandom(7000), "/DSM/b.mp4\0")
    origin_a, origin_b = feed.start(a), feed.start(b)
    for f, start in ((a, origin_a), (b, origin_b)):
        reassembler.feed(start)
        for c in chunk_records(f.data, 0, 2048, 1024):
            reassembler.feed(feed.chunk(f, c, start.offset))
    assert reassembler.spool_bytes == 4096
    assert sum(p.stat().st_size for p in reassembler.spool.iterdir()) == 4096


def test_a_device_crc_mismatch_is_reported_not_fatal(reassembler: Reassembler) -> None:
    f = dsm(os.urandom(5000), "/DSM/d.jpg\0", media="photo")
    feed = Feed(reassembler)
    start = f.start().model_copy(update={"device_crc": f.crc ^ 1})
    reassembler.feed(feed._record(RecordKind.START, f.tid, encode(start)))
    for c in chunk_records(f.data):
        reassembler.feed(feed.chunk(f, c, 0))
    done = reassembler.feed(feed.end(f, 0))
    assert isinstance(done, Completed) and done.device_crc_ok is False
    f2 = dualcam(os.urandom(5000), "photo_rear")
    done = _run(reassembler, feed.whole(f2))[-1]
    assert isinstance(done, Completed) and done.device_crc_ok is None


def test_malformed_values(reassembler: Reassembler) -> None:
    f = dsm(os.urandom(5000), "/DSM/d.jpg\0", media="photo")
    feed = Feed(reassembler)
    assert reassembler.feed(feed._record(RecordKind.START, f.tid, b"{")) == Skipped("malformed")
    other = dsm(os.urandom(10), "/x\0")
    wrong = feed._record(RecordKind.START, f.tid, encode(other.start()))
    assert reassembler.feed(wrong) == Skipped("malformed")
    reassembler.feed(feed.start(f))
    failed = reassembler.feed(feed._record(RecordKind.END, f.tid, b"[]", origin=0))
    assert isinstance(failed, Failed) and failed.category == "malformed"
    assert failed.reason.startswith("end record: ")
    reassembler.feed(feed.start(f))
    failed = reassembler.feed(feed._record(RecordKind.START, f.tid, b"nope"))
    assert isinstance(failed, Failed) and failed.category == "malformed"
    assert reassembler.malformed("unknown", "x", 0, 1) == Skipped("malformed")


def test_spool_write_errors_fail_the_transfer(reassembler: Reassembler) -> None:
    f = dsm(os.urandom(5000), "/DSM/d.jpg\0", media="photo")
    feed = Feed(reassembler)
    reassembler.feed(feed.start(f))
    path = reassembler.transfers[f.tid].path
    path.unlink()
    path.mkdir()  # opening it for appending fails
    failed = reassembler.feed(feed.chunk(f, chunk_records(f.data)[0], 0))
    assert isinstance(failed, Failed) and failed.category == "spool"
    path.mkdir(exist_ok=True)
    (path / "x").touch()  # a spool file that cannot be replaced
    failed = reassembler.feed(feed.start(f))
    assert isinstance(failed, Failed) and failed.category == "spool" and failed.start is not None
    assert len(reassembler) == 0


def test_expire_drop_close_and_give_up(reassembler: Reassembler) -> None:
    feed = Feed(reassembler)
    files = [dualcam(os.urandom(3000), "photo_front") for _ in range(4)]
    for i, f in enumerate(files):
        feed.partition = i % 2
        reassembler.feed(feed.start(f))
    transfers = dict(reassembler.transfers)
    busy = files[0].tid
    expired = reassembler.expire(0.0, keep=busy)
    assert {t.transfer_id for t in expired} == {f.tid for f in files[1:]}
    assert not any(t.path.exists() for t in expired) and transfers[busy].path.exists()
    assert reassembler.expire(3600.0) == []
    for i, f in enumerate(files[1:], 1):
        feed.partition = i % 2
        reassembler.feed(feed.start(f))
    dropped = reassembler.drop_partitions([1])
    assert {t.partition for t in dropped} == {1} and len(reassembler) == 2
    gave_up = reassembler.give_up(busy, "boom", 0, 99)
    assert isinstance(gave_up, Failed) and gave_up.category == "internal"
    assert reassembler.give_up(busy, "boom", 0, 99) == Skipped("internal")
    reassembler.close()
    assert len(reassembler) == 0 and not list(reassembler.spool.iterdir())


def test_finished_transfers_are_remembered_up_to_a_bound(reassembler: Reassembler) -> None:
    feed = Feed(reassembler)
    files = [dualcam(os.urandom(2000), "photo_front") for _ in range(4)]
    for f in files:
        done = _run(reassembler, feed.whole(f))[-1]
        assert isinstance(done, Completed)
        reassembler.finish(done.transfer)
    assert [reassembler.is_done(f.tid) for f in files] == [False, True, True, True]


def test_unsafe_transfer_ids_get_a_hashed_spool_name(reassembler: Reassembler) -> None:
    f = dualcam(os.urandom(2000), "photo_front")
    f.tid = "../../x y"
    reassembler.feed(Feed(reassembler).start(f))
    path = reassembler.transfers[f.tid].path
    assert path.parent == reassembler.spool and ".." not in path.name and " " not in path.name


# Record.parse ---------------------------------------------------------------------------


def _headers(**values: object) -> list[tuple[str, bytes]]:
    return [(ChunkHeader[k.upper()].value, str(v).encode()) for k, v in values.items()]


def test_parse_a_chunk_record() -> None:
    headers = _headers(kind="chunk", transfer="t1", offset=1024, crc_init=1, crc=2, file_crc=3,
                       origin=7)  # fmt: skip
    record = Record.parse(b"t1", b"data", headers, 2, 9)
    assert record == Record(RecordKind.CHUNK, "t1", 2, 9, b"data", 1024, 1, 2, 3, 7)
    as_map = Record.parse(None, b"data", dict(headers), 2, 9)
    assert as_map == record


@pytest.mark.parametrize(
    ("key", "headers", "error"),
    [
        (b"t", _headers(kind="nope"), "fg-kind is 'nope'"),
        (b"t", _headers(), "fg-kind is None"),
        (b"", _headers(kind="start"), "neither key nor fg-transfer"),
        (b"\xff", _headers(kind="start"), "key is not ASCII"),
        (b"t", [("fg-kind", b"\xff")], "header fg-kind is not ASCII"),
        (b"t", _headers(kind="chunk", offset=0, crc_init=0, crc=0, file_crc=0), "fg-origin"),
        (b"t", _headers(kind="chunk", offset="x", origin=1), "fg-offset is 'x', not a number"),
        (b"t", _headers(kind="chunk", offset=-1, origin=1), "fg-offset is negative"),
    ],
)
def test_parse_rejects_records_that_break_the_contract(
    key: bytes, headers: list[tuple[str, bytes]], error: str
) -> None:
    with pytest.raises(RecordError, match=error.replace("(", r"\(")):
        Record.parse(key, b"", headers, 0, 0)


def test_parse_start_and_end_records() -> None:
    start = Record.parse(b"t", b"{}", _headers(kind="start", transfer="t"), 0, 1)
    assert (start.kind, start.origin, start.value) == (RecordKind.START, None, b"{}")
    end = Record.parse(b"t", None, _headers(kind="end", origin=4), 0, 5)
    assert (end.kind, end.origin, end.value) == (RecordKind.END, 4, b"")

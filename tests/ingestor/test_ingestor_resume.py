"""Transfer progress and resumes: in-process ingestors on a real broker (Tansu), real TCP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from camproto import DATA_CHUNK, CameraDevice, crc16
from contracts import ChunkMeta, Topic
from contracts import models as wire
from ingestor.camera.progress import ProgressBook, ProgressReader, supersedes
from ingestor.server import Ingestor
from simulator import ContentSpec, Faults, Fleet, SimulationConfig, simulate
from tests.helpers import eventually
from tests.ingestor.ingestor_helpers import (
    Hopper,
    book,
    dsm_video,
    dualcam_video,
    read_progress,
    read_published,
    running,
    settings,
    start_records,
)

IMEI = 352094082736916


def progress_of(
    kafka_records: list[wire.TransferProgress], transfer_id: str
) -> list[wire.TransferProgress]:
    return [p for p in kafka_records if p.transfer_id == transfer_id]


async def wait_book(
    ingestor: Ingestor, check: Callable[[wire.TransferProgress], bool], within: float = 10.0
) -> None:
    await eventually(lambda: any(check(e) for e in book(ingestor)), within, "progress in the book")


async def test_progress_follows_acknowledged_chunks(kafka: str) -> None:
    files = [dualcam_video(150_000), dsm_video(150_000)]
    async with running(settings(kafka, record_bytes=16 * 1024)) as ingestor:
        assert ingestor.port is not None
        # A first small file warms the producer up (its producer id and the partitions'
        # leaders, on a real broker with topics just created): acknowledgements that wait for
        # those would all come together, and so would the progress records.
        warm = CameraDevice(imei=IMEI + 9, files=[dualcam_video(3_000, seed=9)])
        await Hopper(warm, [ingestor.port], rate=600_000).run(within=20)
        hoppers = [
            Hopper(CameraDevice(imei=IMEI + i, files=[item]), [ingestor.port], rate=600_000)
            for i, item in enumerate(files)
        ]
        await asyncio.gather(*(h.run(within=20) for h in hoppers))
    published = await read_published(kafka, ends=3)
    records = await read_progress(kafka, until=lambda got: sum(p.complete for p in got) == 3)
    starts = await start_records(kafka)
    for tid, start in published.starts.items():
        data = bytes(published.files[tid])
        mine = progress_of(records, tid)
        offsets = [p.offset for p in mine]
        # one record per acknowledged chunk record (16 KiB), unless acks came together
        assert offsets == sorted(offsets)
        if len(data) > 100_000:  # the two files under test, not the warm-up photo
            assert len(offsets) >= 5
        for p in mine:
            assert p.crc == crc16(data[: p.offset])  # what a RESUME needs
            assert (p.partition, p.origin) == starts[tid][0]
            if start.packets is not None:
                assert p.offset % DATA_CHUNK == 0  # DualCam resumes in whole packets
            assert p.offset < len(data)  # never past the last packet's start
        last = mine[-1]
        assert last.complete and last.size == len(data) and last.file_crc == crc16(data)
        assert last.offset == (len(data) - 1) // DATA_CHUNK * DATA_CHUNK
        assert [p.complete for p in mine].count(True) == 1


async def test_device_resumes_on_the_same_ingestor(kafka: str) -> None:
    async with running(settings(kafka)) as ingestor:
        assert ingestor.port is not None
        config = SimulationConfig(
            port=ingestor.port, devices=2, dualcam_ratio=0.5, seed=5, timeout=30,
            content=ContentSpec(photos=0, videos=1, video_size=400_000),
            faults=Faults(disconnect_at=150),
        )  # fmt: skip
        report = await simulate(config)
        assert report.ok, report.summary()
    for outcome in report.outcomes:
        assert outcome.disconnects == 1 and len(outcome.resumed_from) == 1
        # 150 packets went out; what Kafka had acknowledged when the device came back
        assert 0 < outcome.resumed_from[0] <= 150 * DATA_CHUNK
    published = await read_published(kafka, ends=2)
    expected = {
        (f"{plan.imei:015d}", item.file.path): item.data
        for plan in Fleet(config).plans
        for item in plan.files(config.content)
    }
    assert published.by_imei_and_file() == expected
    starts = await start_records(kafka)
    for tid in published.ends:
        first, second = starts[tid]  # one start record per session
        metas = [ChunkMeta.from_headers(None, h) for h in published.chunk_headers]
        origins = {m.origin for m in metas if m.transfer_id == tid}
        assert origins == {first[1]}  # the resumed session points back at the first start
        assert second[1] > first[1]


async def test_device_resumes_on_another_ingestor(kafka: str) -> None:
    item = dualcam_video(300_000)
    device = CameraDevice(imei=IMEI, files=[item])
    async with (
        running(settings(kafka, instance="a"), progress=True) as a,
        running(settings(kafka, instance="b"), progress=True) as b,
    ):
        assert a.port is not None and b.port is not None
        gate = asyncio.Event()
        hopper = Hopper(device, [a.port, b.port], cut_after={0: 120}, gates={1: gate})
        running_device = asyncio.create_task(hopper.run(within=30))
        # b learns a's progress from Kafka, not from a
        await wait_book(b, lambda e: e.offset >= 100 * DATA_CHUNK)
        gate.set()
        await running_device
    assert [f.identifier for f in hopper.accepted] == [b"%videor"]
    # one packet before what b knew was durable: that packet proves the device's file
    assert hopper.resumed[0] == 0 and 99 * DATA_CHUNK <= hopper.resumed[1] < 120 * DATA_CHUNK
    published = await read_published(kafka, ends=1)
    assert published.by_imei_and_file() == {(f"{IMEI:015d}", "%videor"): item.data}
    (start,) = published.starts.values()
    closed = [e for e in published.sessions if isinstance(e, wire.Closed)]
    assert {e.ingestor for e in closed} == {"a", "b"}
    resumed = [e for e in published.sessions if isinstance(e, wire.TransferStarted)]
    assert [e.resume_offset for e in resumed] == hopper.resumed
    assert start.transfer_id in {p.transfer_id for p in await read_progress(kafka)}


async def test_completed_transfer_sent_again_is_confirmed_without_new_records(kafka: str) -> None:
    """The device never heard REPEAT INIT for a file Kafka has whole: it offers it again and
    resends only the last packet; nothing new reaches the chunk topic."""
    item = dualcam_video(10 * DATA_CHUNK + 300)
    device = CameraDevice(imei=IMEI, files=[item])
    async with running(settings(kafka), progress=True) as ingestor:
        assert ingestor.port is not None
        gate = asyncio.Event()
        hopper = Hopper(device, [ingestor.port], deaf={0}, gates={1: gate})
        task = asyncio.create_task(hopper.run(within=20))
        await wait_book(ingestor, lambda e: e.complete)
        gate.set()
        await task
    assert hopper.resumed == [0, 10 * DATA_CHUNK]  # the second time: the last packet only
    assert [f.identifier for f in hopper.accepted] == [b"%videor"]
    published = await read_published(kafka, ends=1)
    assert published.by_imei_and_file() == {(f"{IMEI:015d}", "%videor"): item.data}
    starts = await start_records(kafka)
    assert [len(v) for v in starts.values()] == [1]  # no start record the second time
    completes = [e for e in published.sessions if isinstance(e, wire.TransferComplete)]
    assert len(completes) == 2 and completes[0].transfer_id == completes[1].transfer_id


async def test_transfer_without_capture_time_restarts_at_zero(kafka: str) -> None:
    item = dualcam_video(200 * DATA_CHUNK, captured_ms=None)
    device = CameraDevice(imei=IMEI, files=[item])
    async with running(settings(kafka), progress=True) as ingestor:
        assert ingestor.port is not None
        hopper = Hopper(device, [ingestor.port], cut_after={0: 100})
        await hopper.run(within=20)
    assert hopper.resumed == [0, 0]  # not recognised: from the start again
    published = await read_published(kafka, ends=1)
    assert len(published.starts) == 2  # two transfer ids (each session's nonce)
    assert published.by_imei_and_file() == {(f"{IMEI:015d}", "%videor"): item.data}


async def test_lost_resume_point_restarts_the_transfer(kafka: str) -> None:
    """A progress record whose first start record is not in the chunk log (a broker that lost
    its data) is dropped: the session closes, and the device starts over at 0."""
    item = dualcam_video(50 * DATA_CHUNK)
    device = CameraDevice(imei=IMEI, files=[item])
    # no reader: what the book holds is what this ingestor's own acknowledgements put there
    async with running(settings(kafka)) as ingestor:
        assert ingestor.port is not None
        # a first session, cut at packet 30, writes the progress to rely on
        hopper = Hopper(device, [ingestor.port], cut_after={0: 30})
        task = asyncio.create_task(hopper.run(within=20))
        await wait_book(ingestor, lambda e: e.offset >= 20 * DATA_CHUNK)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        (entry,) = list(book(ingestor))
        # as if the log had restarted: the first start lies beyond anything written now
        forged = entry.model_copy(update={"origin": 10**9, "updated_at": datetime.now(UTC)})
        book(ingestor).clear()
        book(ingestor).apply(forged)
        again = Hopper(device, [ingestor.port])
        await again.run(within=20)
    # asked one packet before the durable offset (the packet compared), then reset
    assert again.resumed == [entry.offset - DATA_CHUNK, 0] and "CLOSE" in again.endings[0]
    published = await read_published(kafka, ends=1)
    assert published.by_imei_and_file() == {(f"{IMEI:015d}", "%videor"): item.data}
    closed = [e.reason for e in published.sessions if isinstance(e, wire.Closed)]
    assert any("resume point" in reason and "lost" in reason for reason in closed), closed


# The book ---------------------------------------------------------------------------------


def _progress(**fields: object) -> wire.TransferProgress:
    values: dict[str, object] = {
        "transfer_id": "t", "imei": "1", "identifier": "%videor", "total": 10, "offset": 1024,
        "crc": 1, "origin": 5, "partition": 0, "session_id": "s", "ingestor": "i",
        "updated_at": datetime.now(UTC),
    }  # fmt: skip
    return wire.TransferProgress.model_validate(values | fields)


def test_which_progress_record_stands() -> None:
    old = _progress(offset=4096)
    assert supersedes(_progress(offset=8192), old)  # further, same origin
    assert not supersedes(_progress(offset=2048), old)  # late record of the same chain
    assert supersedes(_progress(offset=0, complete=True), old)  # complete wins
    assert not supersedes(_progress(offset=9000), _progress(complete=True))
    # started over elsewhere (another origin): the newest stands, even if it is behind
    newer = _progress(origin=90, offset=1024, updated_at=datetime.now(UTC) + timedelta(1))
    assert supersedes(newer, old) and not supersedes(old, newer)


def test_book_forgets_old_entries_and_keeps_the_best() -> None:
    book = ProgressBook(max_age=60)
    assert book.apply(_progress(offset=4096))
    assert not book.apply(_progress(offset=1024))
    assert book.get("t") is not None and book.get("t").offset == 4096  # type: ignore[union-attr]
    old = datetime.now(UTC) - timedelta(seconds=120)
    assert not book.apply(_progress(transfer_id="u", updated_at=old))
    book.clear()
    assert len(book) == 0 and book.generation == 1


async def test_reader_skips_malformed_records_and_honours_tombstones(kafka: str) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
    await producer.start()
    try:
        good = _progress(transfer_id="good")
        gone = _progress(transfer_id="gone")
        for key, value in [
            (b"good", wire.encode(good)),
            (b"bad", b"{not json"),
            (b"gone", wire.encode(gone)),
            (b"gone", None),
        ]:
            await producer.send_and_wait(Topic.PROGRESS, value, key=key)
    finally:
        await producer.stop()
    found = ProgressBook()
    config = settings(kafka)
    reader = ProgressReader(config.ingestor, config.camera, found)
    await reader.start()
    try:
        assert await reader.catch_up()
    finally:
        await reader.stop()
    assert [p.transfer_id for p in found] == ["good"] and reader.records == 4


# Graceful stop ---------------------------------------------------------------------------


async def test_stop_closes_idle_sessions_at_once(kafka: str) -> None:
    async with running(settings(kafka, drain_timeout_seconds=20)) as ingestor:
        assert ingestor.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", ingestor.port)
        await eventually(lambda: len(ingestor.sessions) == 1, 5, "the session")
        began = asyncio.get_running_loop().time()
        await ingestor.stop()
        assert asyncio.get_running_loop().time() - began < 2  # not the 20 s drain
        assert await asyncio.wait_for(reader.read(), 5) == b"\x00\x00\x00\x00"  # CLOSE
        writer.close()
        with pytest.raises(ConnectionRefusedError):  # no longer listening
            await asyncio.open_connection("127.0.0.1", ingestor.port)


async def test_stop_lets_a_transfer_in_flight_finish_its_file(kafka: str) -> None:
    item = dualcam_video(120_000)
    device = CameraDevice(imei=IMEI, files=[item, dualcam_video(30_000, seed=9)])
    async with running(settings(kafka, drain_timeout_seconds=20)) as ingestor:
        assert ingestor.port is not None
        hopper = Hopper(device, [ingestor.port], rate=200_000)
        task = asyncio.create_task(hopper.run(within=20))
        await eventually(lambda: hopper.sent > 30_000, 5, "the upload under way")
        await ingestor.stop()
        assert [f.identifier for f in hopper.accepted] == [b"%videor"]  # the file finished
        assert device.files and hopper.endings[-1].endswith("CLOSE")  # then CLOSE, no next
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_stop_cuts_at_the_deadline_and_the_device_resumes_elsewhere(kafka: str) -> None:
    item = dualcam_video(400_000)
    device = CameraDevice(imei=IMEI, files=[item])
    async with (
        running(settings(kafka, instance="a", drain_timeout_seconds=0.3)) as a,
        running(settings(kafka, instance="b"), progress=True) as b,
    ):
        assert a.port is not None and b.port is not None
        gate = asyncio.Event()
        hopper = Hopper(device, [a.port, b.port], rate=300_000, gates={1: gate})
        task = asyncio.create_task(hopper.run(within=30))
        await eventually(lambda: hopper.sent > 60_000, 5, "the upload under way")
        await a.stop()  # 0.3 s more at 300 kB/s: not enough for 400 kB
        (cut,) = list(book(a))  # what a made durable and published before its CLOSE
        assert not cut.complete and cut.offset > 60_000
        await wait_book(b, lambda e: e.offset == cut.offset)
        gate.set()
        await task
    assert hopper.endings[0].endswith("CLOSE") and hopper.resumed == [0, cut.offset - DATA_CHUNK]
    assert [f.identifier for f in hopper.accepted] == [b"%videor"]
    published = await read_published(kafka, ends=1)
    assert published.by_imei_and_file() == {(f"{IMEI:015d}", "%videor"): item.data}
    closed = [e for e in published.sessions if isinstance(e, wire.Closed) and e.ingestor == "a"]
    assert "durable up to byte" in closed[0].reason and not closed[0].clean

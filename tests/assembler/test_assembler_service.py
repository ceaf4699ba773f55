"""The assembler against a real Kafka-protocol broker (Tansu) and a real S3 server (s3rver).

Each test produces hand-made contract records (as the ingestor makes them) and runs
``fleetgate assembler`` as a child process.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contracts import FileFailed, FileStored
from devstack.infra import S3RVER_KEY, free_port, start_s3rver
from tests.assembler.assembler_helpers import (
    AssemblerProcess,
    Chunk,
    Sender,
    committed,
    dsm,
    dualcam,
    file_events,
    objects,
    read_object,
    wait_for,
    wait_until,
)
from tests.conftest import S3


@pytest.fixture
def assembler(kafka: str, s3: S3, tmp_path: Path) -> Iterator[AssemblerProcess]:
    process = AssemblerProcess(kafka, s3, tmp_path)
    try:
        yield process
    finally:
        process.kill()


def _stored(events: list[Any]) -> dict[str, FileStored]:
    return {e.transfer_id: e for e in events if isinstance(e, FileStored)}


async def test_stores_dualcam_photo_video_and_dsm_file(
    kafka: str, s3: S3, assembler: AssemblerProcess
) -> None:
    captured = datetime(2026, 3, 1, 12, 30, 45, tzinfo=UTC)
    photo = dualcam(os.urandom(50_000), "photo_front", captured)
    video = dualcam(os.urandom(3_000_000), "video_rear", captured)
    evil = dsm(os.urandom(8_000_000), "../../etc/passwd\0", media="unknown")
    clip = dsm(os.urandom(700_000), "/mnt/sdcard/DSM/ev_0042.MP4\0")
    files = [photo, video, evil, clip]
    assembler.start()
    async with Sender(kafka) as sender:
        for f in files:
            await sender.transfer(f)

    events = await file_events(kafka, lambda ev: len(_stored(ev)) == len(files))
    stored = _stored(events)
    client = s3.client()
    keys = {
        photo.tid: f"356307042441013/2026/03/01/20260301T123045Z_dualcam_photo_front_"
        f"{photo.tid[:12]}.jpg",
        video.tid: f"356307042441013/2026/03/01/20260301T123045Z_dualcam_video_rear_"
        f"{video.tid[:12]}.h265",
        evil.tid: f"356307042441013/2026/05/04/20260504T030201Z_dsm_unknown_{evil.tid[:12]}.bin",
        clip.tid: f"356307042441013/2026/05/04/20260504T030201Z_dsm_video_{clip.tid[:12]}.mp4",
    }
    types = {
        photo.tid: "image/jpeg",
        video.tid: "video/H265",
        evil.tid: "application/octet-stream",
        clip.tid: "video/mp4",
    }
    assert set(objects(client, s3.bucket)) == set(keys.values())
    for f in files:
        event, key = stored[f.tid], keys[f.tid]
        sha = hashlib.sha256(f.data).hexdigest()
        assert (event.key, event.bucket, event.size, event.sha256) == (
            key,
            s3.bucket,
            len(f.data),
            sha,
        )
        assert event.crc16 == f.crc and event.content_type == types[f.tid]
        assert event.event_id == f"{f.tid}.stored" and event.imei == f.imei
        assert event.file == f.file
        assert read_object(client, s3.bucket, key) == f.data
        stat = client.stat_object(s3.bucket, key)
        meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
        assert stat.content_type == types[f.tid]
        assert meta["x-amz-meta-imei"] == f.imei
        assert meta["x-amz-meta-transfer-id"] == f.tid
        assert meta["x-amz-meta-sha256"] == sha
        assert meta["x-amz-meta-crc16"] == str(f.crc)
        assert meta["x-amz-meta-camera"] == f.file.camera
    assert not any("passwd" in key or ".." in key or "etc" in key for key in keys.values())
    began = time.monotonic()
    assert assembler.terminate() == 0  # SIGTERM
    assert time.monotonic() - began < 5
    assert len(assembler.logged("file_stored")) == len(files)


async def test_duplicates_and_resumed_sessions_store_one_object(
    kafka: str, s3: S3, assembler: AssemblerProcess
) -> None:
    twice = dsm(os.urandom(900_000), "/DSM/twice.mp4\0")
    resumed = dualcam(os.urandom(1_500_000), "video_front", datetime(2026, 1, 2, tzinfo=UTC))
    assembler.start()
    async with Sender(kafka) as sender:
        await sender.transfer(twice, twice=True)  # every record produced twice
        # Session 1 breaks off after 600 KB; session 2 starts over at offset 0 with records
        # cut differently (48 KiB), so one of them overlaps what is held only in part.
        origin = await sender.start(resumed, session="s1")
        await sender.chunks(resumed, origin, 0, 600 * 1024)
        origin = await sender.start(resumed, session="s2")
        await sender.chunks(resumed, origin, record_bytes=48 * 1024)
        await sender.end(resumed, origin, session="s2")
        # Late copies after the file was stored: ignored.
        await sender.chunks(twice, origin=0, end=200_000)
        await sender.transfer(twice)

    events = await file_events(kafka, lambda ev: len(_stored(ev)) == 2)
    client = s3.client()
    stored = _stored(events)
    assert len(objects(client, s3.bucket)) == 2
    for f in (twice, resumed):
        assert read_object(client, s3.bucket, stored[f.tid].key) == f.data
    await wait_for(lambda: len(assembler.logged("file_stored")) == 2, 5, "two stored files")
    assert assembler.terminate() == 0
    assert len(events) == 2  # no second event: late records of a stored file are ignored
    lines = assembler.logged("file_stored")
    assert any('"duplicate_records": 0' not in line for line in lines)


async def test_bad_crc_fails_the_transfer_and_a_resend_starts_over(
    kafka: str, s3: S3, assembler: AssemblerProcess
) -> None:
    bad = dsm(os.urandom(400_000), "/DSM/bad.mp4\0")
    good = dualcam(os.urandom(100_000), "photo_rear")

    def corrupt(chunk: Chunk) -> Chunk:
        if chunk.offset != 3 * 64 * 1024:
            return chunk
        value = bytearray(chunk.value)
        value[100] ^= 0x40
        return Chunk(chunk.offset, bytes(value), chunk.crc_init, chunk.crc, chunk.file_crc)

    assembler.start()
    async with Sender(kafka) as sender:
        origin = await sender.start(bad)
        await sender.chunks(bad, origin, mangle=corrupt)
        await sender.end(bad, origin)
        await sender.transfer(good)
    events = await file_events(kafka, lambda ev: len(ev) == 2)
    failed = [e for e in events if isinstance(e, FileFailed)]
    assert len(failed) == 1 and failed[0].transfer_id == bad.tid
    assert failed[0].reason.startswith("crc: CRC mismatch in the chunk at byte 196608")
    assert failed[0].imei == bad.imei and failed[0].file == bad.file
    assert list(objects(s3.client(), s3.bucket)) == [_stored(events)[good.tid].key]

    async with Sender(kafka) as sender:  # the device sends the file again, intact
        await sender.transfer(bad)
    events = await file_events(kafka, lambda ev: bad.tid in _stored(ev))
    key = _stored(events)[bad.tid].key
    assert read_object(s3.client(), s3.bucket, key) == bad.data
    assert assembler.terminate() == 0
    assert len(assembler.logged("file_failed")) == 1


async def test_rewinds_after_losing_its_state(
    kafka: str, s3: S3, assembler: AssemblerProcess
) -> None:
    f = dualcam(os.urandom(2_000_000), "video_rear", datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC))
    half = 1_000_448  # 977 packets: not at a record boundary
    # A shorter session: the restarted instance joins once the killed one's session expired.
    assembler.env |= {
        "FLEETGATE_BROKER_SESSION_TIMEOUT_SECONDS": "3",
        "FLEETGATE_BROKER_REBALANCE_TIMEOUT_SECONDS": "3",
        "FLEETGATE_BROKER_HEARTBEAT_INTERVAL_SECONDS": "0.5",
    }
    assembler.start()
    async with Sender(kafka) as sender:
        origin = await sender.start(f)
        last = await sender.chunks(f, origin, 0, half)
        partition = sender.partitions[f.tid]

        async def consumed() -> bool:
            offsets = await committed(kafka, "fleetgate-assembler", [partition])
            return offsets.get(partition, -1) > last

        await wait_until(consumed, 30, "the first half committed")
        assembler.kill()  # SIGKILL: the in-memory state and the spool are lost
        await sender.chunks(f, origin, half)
        await sender.end(f, origin)
    assembler.start()
    events = await file_events(kafka, lambda ev: f.tid in _stored(ev), within=40)
    event = _stored(events)[f.tid]
    assert read_object(s3.client(), s3.bucket, event.key) == f.data
    assert event.key.endswith(f"20260203T040506Z_dualcam_video_rear_{f.tid[:12]}.h265")
    assert len(objects(s3.client(), s3.bucket)) == 1
    assert len(assembler.logged("rewind")) == 1
    assert assembler.terminate() == 0
    assert len(assembler.logged("file_stored", run=1)) == 0


async def test_waits_for_s3_and_stores_once_it_is_back(kafka: str, tmp_path: Path) -> None:
    port = free_port()
    server = start_s3rver(tmp_path / "s3", port, log=tmp_path / "s3rver.log")
    s3 = S3(f"127.0.0.1:{port}", S3RVER_KEY, S3RVER_KEY, "made-by-assembler")
    process = AssemblerProcess(kafka, s3, tmp_path)
    try:
        process.start()
        await process.wait_logged("bucket_created")
        server.stop()
        f = dsm(os.urandom(6_000_000), "/DSM/outage.mp4\0")  # multipart: 5 MiB parts
        async with Sender(kafka) as sender:
            await sender.transfer(f)
        await process.wait_logged("s3_error", count=2)
        server = start_s3rver(tmp_path / "s3", port, log=tmp_path / "s3rver.log")
        events = await file_events(kafka, lambda ev: f.tid in _stored(ev))
        assert read_object(s3.client(), s3.bucket, _stored(events)[f.tid].key) == f.data
        assert len(objects(s3.client(), s3.bucket)) == 1
        assert process.terminate() == 0
    finally:
        process.kill()
        server.stop()

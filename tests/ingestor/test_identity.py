"""A transfer id names one file's bytes: two different DualCam files with the same IMEI,
slot, packet count and capture time (a camera whose clock is stuck), one after the other or
at once, both end stored, each object byte for byte what its device sent.

The pipeline runs as processes (``python -m fleetgate ingestor`` and ``assembler``) on a real
broker (Tansu) and S3 server (s3rver); devices speak TCP. ``-s`` prints the figures.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from camproto import DATA_CHUNK, CameraDevice, DeviceFile
from tests.ingestor.ingestor_helpers import Hopper, dualcam_video
from tests.reliability.reliability_helpers import Pipeline, pipeline

IMEI = 352094082736916
SIZE = 300_000
CAPTURED = 1_732_192_496_000  # the same in both files: the clock is stuck
FIRST = dualcam_video(SIZE, CAPTURED, seed=1)
SECOND = dualcam_video(SIZE, CAPTURED, seed=2)


def figure(name: str, **values: object) -> None:
    print(f"\n[identity] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def camera(item: DeviceFile, *, chained: bool) -> CameraDevice:
    return CameraDevice(imei=IMEI, files=[item], restart_crc_after_resume=not chained)


async def stored(line: Pipeline, count: int) -> list[bytes]:
    await line.until(lambda: len(line.objects()) >= count, 60, f"{count} objects")
    return sorted(line.objects().values())


@pytest.mark.parametrize("chained", [False, True], ids=["crc-restarts", "crc-chained"])
async def test_same_identity_one_after_the_other(tmp_path: Path, chained: bool) -> None:
    assert FIRST.data != SECOND.data and FIRST.packets == SECOND.packets
    async with pipeline(tmp_path) as line:
        ingestor = line.ingestor("a")
        line.assembler()
        await ingestor.wait_listening()
        assert ingestor.port is not None
        first = Hopper(camera(FIRST, chained=chained), [ingestor.port])
        await first.run(within=30)
        began = time.monotonic()
        second = Hopper(camera(SECOND, chained=chained), [ingestor.port])
        await second.run(within=30)  # before: confirmed and lost, or refused forever
        seconds = time.monotonic() - began
        objects = await stored(line, 2)
        restarted = ingestor.events("transfer_restarted")
    figure(
        "one after the other",
        chained=chained,
        second_upload_s=round(seconds, 2),
        second_connections=second.connections,
        second_bytes_sent=second.sent,
    )
    assert [f.identifier for f in first.accepted + second.accepted] == [b"%videor"] * 2
    assert objects == sorted([FIRST.data, SECOND.data])  # both stored, byte for byte
    (restart,) = restarted
    assert "another file" in restart["reason"]
    # asked for the last packet (a resent file; twice when the chained CRC refused it once),
    # then from byte 0: another file, in the same session
    last = (SIZE - 1) // DATA_CHUNK * DATA_CHUNK
    assert second.resumed == [last] * (2 if chained else 1) + [0]
    assert second.connections == 1


async def test_same_identity_at_once(tmp_path: Path) -> None:
    async with pipeline(tmp_path) as line:
        ingestor = line.ingestor("a")
        line.assembler()
        await ingestor.wait_listening()
        assert ingestor.port is not None
        hoppers = [
            Hopper(camera(item, chained=False), [ingestor.port], rate=150_000)
            for item in (FIRST, SECOND)
        ]
        await asyncio.gather(*(hopper.run(within=30) for hopper in hoppers))
        objects = await stored(line, 2)
        starts = ingestor.events("transfer")
    assert all(h.accepted for h in hoppers)
    assert objects == sorted([FIRST.data, SECOND.data])
    assert len({line["transfer"] for line in starts}) == 2  # two transfers, two ids
    assert [h.resumed for h in hoppers] == [[0], [0]]  # the second started over at 0


@pytest.mark.parametrize("chained", [False, True], ids=["crc-restarts", "crc-chained"])
async def test_another_file_than_the_one_half_kept_starts_over(
    tmp_path: Path, chained: bool
) -> None:
    """The first file got halfway (then the camera replaced it); the second, with the same
    identity, would resume there: a device chaining its CRC across RESUME was refused at that
    point session after session, one restarting its chain was stored as the first file's
    head and its own tail. The resume starts one packet early, and that packet must be the
    one Kafka holds: it is not, so the file starts over and is stored whole."""
    async with pipeline(tmp_path) as line:
        ingestor = line.ingestor("a")
        line.assembler()
        await ingestor.wait_listening()
        assert ingestor.port is not None
        first = Hopper(
            camera(FIRST, chained=chained), [ingestor.port], cut_after={0: 150}, max_connections=1
        )
        await first.run(within=30)
        second = Hopper(camera(SECOND, chained=chained), [ingestor.port])
        await second.run(within=30)
        objects = await stored(line, 1)
    assert first.accepted == [] and second.accepted == [FIRST.file]
    assert objects == [SECOND.data]
    assert second.resumed[0] > 0 and second.resumed[-1] == 0  # resumed, refused, started over
    assert second.connections == 1


async def test_the_same_file_resumes_one_packet_early(tmp_path: Path) -> None:
    async with pipeline(tmp_path) as line:
        ingestor = line.ingestor("a")
        line.assembler()
        await ingestor.wait_listening()
        assert ingestor.port is not None
        device = camera(FIRST, chained=False)
        hopper = Hopper(device, [ingestor.port], cut_after={0: 150})
        await hopper.run(within=30)
        objects = await stored(line, 1)
    assert objects == [FIRST.data] and hopper.accepted == [FIRST.file]
    assert ingestor.events("transfer_restarted") == []
    first, resumed = hopper.resumed
    assert first == 0 and 0 < resumed < 150 * DATA_CHUNK and resumed % DATA_CHUNK == 0

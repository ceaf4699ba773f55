"""A transfer id names one file's bytes: two different DualCam files with the same IMEI,
slot, packet count and capture time (a camera whose clock is stuck), one after the other,
at once, or after the first was half uploaded, both end stored, each object byte for byte
what its device sent; the same file cut and resumed is stored once.

The pipeline runs as processes (``python -m fleetgate ingestor`` and ``assembler``) on a real
broker (Tansu) and S3 server (s3rver); devices speak TCP. Each scenario has its own IMEI, all
run at once on one pipeline per CRC mode. ``-s`` prints the figures.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest

from camproto import DATA_CHUNK, CameraDevice, DeviceFile
from tests.ingestor.ingestor_helpers import Hopper, dualcam_video
from tests.reliability.reliability_helpers import pipeline

IMEI = 352094082736916
SIZE = 300_000
CAPTURED = 1_732_192_496_000  # the same in both files: the clock is stuck
FIRST = dualcam_video(SIZE, CAPTURED, seed=1)
SECOND = dualcam_video(SIZE, CAPTURED, seed=2)
LAST = (SIZE - 1) // DATA_CHUNK * DATA_CHUNK  # where a file Kafka holds whole resumes


def figure(name: str, **values: object) -> None:
    print(f"\n[identity] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def camera(imei: int, item: DeviceFile, *, chained: bool) -> CameraDevice:
    return CameraDevice(imei=imei, files=[item], restart_crc_after_resume=not chained)


@pytest.mark.parametrize("chained", [False, True], ids=["crc-restarts", "crc-chained"])
async def test_files_of_one_identity_are_each_stored(tmp_path: Path, chained: bool) -> None:
    assert FIRST.data != SECOND.data and FIRST.packets == SECOND.packets
    after, together, half, same = IMEI, IMEI + 1, IMEI + 2, IMEI + 3
    async with pipeline(tmp_path) as line:
        ingestor = line.ingestor("a")
        line.assembler()
        await ingestor.wait_listening()
        assert ingestor.port is not None
        port = [ingestor.port]

        async def one_after_the_other() -> tuple[Hopper, Hopper]:
            first = Hopper(camera(after, FIRST, chained=chained), port)
            await first.run(within=30)
            second = Hopper(camera(after, SECOND, chained=chained), port)
            await second.run(within=30)  # before: confirmed and lost, or refused forever
            return first, second

        async def at_once() -> list[Hopper]:
            hoppers = [
                Hopper(camera(together, item, chained=chained), port, rate=150_000)
                for item in (FIRST, SECOND)
            ]
            await asyncio.gather(*(hopper.run(within=30) for hopper in hoppers))
            return hoppers

        async def after_half() -> tuple[Hopper, Hopper]:
            # The first got halfway, then the camera replaced it by the second.
            first = Hopper(
                camera(half, FIRST, chained=chained), port, cut_after={0: 150}, max_connections=1
            )
            await first.run(within=30)
            second = Hopper(camera(half, SECOND, chained=chained), port)
            await second.run(within=30)  # before: refused forever, or a mix stored
            return first, second

        async def resumed() -> Hopper:
            hopper = Hopper(camera(same, FIRST, chained=chained), port, cut_after={0: 150})
            await hopper.run(within=30)
            return hopper

        (a1, a2), both, (h1, h2), again = await asyncio.gather(
            one_after_the_other(), at_once(), after_half(), resumed()
        )
        await line.until(lambda: len(line.objects()) >= 6, 60, "6 objects")
        objects = line.objects()
        restarts = ingestor.events("transfer_restarted")
    stored: dict[int, list[bytes]] = defaultdict(list)
    for key, data in objects.items():
        stored[int(key.split("/", 1)[0])].append(data)
    two = sorted([FIRST.data, SECOND.data])
    figure(
        "one after the other",
        chained=chained,
        second_resumes=a2.resumed,
        second_bytes_sent=a2.sent,
        second_connections=a2.connections,
    )
    figure("after half", chained=chained, second_resumes=h2.resumed, sent=h2.sent)
    figure("same file resumed", chained=chained, resumes=again.resumed)

    # One after the other: a point in the first file asked (twice when a chained CRC refused
    # it once), then byte 0 on the same connection; both stored. The point is the last packet
    # once the first file's final progress record is acknowledged; progress is published
    # after the device is told "done", so on a loaded machine it can be an earlier packet.
    assert a1.accepted == a2.accepted == [FIRST.file]
    *asked, restart = a2.resumed
    assert restart == 0 and a2.connections == 1, a2.resumed
    assert len(asked) == (2 if chained else 1), a2.resumed
    assert all(0 < at <= LAST and at % DATA_CHUNK == 0 for at in asked), a2.resumed
    assert sorted(stored[after]) == two
    # At once: two transfers, each from byte 0, both stored.
    assert [h.resumed for h in both] == [[0], [0]] and all(h.accepted for h in both)
    assert sorted(stored[together]) == two
    # After half: resumed one packet early, which did not match, from 0; stored whole.
    assert h1.accepted == [] and h2.accepted == [FIRST.file] and h2.connections == 1
    assert 0 < h2.resumed[0] < 150 * DATA_CHUNK and h2.resumed[-1] == 0
    assert stored[half] == [SECOND.data]
    # The same file: resumed one packet before its durable offset, stored once.
    first_resume, resumed_at = again.resumed
    assert first_resume == 0 and 0 < resumed_at < 150 * DATA_CHUNK
    assert stored[same] == [FIRST.data] and again.accepted == [FIRST.file]
    assert len(restarts) == 2  # one after the other, and after half
    assert all("another file" in r["reason"] for r in restarts)

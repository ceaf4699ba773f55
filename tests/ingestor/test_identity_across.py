"""One writer per transfer across ingestors. Two different DualCam files with the same IMEI,
slot, packet count and capture time (a camera whose clock is stuck, or two devices given one
IMEI), uploaded at the same moment to two ingestors: both stored, each object byte for byte
what its device sent. A claim left by an ingestor killed with SIGKILL does not keep a later
session from storing the file.

Every service is a real ``python -m fleetgate`` process on the session's Apache Kafka and an
s3rver (the slow holder: two ingestors in this process, each with its own progress book and
claims); devices speak TCP. ``-s`` prints the figures.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest

from camproto import CameraDevice
from contracts import TransferProgress
from contracts import models as wire
from tests.helpers import eventually
from tests.ingestor.ingestor_helpers import (
    Hopper,
    dualcam_video,
    read_progress,
    read_published,
    running,
    settings,
)
from tests.reliability.reliability_helpers import pipeline

IMEI = 352094082736100
SIZE = 300_000
CAPTURED = 1_732_192_496_000  # the same in both files: the clock is stuck
PAIRS = 4  # identities raced at once (each: one file to each ingestor)


def figure(name: str, **values: object) -> None:
    print(f"\n[identity across] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


async def test_same_identity_at_once_on_two_ingestors_both_stored(
    kafka: str, tmp_path: Path
) -> None:
    files = [dualcam_video(SIZE, CAPTURED, seed=s) for s in (1, 2)]
    assert files[0].data != files[1].data and files[0].packets == files[1].packets
    async with pipeline(tmp_path, kafka=kafka) as line:
        a, b = line.ingestor("a"), line.ingestor("b")
        line.assembler()
        await a.wait_listening()
        await b.wait_listening()
        assert a.port is not None and b.port is not None
        go = asyncio.Event()  # every device connects at the same moment
        hoppers = [
            Hopper(
                CameraDevice(imei=IMEI + pair, files=[item]),
                [port],
                rate=300_000,
                gates={0: go},
                max_connections=3,
            )
            for pair in range(PAIRS)
            for item, port in zip(files, (a.port, b.port), strict=True)
        ]
        uploads = asyncio.gather(*(hopper.run(within=60) for hopper in hoppers))
        go.set()
        await uploads
        await line.until(lambda: len(line.objects()) >= 2 * PAIRS, 60, "every object")
        await asyncio.sleep(0.2)  # a third object, were one stored twice, would show now
        objects = line.objects()
        lost = a.events("transfer_claim_lost") + b.events("transfer_claim_lost")
        took = sorted(e["claim_seconds"] for e in a.events("transfer") + b.events("transfer"))
        claims = [p for p in await read_progress(line.bootstrap) if p.claim]
    stored: dict[int, list[bytes]] = defaultdict(list)
    for key, data in objects.items():
        stored[int(key.split("/", 1)[0])].append(data)
    figure(
        "two ingestors at once",
        pairs=PAIRS,
        claims=len(claims),
        claims_lost=len(lost),
        claim_ms_min_median_max=[round(1000 * took[i], 1) for i in (0, len(took) // 2, -1)],
        connections=[h.connections for h in hoppers],
    )
    for hopper, item in zip(hoppers, files * PAIRS, strict=True):
        assert hopper.accepted == [item.file], hopper.endings  # each device heard "done"
    two = sorted(item.data for item in files)
    assert {imei: sorted(data) for imei, data in stored.items()} == {
        IMEI + pair: two for pair in range(PAIRS)
    }
    assert len(objects) == 2 * PAIRS
    # Every transfer written was claimed first; a claim that lost named another writer.
    assert all(p.claim == "start" for p in claims) and len(claims) >= 2 * PAIRS
    assert all(event["holder"] and event["holder_ingestor"] in "ab" for event in lost)


@pytest.mark.parametrize("stale", [None, "1"], ids=["claim-live", "claim-stale"])
async def test_claim_of_a_killed_ingestor_does_not_stop_the_file(
    kafka: str, tmp_path: Path, stale: str | None
) -> None:
    """a claims the transfer and dies (SIGKILL) before any byte of it is durable: its claim
    proves nothing. Live, b names the file anew (the next free id); gone stale (1 s here),
    b writes it under the id a claimed. Either way the file is stored once, whole."""
    item = dualcam_video(SIZE, CAPTURED, seed=3)
    imei = IMEI + 50 + (stale is not None)
    settings = {} if stale is None else {"camera_claim_stale_seconds": stale}
    async with pipeline(tmp_path, kafka=kafka) as line:
        a, b = line.ingestor("a"), line.ingestor("b", **settings)
        line.assembler()
        await a.wait_listening()
        await b.wait_listening()
        assert a.port is not None and b.port is not None
        # Slow on a (under one chunk record in 2 s, so nothing durable), fast on b.
        hopper = Hopper(CameraDevice(imei=imei, files=[item]), [a.port, b.port], rate=4_000)
        upload = asyncio.create_task(hopper.run(within=60))
        claimed = await read_progress(line.bootstrap, until=lambda got: any(p.claim for p in got))
        (claim,) = [p for p in claimed if p.claim]
        assert claim.ingestor == "a" and claim.offset == 0
        await eventually(lambda: hopper.sent >= 8_000, 20, "a few packets sent to a")
        a.kill()  # SIGKILL: the claim stays on the topic, nothing of the file is durable
        hopper.rate = None
        await upload
        await line.until(lambda: len(line.objects()) >= 1, 60, "the object")
        await asyncio.sleep(0.2)
        objects = line.objects()
        progress = await read_progress(
            line.bootstrap, until=lambda got: any(p.complete for p in got)
        )
    (complete,) = [p for p in progress if p.complete]
    figure(
        "claim of a killed ingestor",
        stale=stale,
        sent_to_a=hopper.endings[0],
        same_id=complete.transfer_id == claim.transfer_id,
        resumed=hopper.resumed,
    )
    assert hopper.accepted == [item.file] and hopper.connections == 2
    assert list(objects.values()) == [item.data]  # stored once, whole
    assert complete.ingestor == "b"
    if stale is None:  # a's claim still live: the next free id
        assert complete.transfer_id != claim.transfer_id
    else:  # a's claim gone stale: b took the transfer a had claimed
        assert complete.transfer_id == claim.transfer_id


async def test_a_slow_holder_stays_the_holder(kafka: str) -> None:
    """A device too slow to fill a chunk record holds its transfer all the same: its session
    publishes a record every third of ``claim_stale_seconds``, so another ingestor's session
    of the same identity, long after the claim, does not take it for gone; it names its file
    with the next generation. Two in-process ingestors, each with its own book and claims."""
    slow, fast = (dualcam_video(12 * 1024, CAPTURED, seed=s) for s in (4, 5))
    imei = IMEI + 70
    stale = 0.9
    configs = [settings(kafka, instance=name, claim_stale_seconds=stale) for name in ("one", "two")]
    async with running(configs[0], progress=True) as one, running(configs[1], progress=True) as two:
        assert one.port is not None and two.port is not None
        holder = Hopper(CameraDevice(imei=imei, files=[slow]), [one.port], rate=2_500)
        holding = asyncio.create_task(holder.run(within=30))

        def kept_alive(got: list[TransferProgress]) -> bool:
            # the claim, then records at least 2 x stale_seconds after it, nothing durable
            mine = [p for p in got if p.ingestor == "one"]
            return (
                bool(mine)
                and (mine[-1].updated_at - mine[0].updated_at).total_seconds() > 2 * stale
            )

        records = await read_progress(kafka, until=kept_alive)
        other = Hopper(CameraDevice(imei=imei, files=[fast]), [two.port])
        await other.run(within=20)
        await holding
        published = await read_published(kafka, ends=2)
    heartbeats = [p for p in records if p.ingestor == "one" and p.claim is None]
    figure("slow holder", heartbeats=len(heartbeats), stale_seconds=stale)
    assert heartbeats and all(p.offset == 0 for p in heartbeats)  # nothing durable yet
    assert holder.accepted == [slow.file] and other.accepted == [fast.file]
    assert len(published.ends) == 2  # two transfer ids, each file whole under its own
    assert sorted(bytes(published.files[tid]) for tid in published.ends) == sorted(
        [slow.data, fast.data]
    )


async def test_new_connection_on_another_ingestor_takes_the_transfer_over(kafka: str) -> None:
    """The device's old connection is still open on one ingestor (not yet seen to be gone)
    when it reconnects to another: the new session's resume point proves the file, so its
    claim takes the transfer over; the old session writes no more of it, is not confirmed,
    and is closed. One transfer id, the file whole."""
    item = dualcam_video(400_000, CAPTURED, seed=6)
    imei = IMEI + 80
    configs = [settings(kafka, instance=name, record_bytes=16 * 1024) for name in ("one", "two")]
    async with running(configs[0], progress=True) as one, running(configs[1], progress=True) as two:
        assert one.port is not None and two.port is not None
        old = Hopper(
            CameraDevice(imei=imei, files=[item]), [one.port], rate=60_000, max_connections=1
        )
        stale = asyncio.create_task(old.run(within=30))
        await read_progress(
            kafka, until=lambda got: any(p.ingestor == "one" and p.offset >= 40_000 for p in got)
        )
        new = Hopper(CameraDevice(imei=imei, files=[item]), [two.port])
        await new.run(within=20)
        await stale
        published = await read_published(kafka, ends=1)
        claims = [p for p in await read_progress(kafka) if p.claim]
    figure("takeover across ingestors", resumed=new.resumed, old_endings=old.endings)
    assert new.accepted == [item.file] and old.accepted == []  # the old one never heard "done"
    assert new.resumed[0] > 0  # resumed, not from 0
    assert old.endings == [f"{one.port}: CLOSE"]  # told to go
    assert [c.claim for c in claims] == ["start", "takeover"]
    assert [c.ingestor for c in claims] == ["one", "two"]
    assert len(published.starts) == 1  # one transfer id, written by both in turn
    (tid,) = published.ends
    assert bytes(published.files[tid]) == item.data
    closed = [e for e in published.sessions if isinstance(e, wire.Closed)]
    assert any("took transfer" in e.reason for e in closed), closed

"""A device's new connection while its old one is still open on the ingestor (not yet seen
to be gone) takes its transfer over from the durable point; the old one writes no more."""

from __future__ import annotations

import asyncio

from camproto import DATA_CHUNK, CameraDevice
from contracts import models as wire
from tests.helpers import eventually
from tests.ingestor.ingestor_helpers import (
    Hopper,
    book,
    dualcam_video,
    read_published,
    running,
    settings,
)

IMEI = 352094082736916


async def test_new_connection_takes_the_transfer_over(kafka: str) -> None:
    item = dualcam_video(400_000)
    async with running(settings(kafka, record_bytes=16 * 1024)) as ingestor:
        assert ingestor.port is not None
        old = Hopper(
            CameraDevice(imei=IMEI, files=[item]), [ingestor.port], rate=100_000, max_connections=1
        )
        stale = asyncio.create_task(old.run(within=30))
        await eventually(
            lambda: any(e.offset >= 40 * DATA_CHUNK for e in book(ingestor)), 10, "progress"
        )
        new = Hopper(CameraDevice(imei=IMEI, files=[item]), [ingestor.port])
        await new.run(within=20)
        await stale
    assert new.accepted == [item.file] and old.accepted == []
    assert new.resumed[0] > 0 and new.resumed[0] % DATA_CHUNK == 0  # resumed, not from 0
    assert old.endings == [f"{ingestor.port}: CLOSE"]  # the old connection was told to go
    published = await read_published(kafka, ends=1)
    assert published.by_imei_and_file() == {(f"{IMEI:015d}", "%videor"): item.data}
    assert len(published.starts) == 1  # one transfer id
    closed = [e for e in published.sessions if isinstance(e, wire.Closed)]
    assert any("took transfer" in e.reason for e in closed), closed

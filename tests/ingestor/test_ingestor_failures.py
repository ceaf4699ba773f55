"""Cameras that fail politely, against a real ingestor on a real broker (issue 10).

Each failure path ends the session with CLOSE well within its deadlines, the ``closed`` session
event says why, and a file empty in several sessions in a row is given up."""

from __future__ import annotations

import asyncio
import time

import pytest

from camproto import CameraDevice, CameraFile, DeviceConnection, DeviceFile, DualCamSlot
from contracts import models as wire
from simulator import ContentSpec, Faults, SimulationConfig, simulate
from simulator.faults import FailurePath
from tests.ingestor.ingestor_helpers import read_published, running, settings

PHOTO = DeviceFile(CameraFile.for_slot(DualCamSlot.PHOTO_REAR), b"\xff" * 3000, bytes(32))


async def one_connection(port: int, device: CameraDevice) -> DeviceConnection:
    """One TCP connection of ``device`` until the server closes it; fails after 10 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = device.connect()
    try:
        async with asyncio.timeout(10):
            while not conn.closed:
                out = conn.data_to_send()
                if out:
                    writer.write(out)
                    await writer.drain()
                    continue
                data = await reader.read(65536)
                conn.receive_data(data, eof=not data)
                if not data:
                    break
    finally:
        writer.close()
    return conn


async def closed_events(kafka: str, count: int) -> list[wire.Closed]:
    published = await read_published(kafka, ends=0, within=10)
    deadline = time.monotonic() + 10
    while len([e for e in published.sessions if isinstance(e, wire.Closed)]) < count:
        assert time.monotonic() < deadline, published.sessions
        published = await read_published(kafka, ends=0, within=10)
    return [e for e in published.sessions if isinstance(e, wire.Closed)]


async def test_a_file_empty_in_three_sessions_is_given_up(kafka: str) -> None:
    imei = 356_000_000_000_017
    device = CameraDevice(imei=imei, files=[PHOTO], stuck={PHOTO.file.identifier})
    async with running(settings(kafka)) as ingestor:
        assert ingestor.port is not None
        for _ in range(4):
            conn = await one_connection(ingestor.port, device)
            assert conn.closed  # CLOSE heard, not a hang-up
    closed = await closed_events(kafka, 4)
    reasons = [e.reason for e in closed if e.imei == f"{imei:015d}"]
    assert reasons[:3] == ["%photor: came back empty (START 0) in this session"] * 3
    assert reasons[3] == "%photor: given up: it came back empty in too many sessions in a row"
    assert all(e.duration_seconds < 5 for e in closed)
    # Something else offered: asked for again.
    device.files.append(
        DeviceFile(CameraFile.for_slot(DualCamSlot.VIDEO_REAR), b"v" * 100, bytes(32))
    )
    async with running(settings(kafka)) as ingestor:
        assert ingestor.port is not None
        await one_connection(ingestor.port, device)
    assert [f.file.identifier for f in device.uploaded] == [b"%videor"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (FailurePath.NO_FILE, "device has no file ready (bare NUL path)"),
        (FailurePath.STATUS_ERROR, "device STATUS 0x03 about "),
        (FailurePath.BAD_PROTOCOL, "INIT protocol id 9 unsupported (supported: 1, 2, 3, 4, 5, 6)"),
        (FailurePath.GONE_FILE, ": not available (device STATUS 0x11)"),
    ],
)
async def test_failure_paths_close_with_a_reason(
    kafka: str, path: FailurePath, reason: str
) -> None:
    async with running(settings(kafka)) as ingestor:
        assert ingestor.port is not None
        config = SimulationConfig(
            port=ingestor.port,
            devices=2,
            dualcam_ratio=0.0,  # DSM: the path flow
            content=ContentSpec(photos=1, videos=0, photo_size=20_000),
            faults=Faults(fail=(path,), fail_devices=1),
            seed=31,
            timeout=30,
            reconnect_backoff=0.01,
        )
        report = await simulate(config)
        assert report.ok, report.summary()
    published = await read_published(kafka, ends=2)
    closed = [e for e in published.sessions if isinstance(e, wire.Closed)]
    hits = [e for e in closed if reason in e.reason]
    assert len(hits) == 1, [e.reason for e in closed]
    assert hits[0].duration_seconds < 5  # CLOSE at once, no idle timeout
    assert len(published.by_imei_and_file()) == 2  # both devices' files landed

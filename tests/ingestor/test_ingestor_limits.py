"""Limits a hostile device cannot pass: a START over the camera kind's size limit is refused
with CLOSE, and a trickle is closed once it falls below the minimum rate, while a normal
fleet uploads alongside. In-process ingestor, real broker (Tansu), real TCP."""

from __future__ import annotations

import asyncio
import struct

import pytest
from prometheus_client import REGISTRY

from camproto import CameraDevice, CameraFile, CommandId, crc16
from camproto._wire import DeviceFrameReader, encode
from contracts import models as wire
from simulator import ContentSpec, Fleet, SimulationConfig, simulate
from tests.ingestor.ingestor_helpers import (
    Hopper,
    dsm_video,
    dualcam_video,
    read_published,
    running,
    settings,
)

IMEI = 352094082736916


async def announce(port: int, item_file: CameraFile, value: int, metadata: bytes) -> list[str]:
    """A device that answers FILE REQUEST with START ``value`` (packets or bytes, as the
    camera counts them); returns what the server sent, by command, until it closed or
    asked for the data (RESUME)."""
    device = CameraDevice(imei=IMEI, files=[])
    settings_bits = device.settings() | (
        1 << 25 if item_file.by_path else 1 << item_file.slot.value  # type: ignore[union-attr]
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(struct.pack(">HHQI", 0, 5, IMEI, settings_bits))
    frames = DeviceFrameReader()
    heard: list[str] = []
    try:
        async with asyncio.timeout(10):
            while True:
                data = await reader.read(4096)
                frames.feed(data)
                while frame := frames.next_frame(eof=not data):
                    heard.append(frame.command.name)
                    if frame.command is CommandId.PATH_REQUEST:
                        writer.write(encode(CommandId.PATH, item_file.identifier))
                    elif frame.command is CommandId.METADATA_REQUEST:
                        writer.write(encode(CommandId.METADATA, metadata))
                    elif frame.command is CommandId.FILE_REQUEST:
                        writer.write(encode(CommandId.START, struct.pack(">IH", value, 0x1234)))
                # INIT from the server is CLOSE SESSION; RESUME: the file was taken
                if not data or (heard and heard[-1] in ("INIT", "RESUME")):
                    return heard
    finally:
        writer.close()


def refused_total(camera: str) -> float:
    value = REGISTRY.get_sample_value(
        "fleetgate_ingestor_transfers_refused_total", {"camera": camera}
    )
    return value or 0.0


@pytest.mark.parametrize("kind", ["dsm", "dualcam"])
async def test_oversize_start_is_refused_with_close(kafka: str, kind: str) -> None:
    item = dsm_video(1000) if kind == "dsm" else dualcam_video(1000)
    before = refused_total(kind)
    async with running(settings(kafka)) as ingestor:  # the default limits (32 MiB)
        assert ingestor.port is not None
        heard = await announce(ingestor.port, item.file, 0xFFFFFFFF, item.metadata)
    # metadata asked, file requested, then CLOSE SESSION (0000 0000) instead of RESUME
    assert "RESUME" not in heard and heard[-1] == "INIT", heard
    assert refused_total(kind) == before + 1
    published = await read_published(kafka, ends=0)
    assert published.starts == {}  # nothing of the file went to Kafka
    (closed,) = [e for e in published.sessions if isinstance(e, wire.Closed)]
    unit = "bytes" if kind == "dsm" else "packets"
    assert f"START announces 4294967295 {unit}, over the 33554432-byte limit" in closed.reason
    assert not closed.clean


async def test_limit_is_configurable_per_camera_kind(kafka: str) -> None:
    photo = dualcam_video(5000)
    async with running(settings(kafka, max_file_bytes_dualcam=4096)) as ingestor:
        assert ingestor.port is not None
        heard = await announce(ingestor.port, photo.file, 5, photo.metadata)  # 5 x 1024 > 4096
        assert heard[-1] == "INIT" and "RESUME" not in heard
        heard = await announce(ingestor.port, photo.file, 4, photo.metadata)
        assert "RESUME" in heard  # 4 packets fit


async def test_trickle_is_closed_while_a_fleet_uploads(kafka: str) -> None:
    config = settings(kafka, transfer_min_bytes_per_second=4096, transfer_rate_grace_seconds=2.0)
    async with running(config) as ingestor:
        assert ingestor.port is not None
        trickle = Hopper(
            CameraDevice(imei=IMEI, files=[dualcam_video(300_000)]),
            [ingestor.port],
            rate=1024,  # 1 KiB/s: the file would take five minutes
            max_connections=1,
        )
        fleet = SimulationConfig(
            port=ingestor.port, devices=6, dualcam_ratio=0.5, seed=11, timeout=60,
            content=ContentSpec(photos=1, videos=1, video_size=400_000),
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        began = loop.time()
        report, _ = await asyncio.gather(simulate(fleet), trickle.run(within=30))
        trickled = loop.time() - began
        assert report.ok, report.summary()
    assert trickle.endings == [f"{ingestor.port}: CLOSE"]
    assert trickle.accepted == []
    # closed at the bound: 2 s of grace, then below 4 KiB/s at once
    assert 2.0 <= trickled < 10.0, trickled
    expected = {
        (f"{plan.imei:015d}", item.file.path): item.data
        for plan in Fleet(fleet).plans
        for item in plan.files(fleet.content)
    }
    published = await read_published(kafka, ends=len(expected))
    assert published.by_imei_and_file() == expected  # the fleet's files, byte for byte
    closed = [
        e for e in published.sessions if isinstance(e, wire.Closed) and e.imei == f"{IMEI:015d}"
    ]
    assert len(closed) == 1 and "too slow" in closed[0].reason, closed
    # what the trickle sent before the cut is durable: progress for a resume
    trickled_bytes = [
        bytes(published.files[tid])
        for tid, start in published.starts.items()
        if start.imei == f"{IMEI:015d}"
    ]
    assert len(trickled_bytes) == 1
    sent = trickled_bytes[0]
    assert 0 < len(sent) < 20_000
    print(
        f"\n[limits] trickle at 1 KiB/s closed after {trickled:.2f} s with {len(sent)} bytes "
        f"durable; fleet of {fleet.devices}: {report.summary()}"
    )
    assert sent == dualcam_video(300_000).data[: len(sent)]
    assert crc16(sent) == crc16(dualcam_video(300_000).data[: len(sent)])


def test_trickle_deadline_rule() -> None:
    camera = settings(
        "x:1",
        transfer_min_bytes_per_second=1000,
        transfer_rate_grace_seconds=60,
        transfer_max_seconds=600,
    ).camera
    assert camera.transfer_deadline(100.0, 0) == 160.0  # the grace period
    assert camera.transfer_deadline(100.0, 120_000) == 220.0  # time earned by sending
    assert camera.transfer_deadline(100.0, 10**9) == 700.0  # never past the maximum
    unbounded = settings("x:1", transfer_min_bytes_per_second=0, transfer_max_seconds=30).camera
    assert unbounded.transfer_deadline(0.0, 0) == 30.0


def test_file_size_limits_from_settings() -> None:
    limits = settings("x:1", max_file_bytes_dsm=0, max_file_bytes_adas=7).camera
    got = limits.file_size_limits()
    assert got.dsm is None and got.adas == 7 and got.dualcam == 32 * 1024 * 1024

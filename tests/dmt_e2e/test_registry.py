"""Cameras appear in the device registry too (``fleetgate.devices.v1``)."""

from __future__ import annotations

from simulator import ContentSpec, Fleet, SimulationConfig, simulate
from tests.dmt_e2e.dmt_helpers import read_landed
from tests.ingestor.ingestor_helpers import running, settings


async def test_cameras_appear_in_the_registry(kafka: str) -> None:
    async with running(settings(kafka)) as ingestor:
        assert ingestor.port is not None
        config = SimulationConfig(
            port=ingestor.port,
            devices=3,
            content=ContentSpec(photos=1, videos=0, photo_size=5_000, video_size=0),
            seed=5,
            timeout=60,
        )
        report = await simulate(config)
        assert report.ok, report.summary()
    imeis = {f"{plan.imei:015d}" for plan in Fleet(config).plans}
    landed = await read_landed(kafka, lambda out: imeis <= set(out.devices))
    for imei in imeis:
        status = landed.devices[imei]
        assert status.protocols == ["camera"]
        assert status.last_connection is not None
        assert status.last_connection.protocol == "camera"
        assert status.last_connection.ingestor == "test-ingestor"

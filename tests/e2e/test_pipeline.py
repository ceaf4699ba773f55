"""Cameras -> ingestor -> Kafka -> assembler -> S3 -> connector -> webhooks, all real.

``fleetgate devstack`` runs as a user starts it (Tansu, s3rver, and the three services as child
processes); the simulator plays the cameras over TCP; a real HTTP server receives webhooks.
"""

from __future__ import annotations

import asyncio
import hashlib
import urllib.request
from pathlib import Path

from minio import Minio

from camproto import crc16
from contracts import models as wire
from devstack.infra import S3RVER_KEY
from simulator import ContentSpec, Faults, Fleet, SimulationConfig, simulate
from tests.e2e.e2e_helpers import devstack, receiver, wait_for


def expected_files(*configs: SimulationConfig) -> dict[tuple[str, str], bytes]:
    return {
        (f"{plan.imei:015d}", item.file.path): item.data
        for config in configs
        for plan in Fleet(config).plans
        for item in plan.files(config.content)
    }


def test_twenty_cameras_end_to_end(tmp_path: Path) -> None:
    with receiver() as hooks:
        config_file = tmp_path / "connector.yaml"
        config_file.write_text(
            "endpoints:\n"
            "  - name: platform\n"
            f"    url: {hooks.url}\n"
            "    allow_private_network: true\n"  # the receiver is on 127.0.0.1
            "    headers:\n"
            "      X-Device: '[IMEI]'\n"
        )
        with devstack(tmp_path, config_file) as stack:
            small = SimulationConfig(  # DualCam photos and videos, DSM snapshots and clips
                port=stack.camera_port,
                devices=16,
                dualcam_ratio=0.5,
                content=ContentSpec(photos=1, videos=1, photo_size=50_000, video_size=1_500_000),
                faults=Faults(bad_crc_at=5, split=True),
                seed=11,
                timeout=120,
            )
            large = SimulationConfig(
                port=stack.camera_port,
                devices=4,
                dualcam_ratio=0.5,
                content=ContentSpec(photos=0, videos=1, video_size=8_000_000),
                seed=12,
                timeout=120,
            )

            async def both() -> None:
                reports = await asyncio.gather(simulate(small), simulate(large))
                for report in reports:
                    assert report.ok, report.summary()

            asyncio.run(both())
            expected = expected_files(small, large)
            assert len(expected) == 36
            wait_for(lambda: len(hooks.bodies()) >= len(expected), 180, "36 webhooks")

            client = Minio(stack.s3_endpoint, S3RVER_KEY, S3RVER_KEY, secure=False)
            bodies = [wire.WebhookBody.model_validate(b) for b in hooks.bodies()]
            seen: dict[tuple[str, str], str] = {}
            for body in bodies:
                data = body.data
                assert isinstance(data, wire.StoredFileData), body
                want = expected[(data.imei, data.file.identifier)]
                seen[(data.imei, data.file.identifier)] = data.key
                stored = client.get_object(data.bucket, data.key).read()
                assert stored == want
                assert data.size == len(want)
                assert data.sha256 == hashlib.sha256(want).hexdigest()
                assert data.crc16 == crc16(want)
                assert data.capture is not None and data.capture.captured_at is not None
                with urllib.request.urlopen(data.download_url, timeout=10) as response:
                    assert response.read() == want
                stat = client.stat_object(data.bucket, data.key)
                assert stat.metadata is not None
                assert stat.metadata["x-amz-meta-sha256"] == data.sha256
                assert stat.metadata["x-amz-meta-imei"] == data.imei
                assert ".." not in data.key and "\0" not in data.key
            assert set(seen) == set(expected)
            objects = list(client.list_objects("fleetgate", recursive=True))
            assert len(objects) == len(expected)
            for headers, raw in hooks.received:
                assert headers["X-Device"] == raw["data"]["imei"]
                assert headers["webhook-id"] == raw["data"]["event_id"]

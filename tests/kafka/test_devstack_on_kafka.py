"""``FLEETGATE_BROKER=kafka make run``: the devstack on a local Apache Kafka of its own, end to
end (cameras over TCP, files in S3, webhooks to a real HTTP server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from minio import Minio

from contracts import models as wire
from devstack.infra import S3RVER_KEY
from devstack.kafka import java_missing_reason
from simulator import ContentSpec, Fleet, SimulationConfig, simulate
from tests.e2e.e2e_helpers import devstack, receiver, wait_for


@pytest.mark.real_kafka
def test_devstack_runs_the_pipeline_on_a_local_apache_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = java_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    monkeypatch.setenv("FLEETGATE_BROKER", "kafka")
    with receiver() as hooks:
        config_file = tmp_path / "connector.yaml"
        config_file.write_text(
            "endpoints:\n  - name: platform\n"
            f"    url: {hooks.url}\n    allow_private_network: true\n"
        )
        with devstack(tmp_path, config_file) as stack:
            banner = "".join(stack.output)
            assert "(local Apache Kafka, KRaft)" in banner
            config = SimulationConfig(
                port=stack.camera_port, devices=3, seed=31, timeout=60,
                content=ContentSpec(photos=1, videos=1, photo_size=40_000, video_size=400_000),
            )  # fmt: skip
            report = asyncio.run(simulate(config))
            assert report.ok, report.summary()
            expected = {
                (f"{plan.imei:015d}", item.file.path): item.data
                for plan in Fleet(config).plans
                for item in plan.files(config.content)
            }

            def stored() -> dict[tuple[str, str], wire.StoredFileData]:
                out = {}
                for raw in hooks.bodies():
                    data = wire.WebhookBody.model_validate(raw).data
                    if isinstance(data, wire.StoredFileData):
                        out[(data.imei, data.file.identifier)] = data
                return out

            wait_for(lambda: len(stored()) >= len(expected), 60, "every file.stored webhook")
            client = Minio(stack.s3_endpoint, S3RVER_KEY, S3RVER_KEY, secure=False)
            for key, data in stored().items():
                assert client.get_object(data.bucket, data.key).read() == expected[key]
        assert (tmp_path / "data" / "kafka" / "node-1" / "server.log").exists()

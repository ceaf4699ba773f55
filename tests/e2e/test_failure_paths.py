"""Every camera failure path of issue 10 against the whole pipeline (``fleetgate devstack``).

Per path, a small fleet in which one device plays it (``simulate --fail PATH``): the failing
session ends at once with CLOSE, its ``closed`` session event says why, and every real file of
every device (the failing one's too) is stored intact in S3.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from minio import Minio

from contracts import models as wire
from devstack.infra import S3RVER_KEY
from simulator import ContentSpec, Faults, Fleet, SimulationConfig, simulate
from simulator.faults import FailurePath
from tests.e2e.e2e_helpers import devstack, receiver, wait_for
from tests.e2e.test_pipeline import expected_files
from tests.ingestor.ingestor_helpers import read_published

#: (path, share of DualCam devices, what the closed event of the failing session says)
CASES = [
    (FailurePath.NO_FILE, 0.0, "device has no file ready (bare NUL path)"),
    (FailurePath.EMPTY_FILE, 1.0, "%videor: came back empty (START 0) in this session"),
    (FailurePath.GONE_FILE, 0.0, "dsm/picture/000000/gone-file.jpg: not available"),
    (FailurePath.METADATA_ERROR, 0.5, None),  # fetched without metadata: a clean session
    (FailurePath.STATUS_ERROR, 1.0, "device STATUS 0x03 about %"),
    (FailurePath.BAD_PROTOCOL, 0.5, "INIT protocol id 9 unsupported"),
]
CONTENT = ContentSpec(photos=1, videos=1, photo_size=30_000, video_size=200_000)


def test_failure_paths_end_to_end(tmp_path: Path) -> None:
    with receiver() as hooks:
        config_file = tmp_path / "connector.yaml"
        config_file.write_text(
            f"endpoints:\n  - name: p\n    url: {hooks.url}\n    allow_private_network: true\n"
        )
        with devstack(tmp_path, config_file) as stack:
            configs = [
                SimulationConfig(
                    port=stack.camera_port,
                    devices=3,
                    dualcam_ratio=ratio,
                    content=CONTENT,
                    faults=Faults(fail=(path,), fail_devices=1),
                    seed=200 + n,
                    timeout=60,
                    reconnect_backoff=0.05,
                )
                for n, (path, ratio, _) in enumerate(CASES)
            ]

            async def fleets() -> None:
                for config, (path, _, _) in zip(configs, CASES, strict=True):
                    report = await simulate(config)
                    assert report.ok, (path, report.summary())
                    # Nothing waited for a deadline (60 s response, 60 s idle).
                    assert report.duration < 30, (path, report.duration)
                    assert report.outcomes[0].failure_paths == [path.value]

            asyncio.run(fleets())
            expected = expected_files(*configs)
            assert len(expected) == 36
            wait_for(lambda: len(hooks.stored()) >= len(expected), 180, "36 stored files")
            client = Minio(stack.s3_endpoint, S3RVER_KEY, S3RVER_KEY, secure=False)
            for data in hooks.stored().values():
                key = (data["imei"], data["file"]["identifier"])
                assert client.get_object(data["bucket"], data["key"]).read() == expected[key]
            assert {(d["imei"], d["file"]["identifier"]) for d in hooks.stored().values()} == set(
                expected
            )
            published = asyncio.run(read_published(stack.kafka_bootstrap, ends=36, within=60))
    closed = [e for e in published.sessions if isinstance(e, wire.Closed)]
    for config, (path, _, reason) in zip(configs, CASES, strict=True):
        imei = Fleet(config).plans[0].imei  # device 0 plays the path
        mine = [e for e in closed if e.imei == f"{imei:015d}" or f"IMEI {imei}" in e.reason]
        if reason is None:
            assert mine and all(e.clean for e in mine), (path, [e.reason for e in mine])
            continue
        hits = [e for e in mine if reason in e.reason]
        assert hits, (path, [e.reason for e in mine])
        assert all(e.duration_seconds < 10 for e in hits), (path, hits)

"""The fault matrix: each of the simulator's fault options against the whole pipeline.

One ``fleetgate devstack`` (on the session's Apache Kafka broker; s3rver, ingestor, assembler,
connector as processes) and a real HTTP receiver; every scenario uploads its own devices' files
(own seed, so own IMEIs),
then counts what arrived: files sent, stored intact, duplicate objects, losses. Duplicates and
losses must be 0. The table is printed (``pytest -s``) and summarised in the README.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from minio import Minio

from contracts import models as wire
from devstack.infra import S3RVER_KEY
from simulator import ContentSpec, Faults, Fleet, SimulationConfig, simulate
from tests.conftest import KafkaBroker, reset_kafka
from tests.e2e.e2e_helpers import Receiver, Stack, devstack, receiver, wait_for

CONTENT = ContentSpec(photos=1, videos=1, photo_size=50_000, video_size=600_000)
DEVICES = 4

SCENARIOS: dict[str, Faults] = {
    "clean": Faults(),
    "bad CRC at packet 3": Faults(bad_crc_at=3),
    "disconnect at packet 40, resume": Faults(disconnect_at=40),
    "disconnect twice": Faults(disconnect_at=25, disconnects=2),
    "CRC chain kept after RESUME": Faults(bad_crc_at=5, restart_crc_after_resume=False),
    "slow link 400 KB/s": Faults(slow=400_000),
    "writes split and merged": Faults(split=True),
    "garbage at packet 10": Faults(garbage_at=10),
    "all of them": Faults(
        bad_crc_at=7, disconnect_at=30, garbage_at=50, split=True, slow=2_000_000
    ),
}


@dataclass
class Outcome:
    sent: int
    accepted: int
    stored_intact: int
    duplicates: int
    losses: int
    reconnects: int
    resumed_above_zero: int  # RESUMEs the server sent at a non-zero offset
    seconds: float


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, kafka_broker: KafkaBroker
) -> Iterator[tuple[Stack, Receiver]]:
    asyncio.run(reset_kafka(kafka_broker.bootstrap))
    tmp = tmp_path_factory.mktemp("matrix")
    with receiver() as hooks:
        config = tmp / "connector.yaml"
        config.write_text(
            f"endpoints:\n  - name: matrix\n    url: {hooks.url}\n    allow_private_network: true\n"
        )
        with devstack(tmp, config, kafka=kafka_broker.bootstrap) as stack:
            yield stack, hooks


def run_scenario(stack: Stack, hooks: Receiver, seed: int, faults: Faults) -> Outcome:
    config = SimulationConfig(
        port=stack.camera_port, devices=DEVICES, content=CONTENT, faults=faults, seed=seed,
        timeout=120, reconnect_backoff=0.05,
    )  # fmt: skip
    expected = {
        (f"{plan.imei:015d}", item.file.path): item.data
        for plan in Fleet(config).plans
        for item in plan.files(config.content)
    }
    started = time.monotonic()
    report = asyncio.run(simulate(config))
    imeis = {imei for imei, _ in expected}

    def announced() -> dict[tuple[str, str], wire.StoredFileData]:
        out = {}
        for raw in hooks.bodies():
            data = wire.WebhookBody.model_validate(raw).data
            if isinstance(data, wire.StoredFileData) and data.imei in imeis:
                out[(data.imei, data.file.identifier)] = data
        return out

    wait_for(lambda: len(announced()) >= len(expected), 120, f"{len(expected)} webhooks")
    seconds = time.monotonic() - started
    client = Minio(stack.s3_endpoint, S3RVER_KEY, S3RVER_KEY, secure=False)
    intact = 0
    for key, data in announced().items():
        if client.get_object(data.bucket, data.key).read() == expected[key]:
            intact += 1
    objects = Counter(
        obj.object_name.split("/", 1)[0]
        for imei in imeis
        for obj in client.list_objects("fleetgate", prefix=f"{imei}/", recursive=True)
    )
    per_imei = Counter(imei for imei, _ in expected)
    duplicates = sum(max(0, objects[i] - per_imei[i]) for i in imeis)
    return Outcome(
        sent=len(expected),
        accepted=report.files_accepted,
        stored_intact=intact,
        duplicates=duplicates,
        losses=len(expected) - intact,
        reconnects=sum(d.reconnects for d in report.outcomes),
        resumed_above_zero=sum(len(d.resumed_from) for d in report.outcomes),
        seconds=seconds,
    )


def test_fault_matrix(pipeline: tuple[Stack, Receiver]) -> None:
    stack, hooks = pipeline
    rows = []
    for seed, (name, faults) in enumerate(SCENARIOS.items(), start=100):
        outcome = run_scenario(stack, hooks, seed, faults)
        rows.append((name, outcome))
    lines = [
        "| scenario | files sent | accepted | stored intact | duplicates | losses "
        "| reconnects | resumes > 0 | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, o in rows:
        lines.append(
            f"| {name} | {o.sent} | {o.accepted} | {o.stored_intact} | {o.duplicates} | "
            f"{o.losses} | {o.reconnects} | {o.resumed_above_zero} | {o.seconds:.1f} |"
        )
    print("\n" + "\n".join(lines))
    for name, o in rows:
        assert o.losses == 0 and o.duplicates == 0, (name, o)
        assert o.accepted == o.sent == o.stored_intact, (name, o)
        if SCENARIOS[name].disconnect_at is not None:  # resumed, not restarted at byte 0
            assert o.resumed_above_zero >= o.reconnects // 2 > 0, (name, o)

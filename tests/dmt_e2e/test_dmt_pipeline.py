"""Digital Matter trackers -> ingestor -> Kafka -> connector -> webhooks, all real processes.

``fleetgate devstack`` runs as a user starts it; ``fleetgate simulate --protocol dmt`` plays
trackers that hang up before a commit reply (they must send those records again); the test
itself plays one tracker with known values; a real HTTP server receives the webhooks;
``fleetgate devices`` lists the registry at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from contracts.records import RecordWebhook
from tests.dmt_e2e.dmt_helpers import Wire, tracker
from tests.e2e.e2e_helpers import devstack, receiver, wait_for

IMEI = "352093081234567"


async def _known_tracker(port: int) -> list[int]:
    device = tracker(IMEI, records=6)
    sequences = [r.sequence for r in device.pending]
    wire = await Wire.open(port, device, records_per_commit=4, records_per_message=3)
    try:
        while not wire.hello_answered:
            await wire.read()
        while device.pending:
            before = len(wire.commits)
            wire.conn.upload()
            await wire.flush()
            while len(wire.commits) == before:
                await wire.read()
    finally:
        await wire.close()
    assert device.committed == 6
    return sequences


def test_trackers_records_reach_a_webhook_receiver(tmp_path: Path) -> None:
    with receiver() as hooks:
        config_file = tmp_path / "connector.yaml"
        config_file.write_text(
            "endpoints:\n"
            "  - name: telemetry\n"
            f"    url: {hooks.url}\n"
            "    allow_private_network: true\n"  # the receiver is on 127.0.0.1
            "    filter: {types: [record]}\n"
        )
        with devstack(tmp_path, config_file) as stack:
            sequences = asyncio.run(_known_tracker(stack.dmt_port))
            env = os.environ | {"FLEETGATE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap}
            simulated = subprocess.run(
                [
                    sys.executable, "-m", "fleetgate", "simulate", "--protocol", "dmt",
                    "--port", str(stack.dmt_port), "--devices", "5", "--records", "60",
                    "--records-per-commit", "16", "--disconnect-before-commit", "1",
                    "--seed", "9", "--timeout", "120", "--json",
                ],
                capture_output=True, text=True, timeout=180, env=env,
            )  # fmt: skip
            assert simulated.returncode == 0, simulated.stderr
            report = json.loads(simulated.stdout)
            assert report["ok"] and len(report["devices"]) == 5
            assert all(d["resent"] > 0 and d["committed"] == 60 for d in report["devices"])
            total = 6 + 5 * 60

            def unique() -> dict[str, RecordWebhook]:
                return {
                    body["data"]["record_id"]: RecordWebhook.model_validate(body)
                    for body in hooks.bodies()
                }

            wait_for(lambda: len(unique()) >= total, 120, f"{total} records as webhooks")
            listed = subprocess.run(
                [sys.executable, "-m", "fleetgate", "devices", "--json"],
                capture_output=True, text=True, timeout=120, env=env,
            )  # fmt: skip
            table = subprocess.run(
                [sys.executable, "-m", "fleetgate", "devices"],
                capture_output=True, text=True, timeout=120, env=env,
            )  # fmt: skip

    delivered = unique()
    assert len(delivered) == total
    # webhook-id is the record id: a resent record is the same webhook
    with hooks.lock:
        for headers, body in hooks.received:
            assert headers["webhook-id"] == body["data"]["record_id"]
    # Every record of every device, once per (IMEI, sequence), under one record id.
    keys: dict[tuple[str, int], set[str]] = {}
    for record_id, hook in delivered.items():
        keys.setdefault((hook.data.device.imei, hook.data.sequence), set()).add(record_id)
    assert all(len(ids) == 1 for ids in keys.values())
    imeis = {d["imei"] for d in report["devices"]} | {IMEI}
    assert {imei for imei, _ in keys} == imeis
    for device in report["devices"]:
        assert sorted(s for imei, s in keys if imei == device["imei"]) == list(range(1, 61))
    # The known tracker's values arrived as it logged them.
    mine = sorted(
        (h.data for h in delivered.values() if h.data.device.imei == IMEI),
        key=lambda r: r.sequence,
    )
    assert [r.sequence for r in mine] == sequences
    for i, record in enumerate(mine):
        assert record.position is not None
        assert abs(record.position.latitude - (-33.8 + i / 1000)) < 1e-6
        values = {m.name: m.value for m in record.analogues}
        assert values["battery_voltage"] == round((4000 + i) * 0.001, 6)
        assert values["temperature"] == 21.5
    # fleetgate devices lists them all.
    assert listed.returncode == 0, listed.stderr
    statuses = {d["imei"]: d for d in json.loads(listed.stdout)}
    assert set(statuses) == imeis
    assert all(s["protocols"] == ["dmt"] for s in statuses.values())
    assert statuses[IMEI]["battery_voltage"] == 4.005
    assert table.returncode == 0 and IMEI in table.stdout
    assert f"{len(imeis)} devices" in table.stdout

"""``fleetgate connector`` as a process with a raw TCP forwarding endpoint: it forwards, says
so in its metrics and its one log line per session, stops cleanly on SIGTERM; ``replay``
takes such an endpoint; a wrong tcp:// endpoint is a config error naming the field."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx

from devstack.infra import free_port
from tests.connector_forward.forward_helpers import DmServer, record_bytes, upload, wait_for
from tests.dmt_e2e.dmt_helpers import running as ingestor_running
from tests.dmt_e2e.dmt_helpers import tracker

FLEETGATE = [sys.executable, "-m", "fleetgate"]
IMEI = "352093081234567"


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETGATE_")}
    return env | values


async def test_the_connector_process_forwards_and_stops_cleanly(kafka: str, tmp_path: Path) -> None:
    device = tracker(IMEI, records=4)
    sent = record_bytes(list(device.pending))
    server = await DmServer().start()
    config = tmp_path / "connector.yaml"
    config.write_text(
        "endpoints:\n"
        "  - name: fwd-proc\n"
        f"    url: {server.url}\n"
        "    format: dmt\n"
        "    allow_private_network: true\n"
    )
    metrics_port = free_port()
    env = _env(
        FLEETGATE_CONNECTOR_CONFIG=str(config),
        FLEETGATE_KAFKA_BOOTSTRAP=kafka,
        FLEETGATE_KAFKA_SESSION_TIMEOUT_MS="2000",
        FLEETGATE_KAFKA_HEARTBEAT_INTERVAL_MS="500",
        FLEETGATE_METRICS_HOST="127.0.0.1",
        FLEETGATE_METRICS_PORT=str(metrics_port),
        FLEETGATE_LOG_JSON="true",
    )
    log = tmp_path / "connector.log"
    with log.open("wb") as stderr:
        connector = await asyncio.create_subprocess_exec(
            *FLEETGATE, "connector", stderr=stderr, env=env
        )
    try:
        async with ingestor_running(kafka) as (ingestor, _):
            await upload(ingestor.ports["dmt"], device)
            await wait_for(lambda: server.committed(IMEI) == sent, "the records at the server")
        async with httpx.AsyncClient() as client:
            exposition = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert 'fleetgate_connector_forward_records_total{endpoint="fwd-proc"} 4.0' in exposition
        connector.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await connector.wait() == 0
    finally:
        if connector.returncode is None:
            connector.kill()
            await connector.wait()
        await server.stop()
    logs = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    sessions = [entry for entry in logs if entry.get("event") == "forward_session"]
    assert sessions and all(s["imei"] == IMEI and s["result"] == "success" for s in sessions)
    assert sum(int(s["committed"]) for s in sessions) == 4
    assert any(entry.get("event") == "endpoint_stopped" for entry in logs)

    replay = await asyncio.create_subprocess_exec(
        *FLEETGATE, "connector", "replay", "--endpoint", "fwd-proc", "--dead-letters",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, _ = await replay.communicate()
    assert replay.returncode == 0
    assert "replay of dead letters to fwd-proc: 0 delivered, 0 failed" in out.decode()


async def test_a_tcp_url_without_format_dmt_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text("endpoints:\n  - {name: tg, url: 'tcp://dmt.example.com:5000'}\n")
    process = await asyncio.create_subprocess_exec(
        *FLEETGATE, "connector", stderr=asyncio.subprocess.PIPE,
        env=_env(FLEETGATE_CONNECTOR_CONFIG=str(config)),
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    assert process.returncode == 2
    assert "endpoints[0] (endpoint 'tg'): a tcp:// url forwards" in err.decode()
    assert "set 'format: dmt'" in err.decode()

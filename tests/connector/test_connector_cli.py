"""``fleetgate connector`` and ``fleetgate webhook-sink`` as processes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contracts import WebhookBody
from devstack.infra import free_port
from tests.conftest import S3
from tests.connector.connector_helpers import failed, produce, stored, wait_until

FLEETGATE = [sys.executable, "-m", "fleetgate"]


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETGATE_")}
    return env | values


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_help_lists_the_settings() -> None:
    result = subprocess.run(
        [*FLEETGATE, "connector", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for option in ("--connector-config", "--s3-public-url", "--presign-expiry-seconds"):
        assert option in result.stdout
    assert "FLEETGATE_CONNECTOR_CONFIG" in result.stdout


def test_a_bad_config_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "connector.yaml"
    bad.write_text("endpoints:\n  - name: crm\n    url: https://x/\n    auth: {bearer: '${T}'}\n")
    result = subprocess.run(
        [*FLEETGATE, "connector", "--connector-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert result.returncode == 2
    assert (
        f"config error: {bad}: endpoints[0].auth.bearer: environment variable T is not set"
        in result.stderr
    )

    result = subprocess.run(
        [*FLEETGATE, "connector"], capture_output=True, text=True, timeout=60, env=_env()
    )
    assert result.returncode == 2
    assert "FLEETGATE_CONNECTOR_CONFIG" in result.stderr


def test_webhook_sink_prints_each_request(processes: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    sink = subprocess.Popen(
        [*FLEETGATE, "webhook-sink", "--port", str(port), "--status", "202"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    processes.append(sink)
    deadline = time.monotonic() + 20
    while True:
        try:
            response = httpx.post(
                f"http://127.0.0.1:{port}/in?x=1", json={"a": 1}, headers={"webhook-id": "w1"}
            )
            break
        except httpx.ConnectError:
            assert time.monotonic() < deadline, "webhook-sink did not start"
            time.sleep(0.05)
    assert response.status_code == 202
    assert sink.stdout is not None
    line = json.loads(sink.stdout.readline())
    assert line["method"] == "POST" and line["path"] == "/in?x=1"
    assert line["headers"]["webhook-id"] == "w1"
    assert line["body"] == {"a": 1}
    sink.send_signal(signal.SIGTERM)
    assert sink.wait(10) == 0


def test_end_to_end_with_the_sink_and_a_clean_sigterm(
    kafka: str, s3: S3, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    sink_port, metrics_port = free_port(), free_port()
    received = tmp_path / "received.jsonl"
    processes.append(
        subprocess.Popen(
            [*FLEETGATE, "webhook-sink", "--port", str(sink_port), "--out", str(received)],
            stderr=subprocess.DEVNULL,
        )
    )
    config = tmp_path / "connector.yaml"
    config.write_text(
        "endpoints:\n"
        "  - name: local-sink\n"
        f"    url: http://127.0.0.1:{sink_port}/webhooks\n"
        "    auth: {bearer: '${SINK_TOKEN}'}\n"
        "    headers: {X-Imei: '[IMEI]'}\n"
    )
    photos = [stored(1), stored(3, imei="862205051234567")]
    for photo in photos:
        s3.client().put_object(photo.bucket, photo.key, io.BytesIO(b"photo"), 5)
    asyncio.run(produce(kafka, [photos[0], failed(2), photos[1]]))
    stderr = (tmp_path / "connector.log").open("wb")
    connector = subprocess.Popen(
        [*FLEETGATE, "connector"],
        stderr=stderr,
        env=_env(
            SINK_TOKEN="s3cret",
            FLEETGATE_CONNECTOR_CONFIG=str(config),
            FLEETGATE_KAFKA_BOOTSTRAP=kafka,
            FLEETGATE_KAFKA_SESSION_TIMEOUT_MS="3000",
            FLEETGATE_KAFKA_HEARTBEAT_INTERVAL_MS="1000",
            FLEETGATE_S3_ENDPOINT=s3.endpoint,
            FLEETGATE_S3_ACCESS_KEY=s3.access_key,
            FLEETGATE_S3_SECRET_KEY=s3.secret_key,
            FLEETGATE_METRICS_HOST="127.0.0.1",
            FLEETGATE_METRICS_PORT=str(metrics_port),
            FLEETGATE_LOG_JSON="true",
        ),
    )
    processes.append(connector)
    stderr.close()

    def lines() -> list[dict[str, object]]:
        if not received.exists():
            return []
        return [json.loads(line) for line in received.read_text().splitlines()]

    wait_until(lambda: len(lines()) == 3, "three webhooks at the sink")
    for line in lines():
        headers = line["headers"]
        assert isinstance(headers, dict)
        assert headers["authorization"] == "Bearer s3cret"
        body = WebhookBody.model_validate(line["body"])
        assert headers["webhook-id"] == body.data.event_id
        assert headers["x-imei"] == body.data.imei
        assert line["path"] == "/webhooks"

    exposition = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    assert (
        'fleetgate_connector_deliveries_total{endpoint="local-sink",result="success"} 3.0'
        in exposition
    )

    connector.send_signal(signal.SIGTERM)
    assert connector.wait(10) == 0
    logs = [json.loads(line) for line in (tmp_path / "connector.log").read_text().splitlines()]
    delivered = [log for log in logs if log.get("event") == "delivered"]
    assert sorted(str(log["event_id"]) for log in delivered) == ["failed-2", "stored-1", "stored-3"]
    assert all(log["endpoint"] == "local-sink" and log["status"] == 200 for log in delivered)
    assert any(log.get("event") == "endpoint_stopped" for log in logs)

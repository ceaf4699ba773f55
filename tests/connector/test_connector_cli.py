"""``fleetgate connector`` and ``fleetgate webhook-sink`` as processes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from contracts import Topic, WebhookBody
from devstack.infra import free_port
from tests.conftest import S3
from tests.connector.connector_helpers import (
    committed_offsets,
    failed,
    produce,
    receivers,
    stored,
    wait_until,
)

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
    assert "replay" in result.stdout
    result = subprocess.run(
        [*FLEETGATE, "connector", "replay", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for option in ("--endpoint", "--dead-letters", "--since", "--until", "--attempts"):
        assert option in result.stdout
    assert "--kafka-bootstrap" in result.stdout  # the settings work after `replay` too


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
        "    allow_private_network: true\n"
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


def test_sigkill_mid_delivery_loses_nothing_and_replay_sends_it_again(
    kafka: str, s3: S3, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """The connector is killed (SIGKILL) while the endpoint holds a request and while two
    events wait in a retry topic; after a restart every event arrives, none is lost."""
    release = threading.Event()
    failing = threading.Event()
    failing.set()

    def respond(headers: dict[str, str], body: bytes) -> int:
        event_id = headers["webhook-id"]
        if event_id == "failed-0" and not release.is_set():
            release.wait(30)  # held: the connector is killed while waiting for this answer
            return 200  # (too late: it is dead by now, so it cannot commit it)
        if event_id in ("failed-1", "failed-2") and failing.is_set():
            return 500
        return 200

    with receivers() as receiver:
        hook = receiver(respond)
        config = tmp_path / "connector.yaml"
        config.write_text(
            "retry: {schedule: [2s, 4s], max_age: 2m}\n"
            "endpoints:\n"
            "  - name: killed\n"
            f"    url: {hook.url}\n"
            "    allow_private_network: true\n"
            "    timeout_seconds: 60\n"
            "    circuit_breaker: {failures: 0}\n"
        )
        events = [failed(n, imei=f"35630704244{n:04d}") for n in range(8)]
        ids = {e.event_id for e in events}
        since = datetime.now(UTC) - timedelta(seconds=1)
        where = asyncio.run(produce(kafka, events))
        env = _env(
            FLEETGATE_CONNECTOR_CONFIG=str(config),
            FLEETGATE_KAFKA_BOOTSTRAP=kafka,
            FLEETGATE_KAFKA_SESSION_TIMEOUT_MS="2000",
            FLEETGATE_KAFKA_HEARTBEAT_INTERVAL_MS="500",
            FLEETGATE_S3_ENDPOINT=s3.endpoint,
            FLEETGATE_S3_ACCESS_KEY=s3.access_key,
            FLEETGATE_S3_SECRET_KEY=s3.secret_key,
            FLEETGATE_LOG_JSON="true",
        )
        log = (tmp_path / "connector.log").open("ab")
        first = subprocess.Popen([*FLEETGATE, "connector"], stderr=log, stdout=log, env=env)
        processes.append(first)
        wait_until(
            lambda: (
                hook.in_flight == 1
                and len(hook.attempts("failed-1")) >= 1
                and len(hook.attempts("failed-2")) >= 1
                and len(hook.delivered()) >= 3
            ),
            "failed-0 held, failed-1 and -2 failed once, others delivered",
        )

        def committed_ids() -> set[str]:
            done = asyncio.run(committed_offsets(kafka, "fleetgate-connector-killed", Topic.FILES))
            return {i for i, (p, o) in where.items() if o < done.get(p, 0)}

        # its periodic commit has run once (else this test would show nothing)
        wait_until(lambda: bool(committed_ids()), "the connector committed what it delivered")
        before_kill = set(hook.delivered_ids())
        first.kill()  # SIGKILL: no shutdown, no commit
        assert first.wait(10) == -signal.SIGKILL
        assert hook.in_flight == 1  # killed mid-delivery
        # What the killed connector committed must not be sent again. A record delivered but
        # not committed yet (behind the held failed-0 on its partition, or within the commit
        # interval) is sent again: at least once, at most twice.
        committed = committed_ids()
        assert committed, "the killed connector committed nothing: this test would show nothing"
        # (failed-1 and -2 may be committed too: parked in the retry topic, which delivers them)
        assert committed <= before_kill | {"failed-1", "failed-2"}
        release.set()
        failing.clear()
        wait_until(lambda: len(hook.attempts("failed-0")) == 1, "the held answer, to nobody")

        second = subprocess.Popen([*FLEETGATE, "connector"], stderr=log, stdout=log, env=env)
        processes.append(second)
        wait_until(lambda: set(hook.delivered_ids()) == ids, "every event after the restart")
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
        log.close()

        delivered = hook.delivered_ids()
        assert set(delivered) == ids  # at least once each: none lost
        # failed-0 was answered to a dead connector, so it is sent again after the restart;
        # what was delivered before the kill was committed: not sent again.
        assert delivered.count("failed-0") == 2
        assert all(delivered.count(event_id) == 1 for event_id in committed)
        assert all(delivered.count(event_id) <= 2 for event_id in before_kill)
        assert {"failed-1", "failed-2"}.isdisjoint(before_kill)  # they came from retry topics
        bodies = {r.event_id: r.body for r in hook.delivered()}
        assert all(WebhookBody.model_validate_json(b).data.event_id == i for i, b in bodies.items())

        # `fleetgate connector replay --since` sends every one of them again, same webhook-id.
        before = len(hook.snapshot())
        result = subprocess.run(
            [
                *FLEETGATE,
                "connector",
                "replay",
                "--endpoint",
                "killed",
                "--since",
                since.isoformat(),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert "replay of events to killed: 8 delivered, 0 failed" in result.stdout
        assert sorted(r.event_id for r in hook.snapshot()[before:]) == sorted(ids)
        # No dead letters: --dead-letters has nothing to do, and says so.
        result = subprocess.run(
            [*FLEETGATE, "connector", "replay", "--endpoint", "killed", "--dead-letters"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert "0 delivered, 0 failed, 0 already delivered" in result.stdout


def test_replay_exits_non_zero_when_a_delivery_fails(kafka: str, s3: S3, tmp_path: Path) -> None:
    with receivers() as receiver:
        hook = receiver(lambda headers, body: 400)
        config = tmp_path / "connector.yaml"
        config.write_text(
            "endpoints:\n"
            f"  - {{name: cli-replay, url: '{hook.url}', allow_private_network: true}}\n"
        )
        asyncio.run(produce(kafka, [failed(1)]))
        env = _env(FLEETGATE_CONNECTOR_CONFIG=str(config), FLEETGATE_KAFKA_BOOTSTRAP=kafka)
        result = subprocess.run(
            [
                *FLEETGATE,
                "connector",
                "replay",
                "--endpoint",
                "cli-replay",
                "--since",
                "2000-01-01",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 1
        assert "1 failed" in result.stdout and "failed-1: HTTP 400" in result.stdout
        assert len(hook.snapshot()) == 1  # a 400 is not retried

        result = subprocess.run(
            [*FLEETGATE, "connector", "replay", "--endpoint", "nope", "--dead-letters"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 2
        assert "no endpoint 'nope' in the config (there are: cli-replay)" in result.stderr

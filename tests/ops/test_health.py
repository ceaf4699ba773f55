"""/healthz, /readyz and /metrics from one small server; readiness gates the ingestor's accept."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from devstack.infra import create_topics, free_port, start_tansu, wait_kafka
from runtime.metrics import Readiness, start_metrics_server, tcp_check
from tests.hostile.hostile_helpers import metric
from tests.ingestor.ingestor_helpers import running, settings
from tests.ops.ops_helpers import Services, wait_until


def test_readiness_starts_not_ready_and_follows_its_checks() -> None:
    readiness = Readiness("test")
    state: dict[str, str | None] = {"reason": "Kafka unreachable"}
    readiness.add("kafka", lambda: state["reason"])
    assert readiness.reasons() == {"starting": "starting", "checks": "not evaluated yet"}
    readiness.started()
    assert readiness.reasons() == {"checks": "not evaluated yet"}
    assert readiness.evaluate() == {"kafka": "Kafka unreachable"}
    assert not readiness.ready
    assert readiness.why_not() == "kafka: Kafka unreachable"
    state["reason"] = None
    assert readiness.evaluate() == {}
    assert readiness.ready and readiness.why_not() is None
    readiness.hold("stopping", "draining on SIGTERM")
    assert readiness.reasons() == {"stopping": "draining on SIGTERM"}
    readiness.clear("stopping")
    assert readiness.ready


def test_a_check_that_raises_is_a_failing_check() -> None:
    readiness = Readiness("test")
    readiness.started()

    def broken() -> str | None:
        raise RuntimeError("bug")

    readiness.add("broken", broken)
    assert readiness.evaluate() == {"broken": "check raised RuntimeError('bug')"}


def test_liveness_fails_when_the_heartbeat_stalls() -> None:
    readiness = Readiness("test", stall_seconds=10)
    assert readiness.alive(now=1e9)  # never watched: nothing to judge by
    readiness.beat(now=100.0)
    assert readiness.alive(now=110.0)
    assert not readiness.alive(now=110.5)


def test_tcp_check_passes_when_any_address_accepts() -> None:
    closed = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        both = tcp_check("Kafka", [f"127.0.0.1:{closed}", f" 127.0.0.1:{port}"], timeout=1)
        assert both() is None
    reason = tcp_check("Kafka", [f"127.0.0.1:{closed}"], timeout=1)()
    assert reason is not None
    assert reason.startswith("Kafka unreachable") and f"127.0.0.1:{closed}" in reason
    assert tcp_check("Kafka", ["no-port"], timeout=1)() == (
        "Kafka unreachable (no-port ValueError: invalid literal for int() with base 10: 'no-port')"
    )


def test_one_server_serves_metrics_liveness_and_readiness() -> None:
    readiness = Readiness("test")
    state: dict[str, str | None] = {"reason": "S3 unreachable"}
    readiness.add("s3", lambda: state["reason"])
    readiness.started()
    port = start_metrics_server("127.0.0.1", free_port(), readiness)
    assert port is not None
    url = f"http://127.0.0.1:{port}"

    response = httpx.get(url + "/readyz")
    assert response.status_code == 503
    assert response.json() == {"reasons": {"checks": "not evaluated yet"}, "status": "not ready"}
    readiness.evaluate()
    assert httpx.get(url + "/readyz").json()["reasons"] == {"s3": "S3 unreachable"}
    state["reason"] = None
    readiness.evaluate()
    response = httpx.get(url + "/readyz")
    assert (response.status_code, response.json()) == (200, {"reasons": {}, "status": "ready"})

    assert httpx.get(url + "/healthz").status_code == 200
    readiness.beat(now=time.monotonic() - 3600)
    response = httpx.get(url + "/healthz")
    assert (response.status_code, response.json()) == (503, {"status": "event loop stalled"})

    metrics = httpx.get(url + "/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE python_info gauge" in metrics.text
    assert start_metrics_server("127.0.0.1", 0, readiness) is None


async def test_watch_evaluates_in_the_background() -> None:
    readiness = Readiness("test", interval=0.02)
    state: dict[str, str | None] = {"reason": None}
    readiness.add("kafka", lambda: state["reason"])
    readiness.started()
    watching = asyncio.create_task(readiness.watch())
    try:
        await _until(lambda: readiness.ready)
        state["reason"] = "Kafka unreachable"
        await _until(lambda: not readiness.ready)
        assert readiness.why_not() == "kafka: Kafka unreachable"
        assert readiness.alive()
    finally:
        watching.cancel()


async def _until(condition: object, within: float = 10.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_the_ingestor_refuses_devices_while_not_ready(kafka: str) -> None:
    async with running(settings(kafka)) as ingestor:
        assert ingestor.port is not None
        before = metric("fleetgate_ingestor_connections_refused_total", reason="not_ready")
        ingestor.not_ready = lambda: "kafka: Kafka unreachable (test)"
        reader, writer = await asyncio.open_connection("127.0.0.1", ingestor.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once, nothing sent
        writer.close()
        assert metric(
            "fleetgate_ingestor_connections_refused_total", reason="not_ready", protocol="camera"
        ) == (before + 1)

        ingestor.not_ready = lambda: None
        reader, writer = await asyncio.open_connection("127.0.0.1", ingestor.port)
        with pytest.raises(TimeoutError):  # served: the session waits for the device's INIT
            await asyncio.wait_for(reader.read(1), 0.3)
        writer.close()


def test_the_ingestor_process_goes_unready_and_refuses_devices_when_kafka_goes(
    tmp_path: Path, services: Services
) -> None:
    broker = start_tansu(log=tmp_path / "tansu.log")
    try:
        bootstrap = f"127.0.0.1:{broker.port}"
        asyncio.run(wait_kafka(bootstrap))
        asyncio.run(create_topics(bootstrap))
        camera_port = free_port()
        ingestor = services.start(
            "ingestor",
            FLEETGATE_KAFKA_BOOTSTRAP=bootstrap,
            FLEETGATE_CAMERA_HOST="127.0.0.1",
            FLEETGATE_CAMERA_PORT=str(camera_port),
        )
        ingestor.wait_ready()
        assert ingestor.status("/healthz") == 200
        assert _served(camera_port)
    finally:
        broker.stop()

    wait_until(lambda: ingestor.status("/readyz") == 503, "/readyz 503 without Kafka")
    response = ingestor.get("/readyz")
    assert response is not None
    assert "Kafka unreachable" in response.json()["reasons"]["kafka"]
    assert ingestor.status("/healthz") == 200  # alive: no restart for a Kafka outage
    assert not _served(camera_port)
    logs = [json.loads(line) for line in ingestor.log.read_text().splitlines()]
    assert any(log["event"] == "not_ready" and "kafka" in log["reasons"] for log in logs), (
        "the ingestor logs why it is not ready"
    )
    wait_until(
        lambda: any(
            json.loads(line).get("reason") == "not_ready"
            for line in ingestor.log.read_text().splitlines()
        ),
        "a connections_refused line with reason not_ready",
    )


def _served(port: int) -> bool:
    """True if the ingestor keeps a new connection open (serving), False if it closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(0.3)
        try:
            return sock.recv(1) != b""
        except TimeoutError:
            return True
        except ConnectionResetError:
            return False

"""/healthz, /readyz and /metrics from one small server; readiness gates the ingestor's accept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.infra import TANSU_CLIENT_ENV, create_topics, free_port, start_tansu, wait_kafka
from runtime.metrics import Readiness, kafka_check, start_metrics_server
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


@contextlib.contextmanager
def _not_kafka(answer: bytes | None) -> Iterator[int]:
    """A TCP port that accepts connections but is no Kafka: it says nothing (``None``) or
    answers every connection with ``answer`` and hangs up."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.1)
        stop = threading.Event()
        held: list[socket.socket] = []

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                if answer is None:
                    held.append(conn)  # open and silent
                else:
                    with conn:
                        conn.recv(4096)
                        conn.sendall(answer)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            stop.set()
            thread.join()
            for conn in held:
                conn.close()


def test_kafka_check_passes_on_a_broker_through_any_bootstrap_address(kafka: str) -> None:
    closed = free_port()
    check = kafka_check({"bootstrap_servers": f"127.0.0.1:{closed}, {kafka}"}, timeout=2)
    assert check() is None


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (None, "no Kafka answer within 1 s"),  # accepts, says nothing
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "127.0.0.1:"),
        (b"", "KafkaConnectionError"),  # accepts, hangs up
    ],
    ids=["silent", "http", "hangs-up"],
)
def test_a_port_that_is_not_kafka_makes_readyz_503(answer: bytes | None, why: str) -> None:
    readiness = Readiness("test")
    readiness.started()
    with _not_kafka(answer) as port:
        readiness.add("kafka", kafka_check({"bootstrap_servers": f"127.0.0.1:{port}"}, timeout=1))
        started = time.monotonic()
        readiness.evaluate()
        assert time.monotonic() - started < 5  # bounded by the timeout, whatever the peer does
    served = start_metrics_server("127.0.0.1", free_port(), readiness)
    assert served is not None
    response = httpx.get(f"http://127.0.0.1:{served}/readyz")
    assert response.status_code == 503
    reason = response.json()["reasons"]["kafka"]
    assert reason.startswith(f"Kafka unreachable (127.0.0.1:{port}") and why in reason


def test_kafka_check_names_each_address_that_failed() -> None:
    closed = free_port()
    reason = kafka_check({"bootstrap_servers": f"127.0.0.1:{closed},no-port"}, timeout=1)()
    assert reason is not None and reason.startswith("Kafka unreachable (")
    assert f"127.0.0.1:{closed} " in reason
    assert "no-port ValueError: invalid literal for int() with base 10: 'no-port'" in reason
    assert kafka_check({"bootstrap_servers": ""})() == "Kafka unreachable (no address)"


async def test_kafka_check_does_not_block_the_event_loop() -> None:
    """Readiness runs the check in a worker thread: the loop keeps ticking meanwhile."""
    readiness = Readiness("test", interval=60)
    with _not_kafka(None) as port:
        readiness.add("kafka", kafka_check({"bootstrap_servers": f"127.0.0.1:{port}"}, timeout=1))
        watching = asyncio.create_task(readiness.watch())
        ticks = 0
        try:
            while not readiness.reasons().get("kafka"):
                await asyncio.sleep(0.01)
                ticks += 1
                assert ticks < 1000, "the check never finished"
        finally:
            watching.cancel()
    assert ticks >= 50  # about 1 s of the probe's timeout, in 10 ms ticks


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
            FLEETGATE_DMT_HOST="127.0.0.1",
            FLEETGATE_DMT_PORT="0",
            **TANSU_CLIENT_ENV,  # Tansu has no idempotent producers
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

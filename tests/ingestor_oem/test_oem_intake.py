"""The OEM JSON intake over real HTTP (httpx to the aiohttp listener) on a real Apache Kafka:
both formats land as records with their values and source, the raw body and the registry;
200 only after Kafka acknowledged; bad input gets 400/401/413 and publishes nothing; Kafka
unreachable gets 503."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from structlog.testing import capture_logs

from contracts.records import RawHeader, RecordSource
from devstack.infra import TANSU_CLIENT_ENV, create_topics, free_port, start_tansu, wait_kafka
from ingestor.oem import PATH, HttpSettings
from ingestor.server import listener_settings, serve
from ingestor.settings import IngestorSettings
from runtime.metrics import Readiness
from tests.dmt_e2e.dmt_helpers import FailingSink, GatedSink
from tests.helpers import eventually
from tests.hostile.hostile_helpers import metric
from tests.ingestor_oem.oem_helpers import (
    EDGE,
    TRADITIONAL,
    messages_on,
    read_landed,
    running,
)

USER, PASSWORD, TOKEN = "oem", "s3cret-pass", "t0ken-abc"
BASIC: dict[str, Any] = {"auth": "basic", "username": USER, "password": PASSWORD}


def basic(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_a_traditional_body_lands_with_its_values_raw_and_registry(kafka: str) -> None:
    ok_before = metric("fleetgate_ingestor_oem_requests_total", format="traditional", status="200")
    records_before = metric("fleetgate_ingestor_records_total", protocol="dmt_oem")
    async with running(kafka, **BASIC) as served, httpx.AsyncClient() as client:
        with capture_logs() as logs:
            response = await client.post(served.url, content=TRADITIONAL, headers=basic())
        assert response.status_code == 200, response.text
        assert response.json() == {"records": 5}
        # answered: Kafka already holds all of it (5 records, the raw body, the device)
        assert await messages_on(kafka) == 7
    landed = await read_landed(
        kafka, lambda got: bool(len(got.records) >= 5 and got.raw and got.devices)
    )
    assert [r.sequence for r in landed.records] == [125, 128, 130, 131, 133]  # one key: in order
    first = landed.records[0]
    assert first.source is RecordSource.OEM_HTTP and first.protocol == "dmt"
    assert first.device.imei == "356692063643328" and first.device.serial == 131693
    assert first.device.firmware == "33.4.1.27" and first.ingestor == "test-ingestor"
    assert first.log_reason.code == 11 and first.log_reason.name == "heartbeat"
    assert first.position is not None and first.position.valid
    assert (first.position.latitude, first.position.longitude) == (43.7370138, -79.3462607)
    assert first.position.heading_deg == 66 and first.position.accuracy_m == 37
    assert first.inputs == 2 and first.ignition is False and first.status == 2
    values = {m.name: (m.value, m.unit) for m in first.analogues}
    assert values["battery_voltage"] == (14.641, "V") and values["temperature"] == (24.84, "°C")
    assert values["signal_strength"] == (26, "CSQ")
    assert [r.analogues[0].value for r in landed.records] == [
        14.641, 14.607, 14.599, 14.403, 14.319
    ]  # fmt: skip
    # the body exactly as posted, keyed by IMEI, with its request id (= the records' session)
    ((key, raw, headers),) = landed.raw
    assert key == b"356692063643328" and raw == TRADITIONAL
    assert headers[RawHeader.FORMAT] == b"traditional" and headers[RawHeader.RECORDS] == b"5"
    assert headers[RawHeader.SESSION].decode() == first.session_id
    assert {r.session_id for r in landed.records} == {first.session_id}
    # the registry: the last record's battery, the OEM Server as the last connection
    (status,) = landed.devices
    assert status.imei == "356692063643328" and status.battery_voltage == 14.319
    assert status.temperature_c == 28.98 and status.protocols == ["dmt"]
    assert status.last_connection is not None and status.last_connection.peer == "127.0.0.1"
    # metrics by format and status, records by protocol; one log line for the request
    assert (
        metric("fleetgate_ingestor_oem_requests_total", format="traditional", status="200")
        == ok_before + 1
    )
    assert metric("fleetgate_ingestor_records_total", protocol="dmt_oem") == records_before + 5
    (line,) = [log for log in logs if log["event"] == "oem_request"]
    assert line["status"] == 200 and line["records"] == 5 and line["format"] == "traditional"
    assert line["request"] == first.session_id and line["bytes"] == len(TRADITIONAL)


async def test_an_edge_body_with_a_bearer_token(kafka: str) -> None:
    async with running(kafka, auth="bearer", token=TOKEN) as served, httpx.AsyncClient() as client:
        bad = await client.post(served.url, content=EDGE, headers={"Authorization": "Bearer no"})
        assert bad.status_code == 401 and bad.headers["WWW-Authenticate"].startswith("Bearer")
        response = await client.post(
            served.url, content=EDGE, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 200 and response.json() == {"records": 1}
    landed = await read_landed(kafka, lambda got: bool(got.records and got.raw))
    (record,) = landed.records
    assert record.source is RecordSource.OEM_HTTP_EDGE and record.sequence == 1549
    assert record.device.imei == "351358810439486" and record.device.serial == 416581
    assert {m.name: m.value for m in record.analogues} == {"battery_voltage": 5.304}
    assert {m.name: m.value for m in record.counters}["counter_142"] == 1629023
    assert landed.raw[0][1] == EDGE and landed.raw[0][2][RawHeader.FORMAT] == b"edge"


async def test_a_named_header_with_a_secret(kafka: str) -> None:
    auth: dict[str, Any] = {"auth": "header", "header_name": "X-Api-Key", "header_value": "k3y"}
    async with running(kafka, **auth) as served, httpx.AsyncClient() as client:
        for headers in ({}, {"X-Api-Key": "wrong"}, {"X-Other": "k3y"}):
            response = await client.post(served.url, content=EDGE, headers=headers)
            assert response.status_code == 401, headers
        response = await client.post(served.url, content=EDGE, headers={"X-Api-Key": "k3y"})
        assert response.status_code == 200
    assert await messages_on(kafka) == 3  # the one body: its record, its raw body, the device


async def test_200_only_after_kafka_acknowledged(kafka: str) -> None:
    holder: dict[str, GatedSink] = {}

    def gated(inner: Any) -> GatedSink:
        holder["sink"] = GatedSink(inner)
        return holder["sink"]

    async with running(kafka, gated) as served, httpx.AsyncClient() as client:
        posting = asyncio.create_task(client.post(served.url, content=TRADITIONAL))
        # the records reach the broker but their acknowledgements are held: no answer
        await eventually(lambda: holder["sink"].held >= 7, 10, "7 records held")
        done, _ = await asyncio.wait({posting}, timeout=0.3)
        assert not done
        holder["sink"].gate.set()
        response = await asyncio.wait_for(posting, 10)
        assert response.status_code == 200


def _bad_type() -> bytes:
    body = json.loads(TRADITIONAL)
    body["Records"][3]["SeqNo"] = "131"
    return json.dumps(body).encode()


BAD: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("malformed JSON", {"content": TRADITIONAL[:-5]}, 400, "$"),
    ("not UTF-8", {"content": b'{"IMEI": "\xff\xfe"}'}, 400, "$"),
    ("a wrong type", {"content": _bad_type()}, 400, "Records[3].SeqNo"),
    ("no IMEI", {"content": b'{"Records": []}'}, 400, "IMEI"),
    ("edge, no date", {"content": b'{"device": {"imei": "1"}, "sqn": 1, "reason": 1}'}, 400,
     "date"),
    ("a huge body", {"content": b" " * 70_000 + TRADITIONAL}, 413, None),
    ("a huge chunked body", {"chunks": [b" " * 40_000, b" " * 40_000, TRADITIONAL]}, 413,
     None),
]  # fmt: skip


async def _stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_bad_input_gets_its_status_and_publishes_nothing(kafka: str) -> None:
    async with (
        running(kafka, max_body_bytes=64 * 1024, **BASIC) as served,
        httpx.AsyncClient() as client,
    ):
        for what, request, status, field in BAD:
            if "chunks" in request:  # no length announced: aiohttp counts as it reads
                request = {"content": _stream(request["chunks"])}
            response = await client.post(served.url, headers=basic(), **request)
            assert response.status_code == status, (what, response.text)
            if field is not None:
                answer = response.json()
                assert answer["field"] == field and answer["problem"], what
                assert answer["error"].startswith(f"{field}: ")
        for headers in (
            {},
            basic(password="wrong"),
            basic(user="other"),
            {"Authorization": "Basic !!notbase64"},
            {"Authorization": f"Bearer {PASSWORD}"},
        ):
            response = await client.post(served.url, content=TRADITIONAL, headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["WWW-Authenticate"].startswith("Basic")
        # only POST on the intake's path
        get = await client.get(served.url, headers=basic())
        assert get.status_code == 405
        other = await client.post(served.url.replace(PATH, "/other"), content=TRADITIONAL)
        assert other.status_code == 404
    assert await messages_on(kafka) == 0


async def test_503_while_not_ready_and_nothing_published(kafka: str) -> None:
    why: list[str | None] = ["kafka: Kafka unreachable (test)"]
    async with (
        running(kafka, not_ready=lambda: why[0]) as served,
        httpx.AsyncClient() as client,
    ):
        response = await client.post(served.url, content=TRADITIONAL)
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert "Kafka unreachable" in response.json()["error"]
        # a body that cannot decode is still a 400: sending it again will not help
        assert (await client.post(served.url, content=b"{")).status_code == 400
        assert await messages_on(kafka) == 0
        why[0] = None
        assert (await client.post(served.url, content=TRADITIONAL)).status_code == 200


async def test_503_when_kafka_fails_the_records(kafka: str) -> None:
    holder: dict[str, FailingSink] = {}

    def failing(inner: Any) -> FailingSink:
        holder["sink"] = FailingSink(inner)
        holder["sink"].failing = True
        return holder["sink"]

    before = metric("fleetgate_ingestor_oem_requests_total", format="traditional", status="503")
    async with running(kafka, failing) as served, httpx.AsyncClient() as client:
        response = await client.post(served.url, content=TRADITIONAL)
        assert response.status_code == 503 and "Kafka" in response.json()["error"]
    after = metric("fleetgate_ingestor_oem_requests_total", format="traditional", status="503")
    assert after == before + 1


async def test_503_when_the_broker_goes_away(tmp_path: Path) -> None:
    """A real broker (Tansu, started here so it can be stopped): 200, then the broker goes,
    then 503 within the publish timeout."""
    broker = start_tansu(log=tmp_path / "tansu.log")
    bootstrap = f"127.0.0.1:{broker.port}"
    tansu = {"kafka_enable_idempotence": False, "kafka_request_timeout_ms": 1000}
    assert TANSU_CLIENT_ENV["FLEETGATE_KAFKA_ENABLE_IDEMPOTENCE"] == "false"
    try:
        await wait_kafka(bootstrap)
        await create_topics(bootstrap)
        async with (
            running(bootstrap, edge=tansu, publish_timeout_seconds=2.0) as served,
            httpx.AsyncClient(timeout=30) as client,
        ):
            assert (await client.post(served.url, content=EDGE)).status_code == 200
            broker.stop()
            response = await client.post(served.url, content=TRADITIONAL)
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "5"
    finally:
        broker.stop()


async def test_https(kafka: str, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(cafile))
    tls: dict[str, Any] = {"tls_certfile": certfile, "tls_keyfile": keyfile}
    async with running(kafka, **tls, **BASIC) as served:
        assert served.url.startswith("https://")
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=cafile)) as client:
            response = await client.post(served.url, content=EDGE, headers=basic())
            assert response.status_code == 200
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.post(served.url.replace("https", "http"), content=EDGE)


def test_settings_check_what_goes_together() -> None:
    with pytest.raises(ValueError, match="basic needs"):
        HttpSettings(auth="basic", username="x")
    with pytest.raises(ValueError, match="bearer needs"):
        HttpSettings(auth="bearer")
    with pytest.raises(ValueError, match="header needs"):
        HttpSettings(auth="header", header_value="v")
    with pytest.raises(ValueError, match="go together"):
        HttpSettings(tls_certfile=Path("cert.pem"))
    assert not HttpSettings().enabled and HttpSettings(port=0).enabled


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETGATE_HTTP_PORT", "8088")
    monkeypatch.setenv("FLEETGATE_HTTP_AUTH", "bearer")
    monkeypatch.setenv("FLEETGATE_HTTP_TOKEN", "abc")
    settings = HttpSettings()
    assert settings.port == 8088 and settings.auth == "bearer"
    assert settings.token.get_secret_value() == "abc"


async def test_the_ingestor_serves_the_intake(kafka: str) -> None:
    """``serve`` with FLEETGATE_HTTP_PORT set: the intake next to the device listeners,
    answering 503 until ready, then landing bodies; it stops on the stop event."""
    port = free_port()
    settings = IngestorSettings(kafka_bootstrap=kafka, instance="served")
    listeners = listener_settings({
        "camera": {"host": "127.0.0.1", "port": 0}, "dmt": {"host": "127.0.0.1", "port": 0},
    })  # fmt: skip
    http = HttpSettings(host="127.0.0.1", port=port)
    readiness = Readiness("ingestor")
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(settings, stop, listeners, readiness, http))
    url = f"http://127.0.0.1:{port}{PATH}"
    try:
        async with httpx.AsyncClient() as client:
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                assert not serving.done(), serving
                try:
                    response = await client.post(url, content=EDGE)
                    if response.status_code == 200:
                        break
                    assert response.status_code == 503  # starting
                except httpx.TransportError:
                    pass  # not listening yet
                assert asyncio.get_running_loop().time() < deadline, "intake not serving"
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)
    landed = await read_landed(kafka, lambda got: bool(got.records))
    assert landed.records[0].ingestor == "served"
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.TransportError):  # stopped: nothing listens any more
            await client.post(url, content=EDGE, timeout=2)

"""The connector against a real Kafka protocol broker (Tansu), s3rver and HTTP(S) receivers."""

from __future__ import annotations

import base64
import io
import ssl
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import trustme

from contracts import FileFailed, FileStored, StoredFileData, WebhookBody
from tests.conftest import S3
from tests.connector.connector_helpers import (
    config_of,
    failed,
    metric,
    produce,
    receivers,
    running,
    settings_for,
    stored,
    wait_for,
)

IMEI_A = "356307042441013"
IMEI_B = "012896001234567"  # a leading zero must survive


def put(s3: S3, event: FileStored, data: bytes) -> None:
    s3.client().put_object(event.bucket, event.key, io.BytesIO(data), len(data))


async def test_every_event_reaches_every_endpoint_with_body_headers_and_url(
    kafka: str, s3: S3
) -> None:
    photos = {1: b"front photo", 3: b"rear photo!"}
    events: list[FileStored | FileFailed] = [
        stored(1, IMEI_A),
        failed(2, IMEI_B),
        stored(3, IMEI_B),
    ]
    for event in events:
        if isinstance(event, FileStored):
            put(s3, event, photos[int(event.event_id.split("-")[1])])
    await produce(kafka, events)

    with receivers() as receiver:
        basic, bearer = receiver(), receiver()
        endpoints = config_of(
            {
                "name": "all-basic",
                "url": basic.url,
                "auth": {"basic": {"username": "fleet", "password": "s3cret"}},
                "headers": {"X-Device": "dev-[IMEI]", "X-Tenant": "acme"},
            },
            {"name": "all-bearer", "url": bearer.url, "auth": {"bearer": "t0ken"}},
        )
        before = datetime.now(UTC)
        async with running(settings_for(kafka, s3), endpoints):
            await wait_for(
                lambda: len(basic.delivered()) == 3 and len(bearer.delivered()) == 3,
                "three deliveries to each endpoint",
            )

        async with httpx.AsyncClient() as http:
            for got in (basic, bearer):
                assert sorted(got.delivered_ids()) == sorted(e.event_id for e in events)
                assert len(got.snapshot()) == 3  # nothing failed, nothing was sent twice
                arrived = [r.event_id for r in got.delivered()]
                assert arrived.index("failed-2") < arrived.index("stored-3")  # one IMEI: in order
                for request in got.delivered():
                    event = next(e for e in events if e.event_id == request.event_id)
                    assert request.path == "/hook"
                    assert request.headers["content-type"] == "application/json"
                    assert request.headers["user-agent"].startswith("fleetgate/")
                    body = WebhookBody.model_validate_json(request.body)
                    assert body.type == event.type
                    if isinstance(event, FileStored):
                        assert isinstance(body.data, StoredFileData)
                        assert body.timestamp == event.stored_at
                        fields = set(FileStored.model_fields)
                        assert body.data.model_dump(include=fields) == event.model_dump()
                        expiry = body.data.download_url_expires_at - before
                        assert timedelta(days=7) - timedelta(minutes=1) < expiry
                        assert expiry <= timedelta(days=7, minutes=1)
                        download = await http.get(body.data.download_url)
                        assert download.status_code == 200
                        assert download.content == photos[int(event.event_id.split("-")[1])]
                    else:
                        assert body.data == event
                        assert body.timestamp == event.failed_at

    credentials = base64.b64encode(b"fleet:s3cret").decode()
    for request in basic.delivered():
        imei = IMEI_A if request.event_id == "stored-1" else IMEI_B
        assert request.headers["authorization"] == f"Basic {credentials}"
        assert request.headers["x-device"] == f"dev-{imei}"
        assert request.headers["x-tenant"] == "acme"
    for request in bearer.delivered():
        assert request.headers["authorization"] == "Bearer t0ken"
        assert "x-device" not in request.headers
    assert (
        metric("fleetgate_connector_deliveries_total", endpoint="all-basic", result="success") == 3
    )
    assert (
        metric("fleetgate_connector_deliveries_total", endpoint="all-basic", result="failure") == 0
    )
    assert metric("fleetgate_connector_last_success_timestamp_seconds", endpoint="all-bearer") > 0


async def test_an_event_is_retried_until_the_endpoint_takes_it(kafka: str, s3: S3) -> None:
    # First attempt answers too late, then 500, then 429, then 200; the next event waits.
    answers = iter([None, 500, 429])
    attempts: Counter[str] = Counter()

    def respond(headers: dict[str, str], body: bytes) -> int:
        attempts[headers["webhook-id"]] += 1
        if headers["webhook-id"] != "failed-1":
            return 200
        answer = next(answers, 200)
        if answer is None:
            time.sleep(0.4)  # beyond timeout_seconds
            return 200
        return answer

    await produce(kafka, [failed(1), failed(2)])
    with receivers() as receiver:
        flaky = receiver(respond)
        endpoints = config_of({"name": "retry", "url": flaky.url, "timeout_seconds": 0.25})
        async with running(settings_for(kafka, s3), endpoints):
            await wait_for(lambda: len(flaky.delivered()) == 3, "failed-1 taken at last")
            await wait_for(
                lambda: (
                    metric(
                        "fleetgate_connector_deliveries_total", endpoint="retry", result="success"
                    )
                    == 2
                ),
                "failed-2 delivered",
            )

    requests = flaky.snapshot()
    assert attempts == {"failed-1": 4, "failed-2": 1}
    ids = [r.event_id for r in requests]
    assert ids == ["failed-1"] * 4 + ["failed-2"]  # never skipped, never reordered
    # The same body each time (a failed file has no URL to refresh).
    assert len({r.body for r in requests if r.event_id == "failed-1"}) == 1
    assert metric("fleetgate_connector_retries_total", endpoint="retry") == 3
    assert metric("fleetgate_connector_deliveries_total", endpoint="retry", result="failure") == 3
    assert metric("fleetgate_connector_delivery_seconds_count", endpoint="retry") == 5


async def test_a_dead_endpoint_does_not_delay_a_healthy_one(kafka: str, s3: S3) -> None:
    down = threading.Event()
    down.set()
    events = [failed(n, imei=f"35630704244{n:04d}") for n in range(24)]  # all partitions
    ids = {e.event_id for e in events}
    await produce(kafka, events)
    with receivers() as receiver:
        sick = receiver(lambda headers, body: 503 if down.is_set() else 200)
        healthy = receiver()
        endpoints = config_of(
            {"name": "sick", "url": sick.url}, {"name": "healthy", "url": healthy.url}
        )
        async with running(settings_for(kafka, s3), endpoints):
            await wait_for(lambda: set(healthy.delivered_ids()) == ids, "all to the healthy one")
            await wait_for(
                lambda: metric("fleetgate_connector_retries_total", endpoint="sick") >= 1,
                "the sick one being retried",
            )
            assert sick.delivered() == []  # still failing, yet the healthy one has everything

            down.clear()  # it recovers: it gets everything, nothing was lost
            await wait_for(lambda: set(sick.delivered_ids()) == ids, "all to the recovered one")

    assert sorted(healthy.delivered_ids()) == sorted(ids)  # exactly once each
    assert sorted(sick.delivered_ids()) == sorted(ids)


async def test_tls_custom_ca_and_verify_false(kafka: str, s3: S3, tmp_path: Path) -> None:
    ca = trustme.CA()
    trusted_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(trusted_tls)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    unknown_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(unknown_tls)  # nobody trusts its CA

    await produce(kafka, [failed(1)])
    with receivers() as receiver:
        private = receiver(tls=trusted_tls)
        unknown = receiver(tls=unknown_tls)
        endpoints = config_of(
            {"name": "tls-ca", "url": private.url, "tls": {"ca_file": str(tmp_path / "ca.pem")}},
            {"name": "tls-noverify", "url": unknown.url, "tls": {"verify": False}},
            {"name": "tls-strict", "url": unknown.url},  # system CAs: must refuse it
        )
        async with running(settings_for(kafka, s3), endpoints):
            await wait_for(
                lambda: len(private.delivered()) == 1 and len(unknown.delivered()) == 1,
                "deliveries over TLS",
            )
            await wait_for(
                lambda: (
                    metric(
                        "fleetgate_connector_deliveries_total",
                        endpoint="tls-strict",
                        result="failure",
                    )
                    >= 2
                ),
                "the strict endpoint failing",
            )
            assert len(unknown.snapshot()) == 1  # only the verify: false endpoint got through
            assert (
                metric(
                    "fleetgate_connector_deliveries_total", endpoint="tls-strict", result="success"
                )
                == 0
            )
    assert private.delivered()[0].event_id == "failed-1"


async def test_restart_resumes_after_the_last_delivered_event(kafka: str, s3: S3) -> None:
    refuse: set[str] = set()
    # Tansu makes the first rejoin after a group's only member left wait about the session
    # timeout plus the join delay (6000 ms: 11 s; 2000 ms: 4 s).
    settings = settings_for(
        kafka, s3, kafka_session_timeout_ms=2000, kafka_heartbeat_interval_ms=500
    )
    with receivers() as receiver:
        sink = receiver(lambda headers, body: 500 if headers["webhook-id"] in refuse else 200)
        endpoints = config_of({"name": "restart", "url": sink.url})
        first = [failed(n) for n in range(4)]  # one IMEI: one partition, in order
        await produce(kafka, first)
        async with running(settings, endpoints):
            await wait_for(lambda: len(sink.delivered()) == 4, "the first four")
            refuse.add("failed-5")
            await produce(kafka, [failed(4), failed(5), failed(6)])
            await wait_for(
                lambda: sum(r.event_id == "failed-5" for r in sink.snapshot()) >= 2,
                "failed-5 being retried",
            )
        # Stopped while failed-5 was failing: failed-4 was committed, failed-5 and -6 were not.
        assert sink.delivered_ids() == [f"failed-{n}" for n in range(5)]

        refuse.clear()
        async with running(settings, endpoints):
            await wait_for(lambda: len(sink.delivered()) == 7, "the rest after the restart")

    # Nothing delivered before the restart came again; nothing undelivered was lost.
    assert sink.delivered_ids() == [f"failed-{n}" for n in range(7)]

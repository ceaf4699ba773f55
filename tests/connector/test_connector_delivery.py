"""The connector against a real Kafka protocol broker (Tansu), s3rver and HTTP(S) receivers."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import ssl
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import trustme
from standardwebhooks import Webhook

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

NEW_SECRET = "whsec_" + base64.b64encode(b"new secret, 32 bytes long......").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"old secret of 24 bytes..").decode()

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
                "secrets": [NEW_SECRET, OLD_SECRET],  # mid-rotation: signed with both
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
        # Standard Webhooks, checked by an independent implementation, with either secret.
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        for secret in (NEW_SECRET, OLD_SECRET):
            Webhook(secret).verify(request.body, request.headers)
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    for request in bearer.delivered():
        assert request.headers["authorization"] == "Bearer t0ken"
        assert "x-device" not in request.headers
        assert "webhook-signature" not in request.headers  # no secrets: unsigned
        assert "webhook-timestamp" in request.headers
    assert (
        metric("fleetgate_connector_deliveries_total", endpoint="all-basic", result="success") == 3
    )
    assert (
        metric("fleetgate_connector_deliveries_total", endpoint="all-basic", result="failure") == 0
    )
    assert metric("fleetgate_connector_last_success_timestamp_seconds", endpoint="all-bearer") > 0


async def test_a_failing_event_is_retried_without_holding_up_the_next(kafka: str, s3: S3) -> None:
    # failed-1: no answer in time, then 500, then 429, then 200. failed-2 behind it on the same
    # partition is delivered at once instead of waiting for those retries.
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
            await wait_for(lambda: len(flaky.delivered()) == 2, "both delivered")
            await wait_for(
                lambda: (
                    metric(
                        "fleetgate_connector_deliveries_total", endpoint="retry", result="success"
                    )
                    == 2
                ),
                "the connector seeing both 2xx",
            )

    requests = flaky.snapshot()
    assert attempts == {"failed-1": 4, "failed-2": 1}
    ids = [r.event_id for r in requests]
    assert ids.index("failed-2") == 1  # right after failed-1's first attempt, not after its 4th
    ones = [r for r in requests if r.event_id == "failed-1"]
    # The same body each time (a failed file has no URL to refresh); the id never changes.
    assert len({r.body for r in ones}) == 1
    # Durable retries on the test schedule (200 ms, 500 ms, 1 s, with 10 % jitter).
    # (Arrival times at the receiver: 100 ms of slack for thread scheduling.)
    gaps = [b.at - a.at for a, b in itertools.pairwise(ones)]
    assert gaps[0] > 0.25 + 0.18 - 0.1  # the timed-out attempt (0.25 s), then >= 180 ms
    assert gaps[1] > 0.45 - 0.1
    assert gaps[2] > 0.9 - 0.1
    assert metric("fleetgate_connector_retries_total", endpoint="retry") == 3
    assert metric("fleetgate_connector_deliveries_total", endpoint="retry", result="failure") == 3
    assert metric("fleetgate_connector_delivery_seconds_count", endpoint="retry") == 5
    assert metric("fleetgate_connector_dead_letters_total", endpoint="retry") == 0
    assert metric("fleetgate_connector_backlog", endpoint="retry") == 0


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
            {"name": "sick", "url": sick.url, "circuit_breaker": {"open_seconds": "300ms"}},
            {"name": "healthy", "url": healthy.url},
            retry={"schedule": ["200ms", "500ms"], "max_age": "60s"},
        )
        async with running(settings_for(kafka, s3), endpoints):
            await wait_for(lambda: set(healthy.delivered_ids()) == ids, "all to the healthy one")
            await wait_for(
                lambda: metric("fleetgate_connector_retries_total", endpoint="sick") >= 24,
                "the sick one's events all waiting in the retry topics",
            )
            assert sick.delivered() == []  # still failing, yet the healthy one has everything
            assert metric("fleetgate_connector_backlog", endpoint="sick") == 24
            assert metric("fleetgate_connector_circuit_state", endpoint="sick") > 0
            assert metric("fleetgate_connector_backlog", endpoint="healthy") == 0

            down.clear()  # it recovers: it gets everything, nothing was lost
            await wait_for(lambda: set(sick.delivered_ids()) == ids, "all to the recovered one")

            await wait_for(
                lambda: metric("fleetgate_connector_backlog", endpoint="sick") == 0,
                "the backlog gauge back to zero",
            )

    assert sorted(healthy.delivered_ids()) == sorted(ids)  # exactly once each
    assert sorted(sick.delivered_ids()) == sorted(ids)
    assert metric("fleetgate_connector_dead_letters_total", endpoint="sick") == 0


async def test_tls_custom_ca_verify_false_and_client_certificates(
    kafka: str, s3: S3, tmp_path: Path
) -> None:
    ca = trustme.CA()
    trusted_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(trusted_tls)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    unknown_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(unknown_tls)  # nobody trusts its CA
    # Mutual TLS: the server asks for a client certificate issued by the clients' CA.
    clients_ca = trustme.CA()
    mutual_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(mutual_tls)
    clients_ca.configure_trust(mutual_tls)
    mutual_tls.verify_mode = ssl.CERT_REQUIRED
    client = clients_ca.issue_cert("fleetgate-connector")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    tls_ca = {"ca_file": str(tmp_path / "ca.pem")}
    mtls = tls_ca | {"cert_file": str(tmp_path / "client.pem"), "key_file": "client.key"}

    await produce(kafka, [failed(1)])
    with receivers() as receiver:
        private = receiver(tls=trusted_tls)
        unknown = receiver(tls=unknown_tls)
        mutual = receiver(tls=mutual_tls)
        endpoints = config_of(
            {"name": "tls-ca", "url": private.url, "tls": tls_ca},
            {"name": "tls-noverify", "url": unknown.url, "tls": {"verify": False}},
            {"name": "tls-strict", "url": unknown.url},  # system CAs: must refuse it
            {"name": "tls-mutual", "url": mutual.url, "tls": mtls},
            {"name": "tls-no-client-cert", "url": mutual.url, "tls": tls_ca},
            retry={"schedule": ["200ms"], "max_age": "60s"},
            base=tmp_path,  # where the config file would be: key_file is relative
        )
        async with running(settings_for(kafka, s3), endpoints):
            await wait_for(
                lambda: all(len(r.delivered()) == 1 for r in (private, unknown, mutual)),
                "deliveries over TLS",
            )
            for name in ("tls-strict", "tls-no-client-cert"):
                await wait_for(
                    lambda name=name: (  # type: ignore[misc]
                        metric(
                            "fleetgate_connector_deliveries_total", endpoint=name, result="failure"
                        )
                        >= 2
                    ),
                    f"{name} failing (and retried)",
                )
            assert len(unknown.snapshot()) == 1  # only the verify: false endpoint got through
            assert len(mutual.snapshot()) == 1  # only the one with a client certificate
            for name in ("tls-strict", "tls-no-client-cert"):
                assert (
                    metric("fleetgate_connector_deliveries_total", endpoint=name, result="success")
                    == 0
                )
    assert private.delivered()[0].event_id == "failed-1"
    assert mutual.delivered()[0].event_id == "failed-1"


async def test_a_restart_resumes_deliveries_and_retries(kafka: str, s3: S3) -> None:
    refuse: set[str] = set()
    # Tansu makes the first rejoin after a group's only member left wait about the session
    # timeout plus the join delay (6000 ms: 11 s; 2000 ms: 4 s).
    settings = settings_for(kafka, s3)
    with receivers() as receiver:
        sink = receiver(lambda headers, body: 500 if headers["webhook-id"] in refuse else 200)
        endpoints = config_of(
            {"name": "restart", "url": sink.url},
            retry={"schedule": ["300ms", "600ms"], "max_age": "60s"},
        )
        first = [failed(n) for n in range(4)]  # one IMEI: one partition, in order
        await produce(kafka, first)
        async with running(settings, endpoints):
            await wait_for(lambda: len(sink.delivered()) == 4, "the first four")
            refuse.add("failed-5")
            await produce(kafka, [failed(4), failed(5), failed(6)])
            await wait_for(
                lambda: len(sink.attempts("failed-5")) >= 2 and len(sink.delivered()) == 6,
                "failed-5 being retried while failed-6 is delivered",
            )
        # Stopped while failed-5 was waiting in a retry topic; everything else was delivered.
        assert sink.delivered_ids() == [f"failed-{n}" for n in (0, 1, 2, 3, 4, 6)]

        refuse.clear()
        async with running(settings, endpoints):
            await wait_for(lambda: len(sink.delivered()) == 7, "failed-5 after the restart")
            await asyncio.sleep(0.3)  # nothing else comes

    # Nothing delivered before the restart came again; the retry survived it.
    assert sink.delivered_ids() == [f"failed-{n}" for n in (0, 1, 2, 3, 4, 6, 5)]

"""Connector pieces without infrastructure: classification, backoff, headers, presigning."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import ValidationError

from connector.config import parse_config
from connector.consumer import webhook_body
from connector.delivery import (
    EndpointClient,
    RetryPolicy,
    Verdict,
    _retry_after,
    classify,
    deliver,
)
from connector.presign import Presigner
from connector.settings import ConnectorSettings
from contracts import StoredFileData, WebhookBody, encode
from devstack.infra import free_port
from tests.connector.connector_helpers import failed, metric, stored, wait_for


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (None, Verdict.RETRY),
        (301, Verdict.RETRY),  # redirects are not followed: a failure
        (400, Verdict.RETRY),  # for now; the dead-letter work rejects these
        (404, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
    ],
)
def test_only_2xx_delivers(status: int | None, verdict: Verdict) -> None:
    assert classify(status) is verdict


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    policy = RetryPolicy(initial=1.0, maximum=60.0)
    assert [policy.delay(n, rand=lambda: 1.0) for n in range(1, 9)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        60,
        60,
    ]
    assert [policy.delay(n, rand=lambda: 0.0) for n in (1, 2, 7)] == [0.5, 1, 30]
    assert policy.delay(10_000, rand=lambda: 0.5) == 45  # no overflow after days of failures
    assert policy.delay(1, retry_after=20, rand=lambda: 0.0) == 20  # the endpoint asks for more
    assert policy.delay(1, retry_after=3600, rand=lambda: 0.0) == 60  # but not beyond the max


def test_retry_after_header() -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert _retry_after("7") == 7
    assert _retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert _retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert _retry_after("soon") is None
    assert _retry_after(None) is None


def _settings(**overrides: object) -> ConnectorSettings:
    values: dict[str, object] = {
        "s3_endpoint": "127.0.0.1:9000",
        "s3_access_key": "AK",
        "s3_secret_key": "SK",
    }
    return ConnectorSettings(**(values | overrides))  # type: ignore[arg-type]


def test_presigned_urls_name_the_public_host_when_given() -> None:
    now = datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC)
    url, expires = Presigner(_settings()).url("fleetgate", "a/b c.jpg", now)
    assert url.startswith("http://127.0.0.1:9000/fleetgate/a/b%20c.jpg?")
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["604800"]
    assert expires == datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)

    public = Presigner(
        _settings(s3_public_url="https://files.example.com", presign_expiry_seconds=3600)
    )
    url, expires = public.url("fleetgate", "k.jpg", now)
    assert url.startswith("https://files.example.com/fleetgate/k.jpg?")
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["3600"]
    assert expires - now.replace(microsecond=0) == timedelta(hours=1)


@pytest.mark.parametrize(
    "fields",
    [
        {"s3_public_url": "files.example.com"},
        {"s3_public_url": "https://files.example.com/prefix"},
        {"presign_expiry_seconds": 7 * 24 * 3600 + 1},
        {"presign_expiry_seconds": 0},
    ],
)
def test_bad_presign_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _settings(**fields)


def test_webhook_bodies() -> None:
    presigner = Presigner(_settings())
    now = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)
    event = stored(7)
    body = webhook_body(event, presigner, now)
    assert isinstance(body.data, StoredFileData)
    assert body.data.download_url_expires_at == now + timedelta(days=7)
    assert WebhookBody.model_validate_json(encode(body)) == body
    lost = failed(8)
    assert webhook_body(lost, presigner) == WebhookBody(
        type="file.failed", timestamp=lost.failed_at, data=lost
    )


def _endpoint(**fields: object) -> EndpointClient:
    text = "endpoints:\n  - name: unit\n    url: http://127.0.0.1:1/hook\n"
    text += "".join(f"    {k}: {v}\n" for k, v in fields.items())
    return EndpointClient(parse_config(text).endpoints[0])


async def test_imei_placeholders_are_filled_per_event() -> None:
    client = _endpoint(headers="{X-Device: 'cam-[IMEI]', X-Fixed: 'yes', User-Agent: 'mine/1'}")
    try:
        assert client.headers("ev-1", "0123") == {
            "Content-Type": "application/json",
            "webhook-id": "ev-1",
            "X-Device": "cam-0123",
        }
    finally:
        await client.aclose()


async def test_a_refused_connection_is_a_failed_attempt() -> None:
    text = f"endpoints:\n  - name: unit\n    url: http://127.0.0.1:{free_port()}/hook\n"
    client = EndpointClient(parse_config(text).endpoints[0])
    try:
        attempt = await client.post(b"{}", "ev-1", "1")
    finally:
        await client.aclose()
    assert attempt.verdict is Verdict.RETRY
    assert attempt.status is None
    assert attempt.error is not None and "ConnectError" in attempt.error


async def test_deliver_retries_then_stops_when_told() -> None:
    seen: list[httpx.Request] = []
    answers = [500, 429, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = answers.pop(0) if answers else 500
        return httpx.Response(status, headers={"Retry-After": "0"} if status == 429 else {})

    endpoint = parse_config("endpoints: [{name: unit-mock, url: 'http://x/h'}]").endpoints[0]
    client = EndpointClient(endpoint, transport=httpx.MockTransport(handler))
    stop = asyncio.Event()
    bodies = iter([b"1", b"2", b"3", b"4"])
    fast = RetryPolicy(initial=0.01, maximum=0.02)
    try:
        assert await deliver(
            client,
            event_id="ev",
            event_type="file.failed",
            imei="1",
            body=lambda: next(bodies),
            policy=fast,
            stop=stop,
        )
        assert [r.content for r in seen] == [b"1", b"2", b"3"]  # rebuilt for every attempt
        assert {r.headers["webhook-id"] for r in seen} == {"ev"}
        assert metric("fleetgate_connector_retries_total", endpoint="unit-mock") == 2

        # Always failing, with a long backoff: stop ends it at once, undelivered.
        slow = RetryPolicy(initial=30.0, maximum=60.0)
        task = asyncio.create_task(
            deliver(
                client,
                event_id="ev2",
                event_type="file.failed",
                imei="1",
                body=lambda: b"x",
                policy=slow,
                stop=stop,
            )
        )
        await wait_for(lambda: len(seen) == 4, "the first failed attempt")
        started = time.monotonic()
        stop.set()
        assert await task is False
        assert time.monotonic() - started < 0.5
    finally:
        await client.aclose()

"""Connector pieces without infrastructure: classification, schedule, signatures, breaker,
limits, SSRF guard, headers, presigning."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from pydantic import ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

from connector.config import disallowed_address, parse_config, parse_duration
from connector.consumer import webhook_body
from connector.delivery import EndpointClient, Verdict, classify, retry_after
from connector.presign import Presigner
from connector.protection import CircuitBreaker, CircuitState, RateLimiter
from connector.retry import DeadLetterNow, RetryLater, RetryState, Schedule, next_step
from connector.settings import ConnectorSettings
from contracts import StoredFileData, WebhookBody, encode, retry_topic
from devstack.infra import free_port
from tests.connector.connector_helpers import failed, metric, stored

SECRET_A = "whsec_" + base64.b64encode(b"a" * 32).decode()
SECRET_B = "whsec_" + base64.b64encode(bytes(range(24))).decode()


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (None, Verdict.RETRY),  # timeout, connection refused, TLS error
        (301, Verdict.RETRY),  # redirects are not followed: a failure
        (400, Verdict.REJECT),
        (401, Verdict.REJECT),
        (404, Verdict.REJECT),
        (410, Verdict.REJECT),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
    ],
)
def test_what_an_answer_means(status: int | None, verdict: Verdict) -> None:
    assert classify(status) is verdict


def test_retry_after_header() -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert retry_after("7") == 7
    assert retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_durations_and_retry_topic_names() -> None:
    assert [parse_duration(v) for v in ("200ms", "5s", "2m", "1h", "1d", 3, 0.5, "1.5s")] == [
        0.2,
        5,
        120,
        3600,
        86400,
        3,
        0.5,
        1.5,
    ]
    for bad in ("5 minutes", "-1s", "0", True, None):
        with pytest.raises(ValueError):
            parse_duration(bad)
    names = [retry_topic(d) for d in (0.2, 1.5, 5, 90, 120, 600, 3600, 5400, 129600)]
    assert names == [
        "fleetgate.connector.retry.200ms.v1",
        "fleetgate.connector.retry.1500ms.v1",
        "fleetgate.connector.retry.5s.v1",
        "fleetgate.connector.retry.90s.v1",
        "fleetgate.connector.retry.2m.v1",
        "fleetgate.connector.retry.10m.v1",
        "fleetgate.connector.retry.1h.v1",
        "fleetgate.connector.retry.90m.v1",
        "fleetgate.connector.retry.36h.v1",
    ]
    with pytest.raises(ValueError):
        retry_topic(0.0005)


def test_the_default_schedule() -> None:
    retry = parse_config("endpoints: [{name: a, url: 'https://example.com/'}]").retry
    assert retry.schedule == [5, 30, 120, 600, 1800, 3600]
    assert retry.max_age == 24 * 3600 and retry.jitter == 0.2
    assert [t.split(".")[3] for t in retry.topics] == ["5s", "30s", "2m", "10m", "30m", "1h"]


def test_next_step_walks_the_schedule_then_repeats_the_last_until_the_maximum_age() -> None:
    schedule = Schedule((5, 30, 120, 600, 1800, 3600), max_age=24 * 3600, jitter=0.2)
    t0 = 1_000_000.0
    state = RetryState(endpoint="e", attempts=1, first_attempt=t0)
    mid = lambda: 0.5  # noqa: E731 - no jitter at the middle of the draw
    steps = []
    now, tier = t0, None
    while True:
        step = next_step(schedule, state, tier, now, rand=mid)
        if isinstance(step, DeadLetterNow):
            break
        assert isinstance(step, RetryLater)
        steps.append(step.tier)
        now, tier = step.due, step.tier
    # 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then hourly: the last retry within 24 h.
    assert steps[:7] == [0, 1, 2, 3, 4, 5, 5]
    assert now - t0 <= 24 * 3600 < now - t0 + 3600
    assert len(steps) == 6 + 22  # 6155 s of steps, then 22 hourly ones: 29 attempts

    # Jitter: +- 20 % of the step, never less.
    low = next_step(schedule, state, None, t0, rand=lambda: 0.0)
    high = next_step(schedule, state, None, t0, rand=lambda: 1.0)
    assert isinstance(low, RetryLater) and isinstance(high, RetryLater)
    assert (low.due - t0, high.due - t0) == pytest.approx((4.0, 6.0))


def test_retry_after_picks_a_step_that_waits_long_enough() -> None:
    schedule = Schedule((5, 30, 120, 600, 1800, 3600), max_age=24 * 3600, jitter=0.2)
    state = RetryState(endpoint="e", attempts=1, first_attempt=0.0)
    step = next_step(schedule, state, None, 0.0, retry_after=60, rand=lambda: 0.0)
    assert isinstance(step, RetryLater)
    assert step.tier == 2 and step.due == 96  # the 2 min step, jitter down to 96 s
    step = next_step(schedule, state, None, 0.0, retry_after=100, rand=lambda: 0.0)
    assert isinstance(step, RetryLater) and step.due == 100  # but never before Retry-After
    step = next_step(schedule, state, 4, 0.0, retry_after=1, rand=lambda: 0.5)
    assert isinstance(step, RetryLater) and step.tier == 5  # never back to an earlier step
    # Asking for longer than the maximum age: dead letter now, not a silent drop later.
    assert isinstance(next_step(schedule, state, None, 0.0, retry_after=90_000), DeadLetterNow)


def test_retry_state_round_trips_through_headers() -> None:
    state = RetryState(
        endpoint="crm",
        attempts=3,
        first_attempt=1_763_700_000.123,
        due=1_763_700_030.5,
        last_status=503,
        last_error="HTTP 503: " + "é" * 400,
        last_attempt=1_763_700_020.0,
        source="fleetgate.files.v1/2/17",
        source_time=1_763_699_999.0,
        queued_by="abc",
    )
    headers = state.headers()
    back = RetryState.from_headers(headers)
    assert back is not None
    assert len(dict(headers)["fg-last-error"]) <= 500  # clipped on a character boundary
    assert back.last_error is not None and back.last_error.endswith("...")
    assert back == dataclasses.replace(state, last_error=back.last_error)
    assert RetryState.endpoint_of(headers) == "crm"
    assert RetryState.from_headers([("fg-endpoint", b"crm")]) is None
    assert RetryState.endpoint_of([]) is None


def test_signatures_verify_with_the_standardwebhooks_package_for_each_secret() -> None:
    text = (
        "endpoints:\n  - name: signed\n    url: https://example.com/\n"
        f"    secrets: ['{SECRET_A}', '{SECRET_B}']\n"
    )
    client = EndpointClient(parse_config(text).endpoints[0])
    body = b'{"type":"file.failed"}'
    headers = client.headers("ev-1", "1", body)
    assert headers["webhook-id"] == "ev-1"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for secret, signature in zip((SECRET_A, SECRET_B), signatures, strict=True):
        # Each secret verifies alone (a receiver mid-rotation knows one of them) ...
        Webhook(secret).verify(body, {**headers, "webhook-signature": signature})
        # ... and against the full header, as receivers get it.
        assert Webhook(secret).verify(body, headers) == {"type": "file.failed"}
    other = "whsec_" + base64.b64encode(b"z" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify(body + b" ", headers)  # the body is covered
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify(body, {**headers, "webhook-id": "ev-2"})  # so is the id
    unsigned = parse_config("endpoints: [{name: u, url: 'https://example.com/'}]").endpoints[0]
    assert "webhook-signature" not in EndpointClient(unsigned).headers("ev", "1", body)


def _state(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state  # (a call: mypy does not keep a narrowed attribute across calls)


async def test_circuit_breaker_opens_after_failures_and_lets_one_probe_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker("unit-breaker", failures=3, open_seconds=10, clock=lambda: now[0])
    gauge = "fleetgate_connector_circuit_state"
    for _ in range(2):
        permit = breaker.acquire()
        assert permit is not None and not permit.probe
        breaker.record(permit, alive=False)
    assert _state(breaker) is CircuitState.CLOSED
    permit = breaker.acquire()
    assert permit is not None
    breaker.record(permit, alive=True)  # a success resets the count
    for _ in range(3):
        permit = breaker.acquire()
        assert permit is not None
        breaker.record(permit, alive=False)
    assert _state(breaker) is CircuitState.OPEN and metric(gauge, endpoint="unit-breaker") == 2
    assert breaker.acquire() is None
    now[0] = 10.0
    probe = breaker.acquire()
    assert probe is not None and probe.probe and _state(breaker) is CircuitState.HALF_OPEN
    assert breaker.acquire() is None  # one probe at a time
    breaker.record(probe, alive=False)  # the probe failed: open for another 10 s
    assert _state(breaker) is CircuitState.OPEN and breaker.acquire() is None
    now[0] = 20.0
    probe = breaker.acquire()
    assert probe is not None and probe.probe
    breaker.release(probe)  # abandoned: another event may probe
    probe = breaker.acquire()
    assert probe is not None and probe.probe
    breaker.record(probe, alive=True)
    assert _state(breaker) is CircuitState.CLOSED and metric(gauge, endpoint="unit-breaker") == 0

    # wait(): returns a permit once the breaker lets one through, None at the deadline.
    breaker = CircuitBreaker("unit-breaker-2", failures=1, open_seconds=0.2)
    first = breaker.acquire()
    assert first is not None
    breaker.record(first, alive=False)
    stop = asyncio.Event()
    started = time.monotonic()
    assert await breaker.wait(stop, deadline=time.monotonic() + 0.05) is None
    probe = await breaker.wait(stop)
    assert probe is not None and probe.probe
    assert 0.18 < time.monotonic() - started < 3.0  # the cool-down, not much more
    waiter = asyncio.create_task(breaker.wait(stop))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    breaker.record(probe, alive=True)  # closing wakes the waiters at once
    assert (await asyncio.wait_for(waiter, 1)) is not None


async def test_rate_limiter_spaces_requests_evenly() -> None:
    limiter = RateLimiter(50)
    started = time.monotonic()
    for _ in range(11):
        await limiter.acquire()
    assert 0.19 < time.monotonic() - started < 2.0  # 10 intervals of 20 ms, at least


async def test_rate_limiter_does_not_burst_when_its_waiters_wake_late() -> None:
    """Eight callers wait at once; the event loop is then blocked for longer than all their
    slots. Each grant still comes an interval after the one before, counted from real time."""
    limiter = RateLimiter(50)  # 20 ms apart
    granted: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        granted.append(time.monotonic())

    tasks = [asyncio.create_task(one()) for _ in range(8)]
    await asyncio.sleep(0)  # the first takes its slot, the others wait
    time.sleep(0.2)  # noqa: ASYNC251 - a busy loop: every reserved slot is in the past now
    await asyncio.gather(*tasks)
    gaps = [later - earlier for earlier, later in itertools.pairwise(granted)]
    assert len(gaps) == 7
    assert min(gaps) >= 0.02 - 0.002


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("hooks.example.com", None),  # names are checked when resolved
    ],
)
def test_private_destinations_are_recognised(address: str, refused: str | None) -> None:
    why = disallowed_address(address)
    assert (why is None) == (refused is None)
    if refused is not None:
        assert why is not None and refused in why


async def test_a_name_that_resolves_to_a_private_address_is_refused_before_sending() -> None:
    port = free_port()
    text = f"endpoints:\n  - name: unit-ssrf\n    url: http://localhost:{port}/hook\n"
    client = EndpointClient(parse_config(text).endpoints[0])
    try:
        attempt = await client.post(b"{}", "ev-1", "1")
    finally:
        await client.aclose()
    assert attempt.verdict is Verdict.REFUSED and attempt.status is None
    assert attempt.error is not None
    assert "localhost resolves to" in attempt.error and "loopback" in attempt.error
    assert "allow_private_network" in attempt.error
    assert attempt.alive is None  # nothing learnt about the endpoint


def _settings(**overrides: object) -> ConnectorSettings:
    values: dict[str, object] = {
        "s3_endpoint": "127.0.0.1:9000",
        "s3_access_key": "AK",
        "s3_secret_key": "SK",
    }
    return ConnectorSettings(**(values | overrides))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"s3_endpoint": "https://s3.eu-west-1.amazonaws.com", "s3_region": "eu-west-1"},
        {"s3_public_url": "https://files.example.com", "presign_expiry_seconds": 3600},
    ],
)
def test_presigned_urls_are_the_ones_minio_signs(overrides: dict[str, object]) -> None:
    """The connector signs download URLs itself (a kept signing key per day); minio's own
    presigning is the reference, for awkward keys and across midnight."""
    presigner = Presigner(_settings(s3_secret_key="SK/+x", **overrides))
    reference = presigner._client
    for key in ("356307042441013/2026/11/30/x-1.jpg", "a b/c+d~é.jpg", "x/%41?&=#.mp4"):
        for now in (
            datetime(2026, 11, 30, 23, 59, 59, 999, tzinfo=UTC),
            datetime(2026, 12, 1, 5, 0, 1, tzinfo=timezone(timedelta(hours=5))),
        ):
            expected = reference.presigned_get_object(
                "fleetgate", key, presigner.expiry, request_date=now.replace(microsecond=0)
            )
            assert presigner.url("fleetgate", key, now)[0] == expected


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


async def test_an_address_made_of_dynamic_fields_is_checked_per_event() -> None:
    # 120.0.0.1 when the config is loaded; 127.0.0.1 for a device whose serial is 7.
    port = free_port()
    text = f"endpoints: [{{name: unit-dyn, url: 'http://12[SERIAL].0.0.1:{port}/h'}}]"
    client = EndpointClient(parse_config(text).endpoints[0])
    try:
        attempt = await client.post(b"{}", "ev-1", "1", {"[IMEI]": "1", "[SERIAL]": "7"})
    finally:
        await client.aclose()
    assert attempt.verdict is Verdict.REFUSED and attempt.error is not None
    assert "127.0.0.1 is a loopback address" in attempt.error


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
    text += "    allow_private_network: true\n"
    text += "".join(f"    {k}: {v}\n" for k, v in fields.items())
    return EndpointClient(parse_config(text).endpoints[0])


async def test_imei_placeholders_are_filled_per_event() -> None:
    client = _endpoint(headers="{X-Device: 'cam-[IMEI]', X-Fixed: 'yes', User-Agent: 'mine/1'}")
    try:
        assert client.headers("ev-1", "0123", timestamp=1700000000) == {
            "Content-Type": "application/json",
            "webhook-id": "ev-1",
            "webhook-timestamp": "1700000000",
            "X-Device": "cam-0123",
        }
    finally:
        await client.aclose()


async def test_a_refused_connection_is_a_failed_attempt() -> None:
    text = (
        f"endpoints:\n  - name: unit\n    url: http://127.0.0.1:{free_port()}/hook\n"
        "    allow_private_network: true\n"
    )
    client = EndpointClient(parse_config(text).endpoints[0])
    try:
        attempt = await client.post(b"{}", "ev-1", "1")
    finally:
        await client.aclose()
    assert attempt.verdict is Verdict.RETRY
    assert attempt.status is None and attempt.alive is False
    assert attempt.error is not None and "ConnectError" in attempt.error


async def test_answers_become_attempts_with_their_reason() -> None:
    answers = [
        web.Response(status=503, text="busy " * 100),
        web.Response(status=429, headers={"Retry-After": "7"}),
        web.Response(status=410, text="gone"),
        web.Response(status=204),
        web.Response(status=302, headers={"Location": "/elsewhere"}),
    ]
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers["webhook-id"])
        return answers.pop(0)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    text = (
        f"endpoints: [{{name: unit-http, url: 'http://127.0.0.1:{port}/h',"
        " allow_private_network: true}]"
    )
    client = EndpointClient(parse_config(text).endpoints[0])
    try:
        busy, limited, gone, done, moved = [await client.post(b"{}", "ev", "1") for _ in range(5)]
    finally:
        await client.aclose()
        await runner.cleanup()
    assert busy.verdict is Verdict.RETRY and busy.error is not None
    assert busy.error.startswith("HTTP 503: busy") and len(busy.error) <= 210
    assert limited.verdict is Verdict.RETRY and limited.retry_after == 7
    assert limited.alive is True  # a 429 is an endpoint that works: the breaker stays closed
    assert gone.verdict is Verdict.REJECT and gone.error == "HTTP 410: gone"
    assert done.verdict is Verdict.DELIVERED and done.status == 204
    assert moved.verdict is Verdict.RETRY and moved.status == 302  # not followed
    assert seen == ["ev"] * 5


def test_the_readme_verifier_accepts_our_signatures_and_nothing_else() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("\n## Webhooks\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # the snippet as a receiver would paste it
    verify = namespace["verify"]
    text = (
        "endpoints:\n  - name: readme\n    url: https://example.com/\n"
        f"    secrets: ['{SECRET_A}', '{SECRET_B}']\n"
    )
    client = EndpointClient(parse_config(text).endpoints[0])
    body = b'{"type":"file.stored"}'
    headers = {k.lower(): v for k, v in client.headers("ev-9", "1", body).items()}
    assert verify(SECRET_A, headers, body) and verify(SECRET_B, headers, body)
    assert not verify(SECRET_A, headers, body + b"x")
    other = "whsec_" + base64.b64encode(b"q" * 32).decode()
    assert not verify(other, headers, body)
    old = client.headers("ev-9", "1", body, timestamp=int(time.time()) - 3600)
    assert not verify(SECRET_A, {k.lower(): v for k, v in old.items()}, body)


async def test_a_held_request_and_failures_leave_room_for_others() -> None:
    """The in-flight window never shrinks below its floor: one request a hanging endpoint
    holds, plus failures of others, still leaves room (else the endpoint stalls until the
    held request times out)."""
    from connector.consumer import _Window

    window = _Window(10)
    assert window.allowed == _Window.FLOOR == 4
    await window.acquire()  # held by a hanging endpoint
    for _ in range(2):  # two attempts fail
        await window.acquire()
        window.learn(False)
        window.release()
    assert window.allowed == 4
    for _ in range(3):  # the others still go
        await asyncio.wait_for(window.acquire(), 1)
    with pytest.raises(TimeoutError):  # the floor holds: a fifth waits
        await asyncio.wait_for(window.acquire(), 0.05)
    window.learn(True)  # a success doubles it
    assert window.allowed == 8
    assert _Window(2).allowed == 2  # never above max_concurrency


class _HeldFetches:
    """A consumer whose polls bring nothing until cancelled, as a fetch the broker holds."""

    def __init__(self, *tps: Any) -> None:
        self.tps = set(tps)
        self.polled: list[set[Any]] = []
        self.committed: list[dict[Any, int]] = []
        self.asked = asyncio.Event()

    def assignment(self) -> set[Any]:
        return set(self.tps)

    async def getmany(self, *partitions: Any, timeout_ms: int, max_records: int) -> dict[Any, Any]:
        self.polled.append(set(partitions))
        self.asked.set()
        await asyncio.Event().wait()  # held past its timeout: only a cancel ends it
        return {}

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.committed.append(offsets)

    def pause(self, *partitions: Any) -> None:
        raise AssertionError("pausing drops what was fetched ahead")


async def test_a_partition_in_hand_is_left_out_of_polls_and_polled_again_once_finished() -> None:
    """Records in hand: the partition is not paused (the consumer keeps fetching it ahead)
    but left out of the polls; when its task finishes, a poll that is waiting ends at once, so
    the partition's next records are taken without waiting out a held fetch."""
    from aiokafka import TopicPartition

    from connector.consumer import EndpointWorker

    config = parse_config(
        "endpoints:\n  - {name: hook, url: 'http://127.0.0.1:9/x', allow_private_network: true}\n"
    )
    settings = _settings()
    worker = EndpointWorker(config.endpoints[0], settings, config, Presigner(settings), None)  # type: ignore[arg-type]
    busy, idle = TopicPartition("fleetgate.files.v1", 0), TopicPartition("fleetgate.files.v1", 1)
    consumer = _HeldFetches(busy, idle)
    await worker.consumer.stop()  # never started: the fake stands in
    worker.consumer = consumer
    release = asyncio.Event()

    async def drain() -> None:  # a partition's task: its records, then finished
        await release.wait()
        worker._finished[busy] = 8
        await worker._resume(busy)

    worker._tasks[busy] = asyncio.create_task(drain())
    poll = asyncio.create_task(worker._poll())
    await asyncio.wait_for(consumer.asked.wait(), 5)
    assert consumer.polled == [{idle}]  # the busy partition is not polled
    release.set()
    assert await asyncio.wait_for(poll, 5) == {}  # the held poll gave way
    assert consumer.committed == [{busy: 8}] and busy not in worker._tasks
    consumer.asked.clear()
    again = asyncio.create_task(worker._poll())
    await asyncio.wait_for(consumer.asked.wait(), 5)
    assert consumer.polled[-1] == {busy, idle}
    again.cancel()

    # Every partition in hand: no poll at all (one naming no partition would take them all).
    finish = asyncio.Event()

    async def hold(tp: Any) -> None:
        await finish.wait()
        await worker._resume(tp)

    worker._tasks = {tp: asyncio.create_task(hold(tp)) for tp in (busy, idle)}
    waiting = asyncio.create_task(worker._poll())
    await asyncio.sleep(0.01)
    finish.set()
    assert await asyncio.wait_for(waiting, 5) == {}
    assert len(consumer.polled) == 2
    await worker.client.aclose()

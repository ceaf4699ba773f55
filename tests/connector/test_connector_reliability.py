"""Delivery you can trust, case by case, against real HTTP servers, Tansu and s3rver.

An endpoint that fails three times then succeeds; one that hangs past the timeout; one that is
down; one that answers 400; 429 with Retry-After; a private destination. In every case each
event is delivered at least once or dead-lettered with its reason, none is lost, and a replay
delivers it with the same ``webhook-id``. Also filters, rate limit, concurrency cap and the
circuit breaker, each observed at the receiver. (The killed connector is in
test_connector_cli.py, the two-minute outage in test_connector_outage.py.)
"""

from __future__ import annotations

import base64
import itertools
import statistics
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from standardwebhooks import Webhook

from connector.replay import replay
from contracts import FileFailed, FileStored
from devstack.infra import free_port
from tests.conftest import S3
from tests.connector.connector_helpers import (
    FAST_RETRY,
    Answer,
    accounted,
    config_of,
    dead_letters,
    failed,
    metric,
    produce,
    receivers,
    running,
    settings_for,
    stored,
    wait_dead_letters,
    wait_for,
)

SECRET = "whsec_" + base64.b64encode(b"reliability tests secret 32 byte").decode()
NO_BREAKER = {"failures": 0}  # these cases are about retries; the breaker has its own test


def _imei(n: int) -> str:
    return f"35630704244{n:04d}"


async def test_an_endpoint_that_fails_three_times_then_succeeds(kafka: str, s3: S3) -> None:
    answers = iter([500, 502, 503])

    def respond(headers: dict[str, str], body: bytes) -> int:
        return next(answers, 200) if headers["webhook-id"] == "failed-1" else 200

    events = [failed(n, _imei(n)) for n in range(1, 5)]
    since = datetime.now(UTC) - timedelta(seconds=1)
    await produce(kafka, events)
    with receivers() as receiver:
        flaky = receiver(respond)
        config = config_of({"name": "thrice", "url": flaky.url, "secrets": [SECRET]})
        settings = settings_for(kafka, s3)
        async with running(settings, config):
            await wait_for(lambda: len(flaky.delivered()) == 4, "all four delivered")
        ones = flaky.attempts("failed-1")
        assert [r.status for r in ones] == [500, 502, 503, 200]
        for request in flaky.snapshot():  # every attempt signed, verifiable independently
            Webhook(SECRET).verify(request.body, request.headers)
        assert metric("fleetgate_connector_retries_total", endpoint="thrice") == 3
        assert await dead_letters(kafka, "thrice") == []
        accounted(events, flaky, [])

        # A replay of everything since before the events: each again, same webhook-id.
        report = await replay(settings, config, "thrice", since=since)
        assert (report.delivered, report.failed, report.filtered) == (4, 0, 0)
        again = Counter(flaky.delivered_ids())
        assert again == {e.event_id: 2 for e in events}
        # --until before the events: nothing.
        report = await replay(settings, config, "thrice", since=since, until=since)
        assert report.delivered == 0


async def test_an_endpoint_that_hangs_past_the_timeout(kafka: str, s3: S3) -> None:
    hanging = threading.Event()
    hanging.set()
    hung_once: set[str] = set()

    def respond(headers: dict[str, str], body: bytes) -> int:
        event_id = headers["webhook-id"]
        if hanging.is_set() and (event_id == "failed-1" or event_id not in hung_once):
            hung_once.add(event_id)
            if event_id != "failed-3":  # failed-3 answers at once
                time.sleep(0.6)  # twice the timeout: the connector has given up
        return 200

    events = [failed(n, _imei(n)) for n in (1, 2, 3)]
    await produce(kafka, events)
    with receivers() as receiver:
        slow = receiver(respond)
        config = config_of(
            {
                "name": "hangs",
                "url": slow.url,
                "timeout_seconds": 0.3,
                "circuit_breaker": NO_BREAKER,
            }
        )
        settings = settings_for(kafka, s3)
        async with running(settings, config):
            # failed-1 hangs every time: dead-lettered once the schedule passes max_age (3 s).
            (letter,) = await wait_dead_letters(kafka, "hangs", 1)
            await wait_for(lambda: len(slow.delivered()) >= 2, "failed-2 on its second try")
        assert letter.event_id == "failed-1" and letter.reason == "expired"
        # Attempts at 0, 0.5, 1.3, 2.6 s (each 0.3 s, then the step): 4, or 3 on a busy machine.
        assert letter.last_status is None and letter.attempts in (3, 4)
        assert letter.last_error == "no answer within 0.3 s"
        assert letter.last_attempt_at is not None
        # No attempt starts past max_age (3 s); the last one ends within its 0.3 s timeout,
        # plus scheduling slack on a loaded machine.
        assert letter.last_attempt_at - letter.first_attempt_at < timedelta(seconds=3 + 0.3 + 2)
        assert letter.event == events[0] and letter.source is not None
        assert metric("fleetgate_connector_dead_letters_total", endpoint="hangs") == 1
        # The receiver did get failed-1 each time (too late): at least once, not lost.
        await wait_for(
            lambda: len(slow.attempts("failed-1")) == letter.attempts, "the last hang to end"
        )
        assert len(slow.attempts("failed-2")) == 2 and len(slow.attempts("failed-3")) == 1
        accounted(events, slow, [letter])

        hanging.clear()  # fixed: the replay delivers it, with the same webhook-id
        report = await replay(settings, config, "hangs")
        assert (report.delivered, report.failed, report.already) == (1, 0, 0)
        assert slow.snapshot()[-1].event_id == "failed-1" and slow.snapshot()[-1].ok
        report = await replay(settings, config, "hangs")  # not twice
        assert (report.delivered, report.already) == (0, 1)


async def test_an_endpoint_that_is_down(kafka: str, s3: S3) -> None:
    port = free_port()  # nothing listens there yet
    events = [failed(n, _imei(n)) for n in range(6)]
    await produce(kafka, events)
    with receivers() as receiver:
        healthy = receiver()
        config = config_of(
            {
                "name": "down",
                "url": f"http://127.0.0.1:{port}/hook",
                "circuit_breaker": NO_BREAKER,
            },
            {"name": "up", "url": healthy.url},
        )
        settings = settings_for(kafka, s3)
        async with running(settings, config):
            await wait_for(lambda: len(healthy.delivered()) == 6, "the healthy endpoint")
            letters = await wait_dead_letters(kafka, "down", 6)
        assert [d.event_id for d in letters] == sorted(e.event_id for e in events)
        for letter in letters:
            # 0, 0.2, 0.7, 1.7 s (+- jitter), maybe 2.7 s; the next would be past 3 s.
            assert letter.reason == "expired" and letter.attempts >= 3
            assert letter.last_status is None
            assert letter.last_error is not None and "ConnectError" in letter.last_error
        assert metric(
            "fleetgate_connector_deliveries_total", endpoint="down", result="failure"
        ) == sum(letter.attempts for letter in letters)

        back = receiver(port=port)  # the endpoint is up again
        report = await replay(settings, config, "down")
        assert (report.delivered, report.failed) == (6, 0)
        assert sorted(back.delivered_ids()) == sorted(e.event_id for e in events)
        accounted(events, back, [])


async def test_an_endpoint_that_answers_400(kafka: str, s3: S3) -> None:
    rejecting = threading.Event()
    rejecting.set()

    def respond(headers: dict[str, str], body: bytes) -> int:
        return 400 if rejecting.is_set() and headers["webhook-id"] == "failed-1" else 200

    events = [failed(n) for n in range(4)]  # one device: one partition, in order
    await produce(kafka, events)
    with receivers() as receiver:
        strict = receiver(respond)
        config = config_of({"name": "rejects", "url": strict.url})
        settings = settings_for(kafka, s3)
        async with running(settings, config):
            await wait_for(lambda: len(strict.delivered()) == 3, "the three others")
            (letter,) = await wait_dead_letters(kafka, "rejects", 1)
        # Straight to the dead letters: one attempt, no retry; the next events not held up.
        assert (letter.event_id, letter.reason, letter.attempts) == ("failed-1", "rejected", 1)
        assert letter.last_status == 400 and letter.last_error == "HTTP 400"
        assert len(strict.attempts("failed-1")) == 1
        assert metric("fleetgate_connector_retries_total", endpoint="rejects") == 0
        assert (
            metric("fleetgate_connector_deliveries_total", endpoint="rejects", result="rejected")
            == 1
        )
        accounted(events, strict, [letter])

        rejecting.clear()
        report = await replay(settings, config, "rejects")
        assert (report.delivered, report.failed) == (1, 0)
        last = strict.snapshot()[-1]
        assert last.ok and last.event_id == "failed-1"

        # Delivered by a replay: the next one does not send it again.
        rejecting.set()
        report = await replay(settings, config, "rejects")
        assert (report.delivered, report.already) == (0, 1)


async def test_429_with_retry_after(kafka: str, s3: S3) -> None:
    seen: Counter[str] = Counter()

    def respond(headers: dict[str, str], body: bytes) -> Answer:
        event_id = headers["webhook-id"]
        seen[event_id] += 1
        if event_id == "failed-1" and seen[event_id] == 1:
            return 429, {"Retry-After": "1"}
        if event_id == "failed-2" and seen[event_id] == 1:
            return 429, {"Retry-After": "3600"}  # later than max_age (3 s)
        return 200

    events = [failed(1, _imei(1)), failed(2, _imei(2))]
    await produce(kafka, events)
    with receivers() as receiver:
        busy = receiver(respond)
        config = config_of({"name": "busy", "url": busy.url})
        settings = settings_for(kafka, s3)
        async with running(settings, config):
            await wait_for(lambda: "failed-1" in busy.delivered_ids(), "failed-1 in the end")
            (letter,) = await wait_dead_letters(kafka, "busy", 1)
        first, second = busy.attempts("failed-1")
        # Not on the 200 ms step: on the 1 s one, as the endpoint asked.
        assert second.at - first.at >= 0.98
        assert (letter.event_id, letter.reason, letter.last_status) == ("failed-2", "expired", 429)
        assert letter.attempts == 1
        accounted(events, busy, [letter])

        report = await replay(settings, config, "busy")
        assert (report.delivered, report.failed) == (1, 0)
        assert busy.delivered_ids().count("failed-2") == 1


async def test_a_private_destination_is_refused_and_dead_lettered(kafka: str, s3: S3) -> None:
    events = [failed(1), failed(2)]
    await produce(kafka, events)
    with receivers() as receiver:
        inside = receiver()
        url = f"http://localhost:{inside.port}/hook"  # a name: checked when resolved
        config = config_of({"name": "ssrf", "url": url, "allow_private_network": False})
        settings = settings_for(kafka, s3)
        async with running(settings, config):
            letters = await wait_dead_letters(kafka, "ssrf", 2)
        assert inside.snapshot() == []  # nothing was sent
        for letter in letters:
            assert letter.reason == "refused" and letter.attempts == 0
            assert letter.last_error is not None
            assert "localhost resolves to" in letter.last_error
            assert "loopback" in letter.last_error
        assert (
            metric("fleetgate_connector_deliveries_total", endpoint="ssrf", result="refused") == 2
        )
        assert metric("fleetgate_connector_retries_total", endpoint="ssrf") == 0  # no loop

        # The operator decides it is fine: allowed, the replay delivers them.
        allowed = config_of({"name": "ssrf", "url": url, "allow_private_network": True})
        report = await replay(settings, allowed, "ssrf")
        assert (report.delivered, report.failed) == (2, 0)
        assert sorted(inside.delivered_ids()) == ["failed-1", "failed-2"]


async def test_filters_by_type_device_camera_and_media(kafka: str, s3: S3) -> None:
    a, b = _imei(1), _imei(2)
    events: list[FileStored | FileFailed] = [
        stored(1, a),  # dualcam photo
        stored(2, a, camera="dualcam", media="video"),
        stored(3, b, camera="dsm", media="photo"),
        failed(4, b),
        stored(5, b, camera="adas", media="video"),
    ]
    await produce(kafka, events)
    with receivers() as receiver:
        photos, device_b, cameras, everything = receiver(), receiver(), receiver(), receiver()
        config = config_of(
            {
                "name": "f-photos",
                "url": photos.url,
                "filter": {"types": ["file.stored"], "media": ["photo"]},
            },
            {"name": "f-device", "url": device_b.url, "filter": {"imeis": [b]}},
            {"name": "f-cameras", "url": cameras.url, "filter": {"cameras": ["dsm", "adas"]}},
            {"name": "f-all", "url": everything.url},
        )
        async with running(settings_for(kafka, s3), config):
            # Each endpoint is its own consumer: wait for every one, not just f-all.
            expected = {everything: 5, photos: 2, device_b: 3, cameras: 2}
            await wait_for(
                lambda: all(len(r.delivered()) >= n for r, n in expected.items()),
                "every endpoint's deliveries",
            )
            await wait_for(
                lambda: (
                    sum(
                        metric("fleetgate_connector_filtered_total", endpoint=name)
                        for name in ("f-photos", "f-device", "f-cameras")
                    )
                    == 3 + 2 + 3
                ),
                "the filtered-out events counted",
            )
            assert sorted(photos.delivered_ids()) == ["stored-1", "stored-3"]
            assert sorted(device_b.delivered_ids()) == ["failed-4", "stored-3", "stored-5"]
            assert sorted(cameras.delivered_ids()) == ["stored-3", "stored-5"]
    assert metric("fleetgate_connector_filtered_total", endpoint="f-all") == 0


async def test_rate_limit_and_concurrency_cap_hold_at_the_receiver(kafka: str, s3: S3) -> None:
    def slowly(headers: dict[str, str], body: bytes) -> int:
        time.sleep(0.15)
        return 200

    events = [failed(n, _imei(n)) for n in range(16)]  # over the 4 partitions
    await produce(kafka, events)
    with receivers() as receiver:
        limited, capped, free = receiver(), receiver(slowly), receiver(slowly)
        config = config_of(
            {"name": "limited", "url": limited.url, "rate_limit_per_second": 20},
            {"name": "capped", "url": capped.url, "max_concurrency": 2},
            {"name": "uncapped", "url": free.url},
        )
        async with running(settings_for(kafka, s3), config):
            await wait_for(
                lambda: all(len(r.delivered()) == 16 for r in (limited, capped, free)),
                "16 deliveries to each",
            )
    # 20/s: one every 50 ms. Measured at the receiver (a thread of this process, on a shared
    # machine), a stall can bunch a few arrivals, so the typical gap and the whole span are
    # checked here; that the limiter itself never bursts, even when its waiters wake late,
    # is a unit test (test_rate_limiter_does_not_burst_when_its_waiters_wake_late).
    arrivals = [r.at for r in limited.snapshot()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert statistics.median(gaps) > 0.05 * 0.8
    assert arrivals[-1] - arrivals[0] > 15 * 0.05 - 0.06
    assert capped.max_in_flight == 2
    assert free.max_in_flight >= 3  # without the cap the partitions go in parallel


async def test_the_circuit_breaker_opens_and_probes(kafka: str, s3: S3) -> None:
    down = threading.Event()
    down.set()
    events = [failed(n, _imei(n)) for n in range(10)]
    await produce(kafka, events)
    with receivers() as receiver:
        flaky = receiver(lambda headers, body: 503 if down.is_set() else 200)
        config = config_of(
            {
                "name": "breaker",
                "url": flaky.url,
                "circuit_breaker": {"failures": 3, "open_seconds": "800ms"},
            },
            retry=FAST_RETRY | {"max_age": "60s"},
        )
        state = "fleetgate_connector_circuit_state"
        async with running(settings_for(kafka, s3), config):
            await wait_for(lambda: metric(state, endpoint="breaker") == 2, "the breaker open")
            opened = time.time()
            await wait_for(lambda: time.time() - opened > 2.9, "three cool-downs", within=5)
            during = [r for r in flaky.snapshot() if r.at > opened + 0.05]
            # Open: no request for 800 ms, then one probe, which fails: open again ...
            assert 2 <= len(during) <= 4
            assert all(b.at - a.at > 0.7 for a, b in itertools.pairwise(during))
            assert len(flaky.snapshot()) <= 4 + 4  # 10 events, yet hardly any requests
            down.clear()  # ... until a probe succeeds: closed, everything goes through
            await wait_for(lambda: len(flaky.delivered()) == 10, "all ten after recovery")
            await wait_for(lambda: metric(state, endpoint="breaker") == 0, "the breaker closed")
    assert await dead_letters(kafka, "breaker") == []
    accounted(events, flaky, [])

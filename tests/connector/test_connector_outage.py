"""One endpoint down for two minutes while the others keep their normal latency.

Events flow at a steady rate the whole time. The healthy endpoints' latency (produced ->
received) is measured before the outage (baseline) and during it, in the same test, and must
stay at its normal level. Two endpoints fail meanwhile, in the two ways that hurt most: one
refuses connections (down), one accepts them and never answers (hangs past its timeout). When
they come back, every event reaches them too: none is lost, none dead-lettered.

This test takes a little over two minutes on purpose; `make test` runs it like any other.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

from aiokafka import AIOKafkaProducer

from contracts import Topic, encode
from tests.conftest import S3
from tests.connector.connector_helpers import (
    Receiver,
    config_of,
    dead_letters,
    failed,
    metric,
    receivers,
    running,
    settings_for,
    wait_for,
)

RATE = 20  # events a second
BASELINE_SECONDS = 15.0  # a measurement window, like the outage
OUTAGE_SECONDS = 120.0


def _latencies(receiver: Receiver, produced: dict[str, float], ids: set[str]) -> list[float]:
    first: dict[str, float] = {}
    for request in receiver.delivered():
        if request.event_id in ids and request.event_id not in first:
            first[request.event_id] = request.at - produced[request.event_id]
    return sorted(first.values())


def _stats(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100)
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(cuts[94] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


async def test_one_endpoint_down_for_two_minutes_does_not_slow_the_others(
    kafka: str, s3: S3
) -> None:
    hang = threading.Event()
    release = threading.Event()

    def hanging(headers: dict[str, str], body: bytes) -> int:
        if hang.is_set():
            release.wait(OUTAGE_SECONDS + 60)
            return 503  # the connector gave up on this request long ago
        return 200

    produced: dict[str, float] = {}
    phases: dict[str, set[str]] = {
        "warm-up": set(),
        "baseline": set(),
        "outage": set(),
        "after": set(),
    }
    phase = "warm-up"
    producing = True

    async def produce_steadily() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=0)
        await producer.start()
        try:
            n = 0
            started = time.monotonic()
            while producing:
                event = failed(n, imei=f"35630704{n % 97:07d}")  # all partitions
                produced[event.event_id] = time.time()
                phases[phase].add(event.event_id)
                await producer.send(str(Topic.FILES), encode(event), key=event.imei.encode())
                n += 1
                await asyncio.sleep(max(0.0, started + n / RATE - time.monotonic()))
            await producer.flush()
        finally:
            await producer.stop()

    def received(*endpoint: Receiver) -> set[str]:
        return {i for r in endpoint for i in r.delivered_ids()}

    with receivers() as receiver:
        healthy_a, healthy_b, down = receiver(), receiver(), receiver()
        slow = receiver(hanging)
        down_port = down.port
        config = config_of(
            {"name": "out-healthy-a", "url": healthy_a.url},
            {"name": "out-healthy-b", "url": healthy_b.url},
            {
                "name": "out-down",
                "url": down.url,
                "timeout_seconds": 2,
                "circuit_breaker": {"failures": 5, "open_seconds": "5s"},
            },
            {
                "name": "out-hangs",
                "url": slow.url,
                "timeout_seconds": 2,
                "circuit_breaker": {"failures": 5, "open_seconds": "5s"},
            },
            retry={"schedule": ["1s", "5s", "10s"], "max_age": "10m"},
        )
        settings = settings_for(kafka, s3)
        async with running(settings, config):
            producer = asyncio.create_task(produce_steadily())
            try:
                # Until every endpoint has joined its group and delivers: then the baseline.
                await wait_for(
                    lambda: all(r.delivered() for r in (healthy_a, healthy_b, down, slow)),
                    "the first deliveries",
                )
                phase = "baseline"
                await asyncio.sleep(BASELINE_SECONDS)

                phase = "outage"
                # Connection refused from now on; closed off the event loop, which the
                # connector under test shares.
                await asyncio.to_thread(down.close)
                hang.set()  # accepts, never answers
                await asyncio.sleep(OUTAGE_SECONDS)

                phase = "after"
                release.set()
                hang.clear()
                back = receiver(port=down_port)
                # Events keep coming until the recovered endpoints take new ones again.
                await wait_for(
                    lambda: (
                        bool(phases["after"] & received(back))
                        and bool(phases["after"] & received(slow))
                    ),
                    "new events reaching the recovered endpoints",
                    within=60,
                )
            finally:
                producing = False
                await producer

            everything = set(produced)

            await wait_for(lambda: received(healthy_a) >= everything, "out-healthy-a")
            await wait_for(lambda: received(healthy_b) >= everything, "out-healthy-b")
            # The two that were out get everything too, from the retry topics: none lost.
            await wait_for(lambda: received(down, back) >= everything, "out-down", within=90)
            await wait_for(lambda: received(slow) >= everything, "out-hangs", within=90)
            assert metric("fleetgate_connector_circuit_state", endpoint="out-down") == 0

    assert await dead_letters(kafka) == []
    figures = {}
    for name, got in (("a", healthy_a), ("b", healthy_b)):
        base = _latencies(got, produced, phases["baseline"])
        during = _latencies(got, produced, phases["outage"])
        figures[name] = {"baseline": _stats(base), "outage": _stats(during)}
        assert len(during) == len(phases["outage"])  # every event, at once
        # Normal latency: the outage adds nothing beyond noise.
        assert statistics.median(during) <= statistics.median(base) * 1.5 + 0.010
        cuts_base = statistics.quantiles(base, n=100)
        cuts_during = statistics.quantiles(during, n=100)
        assert cuts_during[94] <= cuts_base[94] * 2 + 0.020
        # Never a timeout's worth of delay (the hanging endpoint's 2 s); the median and p95
        # above hold the typical case to the baseline.
        assert max(during) < 2.0
    retried = metric("fleetgate_connector_retries_total", endpoint="out-down")
    failures = metric("fleetgate_connector_deliveries_total", endpoint="out-down", result="failure")
    print(
        f"\nhealthy latency {figures}; {len(phases['outage'])} events during the outage; "
        f"out-down: {retried:.0f} retry records, {failures:.0f} failed attempts"
    )

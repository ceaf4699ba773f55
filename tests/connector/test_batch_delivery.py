"""``batch``: records of one device in one POST, on a real broker with real HTTP receivers.

N records of a device arrive in ceil(N / max_records) POSTs, each of one device, in order, the
last one sent once it waited max_wait; a failing receiver gets the whole batch again (same
webhook-id, same body, signed), then it is parked (one dead letter per record) and a replay
sends it again as a batch; offsets are committed only past delivered or parked batches, so a
restart with a batch still open resends it. Nothing is lost."""

from __future__ import annotations

import base64
import math
import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from standardwebhooks import Webhook

from connector.batch import batch_id
from connector.replay import replay
from connector.settings import ConnectorSettings
from contracts import Topic, encode
from contracts.dmt import telemetry_record
from contracts.records import TelemetryRecord
from tests.conftest import S3
from tests.connector.connector_helpers import (
    DEADLINE,
    Received,
    committed_offsets,
    config_of,
    metric,
    receivers,
    running,
    settings_for,
    wait_dead_letters,
    wait_for,
)
from tests.dmt_e2e.dmt_helpers import tracker
from tests.helpers import eventually_async

SECRET = "whsec_" + base64.b64encode(b"batch secret of 32 bytes long...").decode()
A = "352093081111111"
B = "352093082222222"


def device_records(imei: str, count: int, serial: int) -> list[TelemetryRecord]:
    device = tracker(imei, records=count, serial=serial)
    return [
        telemetry_record(
            record,
            device.hello,
            session_id="s1",
            ingestor="i1",
            received_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        )
        for record in device.pending
    ]


async def produce_records(
    kafka: str, values: list[TelemetryRecord], partition: int | None = None
) -> dict[int, int]:
    """Publish like the ingestor (key = IMEI); the end offset of each partition written to."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=1)
    await producer.start()
    try:
        ends: dict[int, int] = {}
        for value in values:
            meta = await producer.send_and_wait(
                str(Topic.RECORDS), encode(value), key=value.imei.encode(), partition=partition
            )
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        return ends
    finally:
        await producer.stop()


def oem_records(post: Received) -> tuple[str, list[int]]:
    """The IMEI and the sequence numbers of an OEM-format POST."""
    body: dict[str, Any] = post.json()
    return body["IMEI"], [r["SeqNo"] for r in body["Records"]]


def by_device(posts: list[Received]) -> dict[str, list[list[int]]]:
    grouped: dict[str, list[list[int]]] = defaultdict(list)
    for post in posts:
        imei, sequences = oem_records(post)
        grouped[imei].append(sequences)
    return grouped


def delivered_records(posts: list[Received]) -> int:
    return sum(len(oem_records(p)[1]) for p in posts)


async def committed(kafka: str, endpoint: str) -> dict[int, int]:
    group = f"{ConnectorSettings().connector_group_prefix}-{endpoint}"
    return await committed_offsets(kafka, group, str(Topic.RECORDS))


async def wait_committed(kafka: str, endpoint: str, ends: dict[int, int]) -> None:
    async def done() -> bool:
        got = await committed(kafka, endpoint)
        return all(got.get(p, -1) >= end for p, end in ends.items())

    await eventually_async(done, DEADLINE, f"{endpoint}: offsets {ends} committed")


def batched(name: str, url: str, max_records: int, max_wait: Any, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "url": url,
        "format": "oem",
        "secrets": [SECRET],
        "batch": {"max_records": max_records, "max_wait_seconds": max_wait},
    } | extra


def ids_of(records: list[TelemetryRecord]) -> dict[tuple[str, int], TelemetryRecord]:
    return {(r.imei, r.sequence): r for r in records}


async def test_records_of_one_device_arrive_in_batches(kafka: str, s3: S3) -> None:
    a, b = device_records(A, 7, serial=1), device_records(B, 3, serial=2)
    mixed = [r for pair in zip(a, b, strict=False) for r in pair] + a[len(b) :]
    ends = await produce_records(kafka, mixed)
    known = ids_of(a + b)
    with receivers() as receiver:
        hook = receiver()
        config = config_of(batched("batched", hook.url, 3, "2s"))
        async with running(settings_for(kafka, s3), config):
            await wait_for(lambda: delivered_records(hook.delivered()) == 10, "10 records")
            await wait_committed(kafka, "batched", ends)
        posts = hook.delivered()
    grouped = by_device(posts)
    # ceil(N / max_records) POSTs per device, each of that device only, in order.
    assert len(grouped[A]) == math.ceil(7 / 3) and len(grouped[B]) == math.ceil(3 / 3)
    assert len(posts) == 4
    assert [s for batch in grouped[A] for s in batch] == [r.sequence for r in a]
    assert [len(batch) for batch in grouped[A]] == [3, 3, 1]  # the last: sent after max_wait
    assert grouped[B] == [[r.sequence for r in b]]
    for post in posts:
        imei, sequences = oem_records(post)
        # One id per batch, of its records; signed like any webhook.
        assert post.event_id == batch_id([known[(imei, s)] for s in sequences])
        Webhook(SECRET).verify(post.body, post.headers)


async def test_a_failing_receiver_gets_the_batch_again_then_it_is_parked_and_replayed(
    kafka: str, s3: S3
) -> None:
    sent = device_records(A, 6, serial=1)
    ends = await produce_records(kafka, sent)
    known = ids_of(sent)
    lock = threading.Lock()
    seen: set[str] = set()
    down = threading.Event()
    down.set()

    def once(headers: dict[str, str], body: bytes) -> int:
        """Each batch fails once (503: retried), then is taken."""
        with lock:
            first = headers["webhook-id"] not in seen
            seen.add(headers["webhook-id"])
        return 503 if first else 200

    with receivers() as receiver:
        flaky = receiver(once)
        gone = receiver(lambda headers, body: 503 if down.is_set() else 200)
        config = config_of(
            batched("flaky", flaky.url, 4, "1s"),
            batched("gone", gone.url, 4, "1s"),
        )
        settings = settings_for(kafka, s3)
        async with running(settings, config):
            await wait_for(lambda: delivered_records(flaky.delivered()) == 6, "flaky: 6 records")
            letters = await wait_dead_letters(kafka, "gone", 6)
            await wait_committed(kafka, "flaky", ends)
            await wait_committed(kafka, "gone", ends)
        # Retried as a whole: every batch twice, the same id and body; delivered once.
        attempts = flaky.snapshot()
        assert len(attempts) == 4 and len(flaky.delivered()) == 2
        for post in flaky.delivered():
            (failed,) = [p for p in attempts if p.event_id == post.event_id and not p.ok]
            assert failed.body == post.body and failed.status == 503
            Webhook(SECRET).verify(post.body, post.headers)
        assert by_device(flaky.delivered())[A] == [[r.sequence for r in sent[:4]], [5, 6]]
        # Parked after retries (max age 3 s): one dead letter per record, nothing lost.
        tried: dict[str, int] = defaultdict(int)
        for post in gone.snapshot():
            tried[post.event_id] += 1
        assert len(tried) == 2 and min(tried.values()) >= 2
        assert sorted(d.event_id for d in letters) == sorted(r.record_id for r in sent)
        for letter in letters:
            assert letter.reason == "expired" and letter.last_status == 503
            assert letter.attempts >= 2 and letter.event in sent
            assert letter.source is not None and letter.source.startswith("fleetgate.records.v1/")
        # Back up: a replay sends the parked records as batches again, each record once.
        down.clear()
        before = len(gone.snapshot())
        report = await replay(settings, config, "gone")
        assert report.ok and report.delivered == 6
        replayed = gone.snapshot()[before:]
        assert [oem_records(p) for p in replayed] == [
            (A, [r.sequence for r in sent[:4]]),
            (A, [r.sequence for r in sent[4:]]),
        ]
        for post in replayed:
            _, sequences = oem_records(post)
            assert post.event_id == batch_id([known[(A, s)] for s in sequences])
            Webhook(SECRET).verify(post.body, post.headers)
        again = await replay(settings, config, "gone")
        assert again.delivered == 0 and again.already == 6


async def test_an_open_batch_holds_its_offsets_back_until_it_is_sent(kafka: str, s3: S3) -> None:
    """Stopped while a batch waits: nothing past it is committed, so the next run sends it."""
    waiting = device_records(A, 2, serial=1)
    other = device_records(B, 1, serial=2)
    ends = await produce_records(kafka, waiting + other, partition=0)
    first_offset = ends[0] - 3
    settings = settings_for(kafka, s3)
    filtered = "fleetgate_connector_filtered_total"
    with receivers() as receiver:
        hook = receiver()
        held = batched("held", hook.url, 10, "300s", filter={"imeis": [A]})
        before = metric(filtered, endpoint="held")
        async with running(settings, config_of(held)):
            # B's record, after A's two, was read (and left out by the filter): A's are in hand.
            await wait_for(lambda: metric(filtered, endpoint="held") > before, "B's record read")
        assert hook.snapshot() == []
        assert (await committed(kafka, "held")).get(0, 0) <= first_offset
        # The same endpoint (its group) with a short wait: the batch goes out, then is committed.
        soon = batched("held", hook.url, 10, "200ms", filter={"imeis": [A]})
        async with running(settings, config_of(soon)):
            await wait_for(lambda: len(hook.delivered()) == 1, "the batch sent")
            await wait_committed(kafka, "held", ends)
        assert by_device(hook.delivered()) == {A: [[r.sequence for r in waiting]]}

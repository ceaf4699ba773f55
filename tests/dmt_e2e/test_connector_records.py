"""Telemetry records as webhooks: selected per endpoint by the type filter, retried, dead-
lettered and replayed like file events."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from connector.replay import replay
from contracts import Topic, encode
from contracts.dmt import telemetry_record
from contracts.records import RecordWebhook, TelemetryRecord
from tests.conftest import S3
from tests.connector.connector_helpers import (
    config_of,
    produce,
    receivers,
    running,
    settings_for,
    stored,
    wait_dead_letters,
    wait_for,
)
from tests.dmt_e2e.dmt_helpers import tracker

IMEI = "352093081234567"


def records(count: int) -> list[TelemetryRecord]:
    device = tracker(IMEI, records=count)
    hello = device.hello
    return [
        telemetry_record(
            record,
            hello,
            session_id="s1",
            ingestor="i1",
            received_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        )
        for record in device.pending
    ]


async def produce_records(kafka: str, values: list[TelemetryRecord]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=1)
    await producer.start()
    try:
        for value in values:
            await producer.send(str(Topic.RECORDS), encode(value), key=value.imei.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def test_records_reach_the_endpoints_whose_filter_picks_them(kafka: str, s3: S3) -> None:
    sent = records(3)
    await produce(kafka, [stored(1)])
    await produce_records(kafka, sent)
    rejected = sent[1].record_id
    tries: dict[str, int] = {}
    lock = threading.Lock()

    def flaky(headers: dict[str, str], body: bytes) -> int:
        """Each record fails once (503: retried); one is refused (400: dead letter)."""
        event_id = headers["webhook-id"]
        with lock:
            tries[event_id] = tries.get(event_id, 0) + 1
            first = tries[event_id] == 1
        if event_id == rejected:
            return 400
        return 503 if first else 200

    with receivers() as receiver:
        everything, files, telemetry = receiver(), receiver(), receiver(flaky)
        config = config_of(
            {"name": "everything", "url": everything.url},
            {"name": "files", "url": files.url, "filter": {"types": ["file.stored"]}},
            {"name": "telemetry", "url": telemetry.url, "filter": {"types": ["record"]}},
        )
        settings = settings_for(kafka, s3)
        async with running(settings, config):
            await wait_for(
                lambda: (
                    len(everything.delivered()) == 4
                    and len(files.delivered()) == 1
                    and len(telemetry.delivered()) == 2
                ),
                "files and records at the endpoints that want them",
            )
            letters = await wait_dead_letters(kafka, "telemetry", 1)
        assert sorted(everything.delivered_ids()) == sorted(
            ["stored-1", *(r.record_id for r in sent)]
        )
        assert files.delivered_ids() == ["stored-1"]
        assert sorted(telemetry.delivered_ids()) == sorted(
            r.record_id for r in sent if r.record_id != rejected
        )
        by_id = {r.record_id: r for r in sent}
        for request in [*everything.delivered(), *telemetry.delivered()]:
            if request.event_id == "stored-1":
                continue
            body = RecordWebhook.model_validate_json(request.body)
            assert body.type == "record" and body.data == by_id[request.event_id]
            assert body.timestamp == by_id[request.event_id].device_time
        # The refused record is parked with why, and a replay delivers it.
        (letter,) = letters
        assert letter.reason == "rejected" and letter.event_id == rejected
        assert letter.event == by_id[rejected]
        rejected = "none any more"
        report = await replay(settings, config, "telemetry")
        assert report.delivered == 1 and report.ok
        assert sent[1].record_id in telemetry.delivered_ids()

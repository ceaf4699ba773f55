"""``fleetgate connector replay`` for a raw TCP forwarding endpoint.

``--dead-letters``: the endpoint's dead letters not delivered by an earlier replay, rebuilt
from the bytes they keep (``raw_hex``, ``hello_hex``). ``--since``: every record of
``fleetgate.dmt.raw.v1`` that arrived in the time range and passes the endpoint's filter.
Either way each device's records go in one session per run, in the order they were read, with
a few attempts each (the retry schedule's delays, capped); each record's outcome is written
to ``fleetgate.connector.replays.v1`` as for webhooks, so a second ``--dead-letters`` replay
does not send them twice.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from contracts import DeadLetter, ReplayOutcome, Topic, encode
from dmtproto import DmtDevice
from runtime.kafka import producer_kwargs

from ..config import ConnectorConfig, Endpoint
from ..replay import MAX_WAIT, ReplayReport, replayed_before, scan
from ..retry import Schedule
from ..settings import ConnectorSettings
from .plan import DeviceRun, Item, Target, Unusable, hello_of, read_item, runs
from .session import forward

__all__ = ["replay_forward"]

_log = structlog.get_logger("fleetgate.connector.replay")


async def replay_forward(
    settings: ConnectorSettings,
    config: ConnectorConfig,
    endpoint: Endpoint,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    attempts: int = 3,
) -> ReplayReport:
    report = ReplayReport(endpoint.name, "dead-letters" if since is None else "since")
    items: list[tuple[Item, str | None]] = []
    if since is None:
        items = await _dead_letters(settings, endpoint, report)
    else:
        items = await _since(settings, endpoint, report, since, until)
    letters = {item.record_id: letter for item, letter in items}
    producer = AIOKafkaProducer(**producer_kwargs(settings), client_id="fleetgate-connector-replay")
    await producer.start()
    try:
        schedule = Schedule.of(config.retry)
        target = Target.of(endpoint.url)
        slots = asyncio.Semaphore(endpoint.max_concurrency)

        async def device(device_runs: list[DeviceRun]) -> None:
            for run in device_runs:
                async with slots:
                    outcomes = await _forward_run(endpoint, target, run, attempts, schedule)
                for item, (delivered, made, error) in outcomes:
                    outcome = ReplayOutcome(
                        endpoint=endpoint.name,
                        event_id=item.record_id,
                        mode=report.mode,
                        delivered=delivered,
                        attempts=made,
                        error=error,
                        replayed_at=datetime.now(UTC),
                        dead_letter=letters[item.record_id],
                    )
                    await producer.send_and_wait(
                        str(Topic.REPLAYS), encode(outcome), key=endpoint.name.encode()
                    )
                    if delivered:
                        report.delivered += 1
                    else:
                        report.failed += 1
                        report.failures.append(f"{item.record_id}: {error}")

        await asyncio.gather(*(device(r) for r in runs([i for i, _ in items]).values()))
    finally:
        await producer.stop()
    return report


async def _forward_run(
    endpoint: Endpoint, target: Target, run: DeviceRun, attempts: int, schedule: Schedule
) -> list[tuple[Item, tuple[bool, int, str | None]]]:
    """Up to ``attempts`` sessions for the run; each record: (delivered, sessions, error)."""
    device = DmtDevice(hello_of(run.hello), hello_message=run.hello)
    results: list[tuple[Item, tuple[bool, int, str | None]]] = []
    error: str | None = None
    for n in range(1, attempts + 1):
        device.pending = [item.record for item in run.items]
        outcome = await forward(
            target,
            device,
            wait_seconds=endpoint.timeout_seconds,
            allow_private=endpoint.allow_private_network,
        )
        results += [(item, (True, n, None)) for item in run.items[: outcome.committed]]
        del run.items[: outcome.committed]
        if not run.items:
            return results
        error = outcome.error
        _log.warning(
            "replay_attempt_failed",
            endpoint=endpoint.name,
            imei=run.imei,
            attempt=n,
            remaining=len(run.items),
            error=error,
        )
        if outcome.refused or n == attempts:
            break
        await asyncio.sleep(min(schedule.delays[min(n - 1, schedule.last)], MAX_WAIT))
    return results + [(item, (False, attempts, error)) for item in run.items]


async def _dead_letters(
    settings: ConnectorSettings, endpoint: Endpoint, report: ReplayReport
) -> list[tuple[Item, str | None]]:
    earlier = await replayed_before(settings, endpoint.name)
    seen: set[str] = set()
    out: list[tuple[Item, str | None]] = []
    async for record in scan(settings, str(Topic.DEADLETTER)):
        if record.key is not None and record.key != endpoint.name.encode():
            continue
        try:
            letter = DeadLetter.model_validate_json(record.value)
        except (ValidationError, ValueError):
            report.skipped += 1
            continue
        if letter.endpoint != endpoint.name:
            continue
        done = earlier.get(letter.event_id)
        if letter.event_id in seen or (done is not None and done >= letter.dead_lettered_at):
            report.already += 1
            continue
        if letter.raw_hex is None or letter.hello_hex is None:
            report.skipped += 1  # not a forwarding dead letter: no bytes to send
            continue
        hello = bytes.fromhex(letter.hello_hex)
        try:
            item = read_item(
                letter.event.imei.encode(),
                bytes.fromhex(letter.raw_hex),
                [],
                letter.source or "",
                {letter.event.imei: hello},
            )
        except (Unusable, ValueError):
            report.skipped += 1
            continue
        if item is None:
            report.skipped += 1
            continue
        seen.add(letter.event_id)
        out.append((item, f"{record.partition}/{record.offset}"))
    return out


async def _since(
    settings: ConnectorSettings,
    endpoint: Endpoint,
    report: ReplayReport,
    since: datetime,
    until: datetime | None,
) -> list[tuple[Item, str | None]]:
    start = since.timestamp() * 1000
    end = None if until is None else until.timestamp() * 1000
    hellos: dict[str, bytes] = {}
    out: list[tuple[Item, str | None]] = []
    async for record in scan(settings, str(Topic.DMT_RAW)):
        source = f"{record.topic}/{record.partition}/{record.offset}"
        try:
            item = read_item(record.key, record.value, record.headers, source, hellos)
        except Unusable:
            report.skipped += 1
            continue
        if item is None or record.timestamp < start:
            continue
        if end is not None and record.timestamp >= end:
            continue
        if not endpoint.accepts("record", item.imei, None, None):
            report.filtered += 1
            continue
        out.append((item, None))
    return out

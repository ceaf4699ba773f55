"""``fleetgate devices``: the device registry (``fleetgate.devices.v1``) as a table or JSON.

The topic is compacted, keyed by IMEI: the command reads it from the beginning to the end
each partition had when the read started (the high watermark of the fetch answers), keeps the
last status of each IMEI, and prints them by IMEI.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from contracts import Topic
from contracts.records import DeviceStatus
from runtime import CommonSettings
from runtime.cli import add_settings_arguments, settings_from_args
from runtime.kafka import KafkaSettings, consumer_kwargs, partitions_of

__all__ = ["add_arguments", "read_registry", "render_table", "run"]

#: A partition whose end is still unknown after this long without records is taken as read.
IDLE_SECONDS = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON array of statuses")
    parser.add_argument(
        "--timeout-seconds", type=float, default=60.0, help="longest wait for the broker"
    )
    add_settings_arguments(parser, CommonSettings)


async def read_registry(settings: KafkaSettings) -> tuple[dict[str, DeviceStatus], int]:
    """IMEI -> the device's last status; and how many records did not decode."""
    consumer = AIOKafkaConsumer(
        **consumer_kwargs(settings),
        client_id="fleetgate-devices",
        group_id=None,
        enable_auto_commit=False,
    )
    devices: dict[str, DeviceStatus] = {}
    bad = 0
    await consumer.start()
    try:
        topic = str(Topic.DEVICES)
        # (not topics() + partitions_for_topic(): a real Kafka's answer to a consumer's own
        # metadata refresh holds only the topics it tracks, none yet: the registry looked empty)
        remaining = {TopicPartition(topic, p) for p in await partitions_of(consumer, topic)}
        if not remaining:
            return devices, bad
        consumer.assign(list(remaining))
        await consumer.seek_to_beginning(*remaining)
        idle_since = time.monotonic()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=200, max_records=5000)
            for records in batch.values():
                for record in records:
                    if record.value is None:  # a tombstone: the device was removed
                        if record.key is not None:
                            devices.pop(record.key.decode(errors="replace"), None)
                        continue
                    try:
                        status = DeviceStatus.model_validate_json(record.value)
                    except (ValidationError, ValueError):
                        bad += 1
                        continue
                    devices[status.imei] = status
            if any(batch.values()):
                idle_since = time.monotonic()
            for tp in list(remaining):
                end = consumer.highwater(tp)
                if end is not None and await consumer.position(tp) >= end:
                    remaining.discard(tp)
            if remaining and time.monotonic() - idle_since > IDLE_SECONDS:
                break  # the broker never told the end: what came is what there is
    finally:
        await consumer.stop()
    return dict(sorted(devices.items())), bad


def _number(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def render_table(devices: Sequence[DeviceStatus]) -> str:
    """A fixed-width table, one device a line."""
    header = (
        "IMEI", "PROTOCOLS", "PRODUCT", "FIRMWARE", "LAST SEEN (UTC)", "BATTERY", "SUPPLY",
        "TEMP", "SIGNAL", "LAST POSITION",
    )  # fmt: skip
    rows = [header]
    for d in devices:
        position = (
            "-"
            if d.last_position is None
            else f"{d.last_position.latitude:.5f},{d.last_position.longitude:.5f}"
        )
        rows.append(
            (
                d.imei,
                ",".join(d.protocols),
                d.product or ("-" if d.product_id is None else str(d.product_id)),
                d.firmware or "-",
                d.last_seen.strftime("%Y-%m-%d %H:%M:%S"),
                _number(d.battery_voltage, " V"),
                _number(d.supply_voltage, " V"),
                _number(d.temperature_c, " °C"),
                _number(d.signal),
                position,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(CommonSettings, args)

    async def main() -> tuple[dict[str, DeviceStatus], int]:
        async with asyncio.timeout(args.timeout_seconds):
            return await read_registry(settings)

    try:
        devices, bad = asyncio.run(main())
    except TimeoutError:
        print(
            f"fleetgate devices: error: no answer from Kafka at {settings.kafka_bootstrap} "
            f"within {args.timeout_seconds:g} s",
            file=sys.stderr,
        )
        return 1
    if args.json:
        payload = [d.model_dump(mode="json", by_alias=True) for d in devices.values()]
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_table(list(devices.values())))
        print(f"{len(devices)} devices")
    if bad:
        print(
            f"fleetgate devices: {bad} records that are no device status skipped", file=sys.stderr
        )
    return 0

"""Device registry benchmark: what each ingestor's view of ``fleetgate.devices.v1`` costs.

Figures (``--devices`` statuses, one per IMEI, each with every field a Digital Matter session
fills: identity, last connection, power, temperature, signal, a full position):

- ``registry_bytes_per_device``: memory the view holds per device (the encoded status, its
  ``updated_at`` and the dict entry; Python allocations measured by tracemalloc);
  ``registry_model_bytes_per_device``: the same if the view held decoded ``DeviceStatus``
  models instead (why it does not);
- ``registry_status_bytes``: one encoded status;
- ``registry_get_us``: decoding a status when a session of its device starts;
- ``registry_catchup_s``: an ingestor's start-up read of the topic holding ``--devices``
  statuses on a real broker (Apache Kafka from ``make kafka``, or Tansu with ``--broker
  tansu``), until a poll returned nothing for ``registry_catchup_idle_seconds`` (0.3 s, in the
  figure); ``registry_catchup_records_per_s`` without that idle wait.

Run alone: ``python -m tests.bench.registry [--devices 100000] [--broker kafka|tansu]
[--json]``; ``make bench`` runs it too.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from contracts import Topic
from contracts.models import encode
from contracts.records import DeviceStatus, LastConnection, Position
from devstack.infra import create_topics, start_tansu, wait_kafka
from devstack.kafka import java_missing_reason, start_kafka
from ingestor.registry import DeviceRegistry, RegistryBook
from ingestor.settings import IngestorSettings

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def status(i: int) -> DeviceStatus:
    """Device ``i``'s status, every field set as a Digital Matter session sets them."""
    when = T0 + timedelta(seconds=i)
    return DeviceStatus(
        imei=f"35209308{i:07d}",
        protocols=["dmt"],
        last_seen=when,
        last_connection=LastConnection(
            session_id=f"{i:032x}",
            ingestor="fleetgate-ingestor-7d9f8c6b5-x2x7q",
            protocol="dmt",
            peer=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:41234",
            connected_at=when,
        ),
        serial=100000 + i,
        product_id=34,
        product="G62",
        hardware_revision=2,
        firmware="1.9",
        iccid=f"8961018000{i:010d}",
        battery_voltage=4.012,
        supply_voltage=12.481,
        temperature_c=21.5,
        signal=24,
        last_position=Position(
            latitude=-33.8 + i / 1e6,
            longitude=151.2 + i / 1e6,
            altitude_m=40,
            speed_m_s=10.0,
            heading_deg=90.0,
            accuracy_m=5,
            pdop=1.2,
            fix_time=when,
            valid=True,
        ),
        last_record_id=f"{i:032x}",
        last_record_time=when,
        updated_at=when,
    )


def memory(devices: int) -> dict[str, float]:
    values = [(s.imei.encode(), encode(s)) for s in map(status, range(devices))]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    book = RegistryBook()
    for key, value in values:
        book.offer(key, value)
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(book) == devices
    started = time.perf_counter()
    for i in range(0, devices, max(1, devices // 2000)):
        book.get(f"35209308{i:07d}")
    get_us = (time.perf_counter() - started) / len(range(0, devices, max(1, devices // 2000)))
    sample = min(devices, 20000)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    models = {s.imei: s for s in (DeviceStatus.model_validate_json(v) for _, v in values[:sample])}
    model_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(models) == sample
    return {
        "registry_devices": devices,
        "registry_status_bytes": sum(len(v) for _, v in values) / devices,
        # the book holds the same bytes objects as ``values``: count them in
        "registry_bytes_per_device": held / devices
        + sum(v.__sizeof__() for _, v in values) / devices,
        "registry_model_bytes_per_device": model_bytes / sample,
        "registry_get_us": get_us * 1e6,
    }


async def produce(bootstrap: str, devices: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                max_batch_size=512 * 1024)  # fmt: skip
    await producer.start()
    try:
        futures = [
            await producer.send(Topic.DEVICES, encode(s), key=s.imei.encode())
            for s in map(status, range(devices))
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def catch_up(bootstrap: str, devices: int) -> dict[str, float]:
    await wait_kafka(bootstrap, within=60)
    await create_topics(bootstrap)
    await produce(bootstrap, devices)
    settings = IngestorSettings(kafka_bootstrap=bootstrap, instance="bench")
    registry = DeviceRegistry(settings)
    started = time.perf_counter()
    try:
        await registry.start()
        seconds = time.perf_counter() - started
        assert registry.reader is not None
        read = registry.reader.records
    finally:
        await registry.stop()
    assert len(registry.book) == devices, (len(registry.book), read)
    idle = settings.registry_catchup_idle_seconds
    return {
        "registry_catchup_s": seconds,
        "registry_catchup_records_per_s": read / max(seconds - idle, 1e-9),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = memory(args.devices)
    broker = args.broker
    if broker == "kafka" and java_missing_reason() is not None:
        broker = "tansu"
    with tempfile.TemporaryDirectory() as tmp:
        if broker == "kafka":
            cluster = start_kafka(Path(tmp) / "kafka", 1)
            try:
                figures |= asyncio.run(catch_up(cluster.bootstrap, args.devices))
            finally:
                cluster.stop()
        else:
            tansu = start_tansu(log=Path(tmp) / "tansu.log")
            try:
                figures |= asyncio.run(catch_up(f"127.0.0.1:{tansu.port}", args.devices))
            finally:
                tansu.stop()
    figures["registry_broker"] = broker
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, value in figures.items():
            print(f"{name:40} {value:.3f}" if isinstance(value, float) else f"{name:40} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

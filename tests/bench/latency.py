"""Where a file's latency goes: last packet -> webhook, hop by hop, at low load.

Starts the pipeline as ``tests/bench/pipeline.py`` does (Tansu, s3rver, ingestor, assembler,
connector, webhook sink), with them logging at info, then sends
``--rounds`` rounds (after one left out as warm-up) of ``--cameras`` cameras (a photo and a
video each, paced to ``--rate`` bytes/s per camera), one round after the other, so the
pipeline is nearly idle. For every file it puts together, on the machine's one clock:

- the last packet leaving the simulated camera (the simulator);
- the ``end`` record created by the ingestor (its Kafka timestamp, read back from the chunk
  topic) and the ingestor's ``transfer`` line (``durable_seconds``: from just before that
  record until Kafka acknowledged every record of the file);
- the assembler's ``file_stored`` line: when it took the ``end`` record, waited for an S3
  slot (``queued_seconds``), uploaded (``upload_seconds``) and had ``file.stored``
  acknowledged (``announce_seconds``);
- the connector's ``delivered`` line (``duration_ms`` of the POST);
- the webhook sink's ``received_at``.

Prints the p50/p90/max of each hop and writes them as JSON (``--out``). Run:
``python -m tests.bench.latency [--rounds 8] [--cameras 1] [--env NAME=VALUE ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import Topic
from runtime.kafka import partitions_of
from simulator import ContentSpec, Faults, Fleet, SimulationConfig
from tests.bench.pipeline import Stack, percentile, say, until
from tests.bench.probes import TimedDevice, WebhookLog, epoch

#: The hops, in order, as (name, start mark, end mark).
HOPS = (
    ("ingestor: last packet -> end record created", "last_packet", "end_created"),
    ("ingestor: end record created -> acknowledged", "end_created", "end_acked"),
    ("assembler: end record acknowledged -> taken", "end_acked", "taken"),
    ("assembler: taken -> upload starts (S3 slot)", "taken", "upload_start"),
    ("assembler: S3 upload", "upload_start", "upload_end"),
    ("assembler: file.stored acknowledged", "upload_end", "announced"),
    ("connector: file.stored acknowledged -> POST starts", "announced", "post_start"),
    ("connector: POST -> webhook received", "post_start", "received"),
    ("total: last packet -> webhook received", "last_packet", "received"),
)


def log_lines(path: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` in ``path``."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if f'"{event}"' not in line or not line.startswith("{"):
            continue
        item = json.loads(line)
        if item.get("event") == event:
            found.append(item)
    return found


async def end_records(bootstrap: str) -> dict[str, float]:
    """Kafka timestamp (epoch s) of each transfer's ``end`` record on the chunk topic."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[str, float] = {}
    try:
        topic = str(Topic.CHUNKS)
        tps = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batch.values():
                for record in records:
                    headers = dict(record.headers)
                    if headers.get("fg-kind") == b"end" and record.key is not None:
                        found[record.key.decode()] = record.timestamp / 1000
    finally:
        await consumer.stop()
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="fleetgate-latency-"))
    env = dict(item.split("=", 1) for item in args.env)
    levels = {"ingestor": "info", "assembler": "info", "connector": "info"}
    stack = Stack(data, env=env, log_levels=levels)
    say(f"starting the stack in {data} (extra environment: {env or 'none'})")
    await stack.start()
    hooks = WebhookLog(stack.sink_out)
    content = ContentSpec(
        photos=1, videos=1, photo_size=50 * 1024, video_size=int(args.video_mib * 1024 * 1024)
    )
    files = 0
    warmup: set[Any] = set()
    try:
        for round_ in range(args.rounds + 1):  # round 0 warms up (group joins, connections)
            config = SimulationConfig(
                port=stack.camera_port,
                devices=args.cameras,
                content=content,
                seed=100 + round_,
                timeout=120,
                faults=Faults(slow=args.rate),
            )
            fleet = Fleet(config)
            fleet.devices = [TimedDevice(plan, config) for plan in fleet.plans]
            report = await fleet.run()
            files += args.cameras * content.files_per_device

            def arrived(wanted: int = files) -> bool:
                return hooks.poll() >= wanted

            await until(arrived, 60, f"{files} webhooks", every=0.05)
            say(f"round {round_}/{args.rounds}: {report.summary()}")
            if round_ == 0:
                warmup = {h.data.get("transfer_id") for h in hooks.seen}
            await asyncio.sleep(0.3)  # let the pipeline go idle between rounds
        ends = await end_records(stack.bootstrap)
        durable = {
            line["transfer"]: line["durable_seconds"]
            for line in log_lines(stack.log("ingestor"), "transfer")
            if "transfer" in line
        }
        stored = {
            line["transfer"]: line for line in log_lines(stack.log("assembler"), "file_stored")
        }
        delivered = {
            line["event_id"].removesuffix(".stored"): line
            for line in log_lines(stack.log("connector"), "delivered")
        }
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    traces = []
    for hook in hooks.seen:
        tid = hook.data.get("transfer_id", "")
        key = (hook.data.get("imei", ""), hook.data.get("file", {}).get("identifier", ""))
        if (
            tid in warmup
            or tid not in stored
            or tid not in delivered
            or key not in TimedDevice.last_packet
        ):
            continue
        line, post = stored[tid], delivered[tid]
        announced = epoch(line["timestamp"])
        upload_end = announced - line["announce_seconds"]
        upload_start = upload_end - line["upload_seconds"]
        post_end = epoch(post["timestamp"])
        traces.append(
            {
                "transfer": tid,
                "size": line["size"],
                "last_packet": TimedDevice.last_packet[key],
                "end_created": ends.get(tid),
                "end_acked": (ends[tid] + durable[tid] if tid in ends and tid in durable else None),
                "taken": upload_start - line["queued_seconds"],
                "upload_start": upload_start,
                "upload_end": upload_end,
                "announced": announced,
                "post_start": post_end - post["duration_ms"] / 1000,
                "received": hook.received,
            }
        )
    hops: dict[str, dict[str, float | None]] = {}
    for name, start, end in HOPS:
        values = [t[end] - t[start] for t in traces if t[start] is not None and t[end] is not None]
        hops[name] = {
            "p50": percentile(values, 50),
            "p90": percentile(values, 90),
            "max": max(values) if values else None,
        }
    return {"files": len(traces), "env": env, "args": vars(args), "hops": hops, "traces": traces}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--cameras", type=int, default=1, help="cameras uploading at once")
    parser.add_argument("--video-mib", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=2e6, help="bytes/s per camera")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="for the services"
    )
    parser.add_argument("--out", type=Path, default=Path("build/bench/latency.json"))
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"{report['files']} files; seconds per hop (p50 / p90 / max):")
    for name, row in report["hops"].items():
        cells = " / ".join("-" if v is None else f"{v:.3f}" for v in row.values())
        print(f"  {name:<52} {cells}")
    return 0 if report["files"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`, part two: the whole local pipeline against the machine's own limits.

Starts what ``fleetgate devstack`` starts (Tansu, s3rver, ingestor, assembler, connector as
processes, a local webhook sink), with the same infrastructure functions, then runs:

1. limits: loopback TCP, raw aiokafka produce (record size and acks as the ingestor's), raw
   S3 PUT of the fleet's object sizes;
2. saturation: every simulated camera uploads at once; device ingest MB/s, CPU seconds per
   MB of file of every process, assembler MB/s;
3. half load: the same fleet paced to half that rate; last packet -> object stored and ->
   webhook received, p50/p95/p99;
4. connector: copies of a stored-file event straight onto the files topic; deliveries/s;
5. sessions: idle connections (nothing sent) and active ones (mid-file, a packet every
   second or so, all finishing together); resident memory per session, every file intact.

Writes ``report.json`` and ``report.png`` (throughput and latency over time, each figure
against its limit) to ``--out``. CPU-time figures are the stable ones on a shared machine;
wall-clock figures move with the load (recorded in the report).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from minio import Minio

from contracts import Topic
from devstack.infra import (
    DEFAULT_PARTITIONS,
    S3RVER_KEY,
    TANSU_CLIENT_ENV,
    Process,
    create_topics,
    free_port,
    start_s3rver,
    start_tansu,
    wait_kafka,
)
from simulator import ContentSpec, Faults, Fleet, SimulationConfig, plan_fleet
from tests.bench.chart import draw
from tests.bench.probes import (
    TimedDevice,
    WebhookLog,
    cpu_seconds,
    epoch,
    metric,
    rss_bytes,
    scrape,
    trickle_device,
)

MB = 1e6
RAW_TOPIC = "bench.raw-produce"
RECORD_BYTES = 64 * 1024  # the camera adapter's default chunk record


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Stack:
    """The pipeline's processes, started like devstack starts them."""

    data: Path
    processes: dict[str, Process] = field(default_factory=dict)
    metrics: dict[str, int] = field(default_factory=dict)
    bootstrap: str = ""
    s3: str = ""
    camera_port: int = 0
    sink_out: Path = Path()
    #: Extra environment of the services (after the defaults below).
    env: dict[str, str] = field(default_factory=dict)
    #: Log level per service (default warning).
    log_levels: dict[str, str] = field(default_factory=dict)

    async def start(self) -> None:
        logs = self.data / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        s3 = start_s3rver(self.data / "s3", log=logs / "s3rver.log")
        self.processes["s3rver"] = s3
        self.s3 = f"127.0.0.1:{s3.port}"
        client = minio(self.s3)
        client.make_bucket("fleetgate")
        client.make_bucket("bench")
        broker = start_tansu(log=logs / "tansu.log")
        self.processes["broker"] = broker
        self.bootstrap = f"127.0.0.1:{broker.port}"
        await wait_kafka(self.bootstrap)
        await create_topics(self.bootstrap, {**DEFAULT_PARTITIONS, RAW_TOPIC: 8})
        sink_port = free_port()
        self.sink_out = self.data / "webhooks.jsonl"
        config = self.data / "connector.yaml"
        config.write_text(
            "endpoints:\n  - name: bench-sink\n"
            f"    url: http://127.0.0.1:{sink_port}/webhooks\n"
            "    allow_private_network: true\n"
        )
        sink = self._spawn(
            "webhook-sink",
            ["webhook-sink", "--port", str(sink_port), "--out", str(self.sink_out)],
            sink_port,
            {},
        )
        sink.wait_port()
        self.camera_port = free_port()
        env = {
            "FLEETGATE_KAFKA_BOOTSTRAP": self.bootstrap,
            "FLEETGATE_S3_ENDPOINT": self.s3,
            "FLEETGATE_S3_ACCESS_KEY": S3RVER_KEY,
            "FLEETGATE_S3_SECRET_KEY": S3RVER_KEY,
            "FLEETGATE_S3_BUCKET": "fleetgate",
            "FLEETGATE_CAMERA_PORT": str(self.camera_port),
            "FLEETGATE_CONNECTOR_CONFIG": str(config),
            "FLEETGATE_SPOOL_DIR": str(self.data / "spool"),
            # What devstack tells services on Tansu (no idempotent producer, short group
            # timeouts, fetch wait).
            **TANSU_CLIENT_ENV,
        }
        for name in ("ingestor", "assembler", "connector"):
            port = self.metrics[name] = free_port()
            listen = self.camera_port if name == "ingestor" else port
            level = {"FLEETGATE_LOG_LEVEL": self.log_levels.get(name, "warning")}
            own = {"FLEETGATE_METRICS_PORT": str(port)} | level
            self._spawn(name, [name], listen, env | self.env | own)
        for name in ("ingestor", "assembler", "connector"):
            self.processes[name].wait_port(60)

    def _spawn(self, name: str, args: list[str], port: int, env: dict[str, str]) -> Process:
        log = self.data / "logs" / f"{name}.log"
        command = [sys.executable, "-m", "fleetgate", *args]
        process = Process(name, command, port, log, env=env).start()
        self.processes[name] = process
        return process

    def log(self, name: str) -> Path:
        return self.data / "logs" / f"{name}.log"

    def pid(self, name: str) -> int:
        popen = self.processes[name].popen
        assert popen is not None
        return popen.pid

    def cpu(self) -> dict[str, float]:
        figures = {name: cpu_seconds(self.pid(name)) for name in self.processes}
        figures["bench (simulator)"] = time.process_time()
        return figures

    def dead(self) -> str | None:
        for name, process in self.processes.items():
            if process.popen is not None and process.popen.poll() is not None:
                return f"{name} exited ({process.popen.returncode})"
        return None

    def stop(self) -> None:
        for name in ("connector", "assembler", "ingestor", "webhook-sink", "broker", "s3rver"):
            if name in self.processes:
                self.processes[name].stop(timeout=25)


def minio(endpoint: str) -> Minio:
    return Minio(endpoint, S3RVER_KEY, S3RVER_KEY, secure=False, region="us-east-1")


@dataclass
class Sampler:
    """Every ``interval`` s: CPU of each process, ingestor RSS, bytes sent, stored, webhooks."""

    stack: Stack
    hooks: WebhookLog
    interval: float = 0.5
    fleet: Fleet | None = None
    phase: str = "start"
    samples: list[dict[str, Any]] = field(default_factory=list)
    _sent_base: int = 0

    def sample(self) -> dict[str, Any]:
        sent = self._sent_base
        if self.fleet is not None:
            sent += self.fleet.progress().bytes_sent
        assembler = scrape(self.stack.metrics["assembler"])
        # The ingestor's /metrics only where its connections count (a scrape costs CPU).
        scraped = self.phase == "idle sessions"
        ingestor = scrape(self.stack.metrics["ingestor"]) if scraped else {}
        row = {
            "t": time.time(),
            "phase": self.phase,
            "cpu": self.stack.cpu(),
            "ingestor_rss": rss_bytes(self.stack.pid("ingestor")),
            "bytes_sent": sent,
            "stored_bytes": metric(assembler, "fleetgate_assembler_file_bytes_total"),
            "connections": metric(ingestor, "fleetgate_ingestor_connections_open"),
            "webhooks": self.hooks.poll(),
        }
        self.samples.append(row)
        return row

    def use(self, fleet: Fleet | None) -> None:
        if self.fleet is not None:
            self._sent_base += self.fleet.progress().bytes_sent
        self.fleet = fleet

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)


async def until(check: Callable[[], bool], within: float, what: str, every: float = 0.25) -> float:
    """Wait for ``check``; the seconds it took. TimeoutError naming ``what``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise TimeoutError(f"{what} not reached within {within:g} s")
        await asyncio.sleep(every)
    return time.monotonic() - start


# --- limits ----------------------------------------------------------------------------------


async def loopback_tcp(total: int) -> float:
    """MB/s of one loopback TCP connection, 64 KiB writes, asyncio on both ends."""
    done = asyncio.Event()
    got = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal got
        while data := await reader.read(256 * 1024):
            got += len(data)
        done.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    block = os.urandom(64 * 1024)
    start = time.perf_counter()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(total // len(block)):
        writer.write(block)
        await writer.drain()
    writer.close()
    await done.wait()
    seconds = time.perf_counter() - start
    server.close()
    return got / seconds / MB


async def raw_produce(stack: Stack, total: int) -> dict[str, float]:
    """aiokafka with the ingestor's producer settings (acks=all), 64 KiB records."""
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    value = os.urandom(RECORD_BYTES)
    count = total // RECORD_BYTES
    broker_cpu = cpu_seconds(stack.pid("broker"))
    start = time.perf_counter()
    futures = []
    try:
        for i in range(count):
            key = f"transfer-{i % 64}".encode()
            futures.append(await producer.send(RAW_TOPIC, value, key=key))
        await asyncio.gather(*futures)
    finally:
        seconds = time.perf_counter() - start
        await producer.stop()
    megabytes = count * RECORD_BYTES / MB
    return {
        "mb_s": megabytes / seconds,
        "broker_cpu_s_per_mb": (cpu_seconds(stack.pid("broker")) - broker_cpu) / megabytes,
    }


async def raw_put(stack: Stack, sizes: list[int], count: int) -> dict[str, float]:
    """minio PUTs of the fleet's object sizes, 4 at a time."""
    client = minio(stack.s3)
    bodies = {size: os.urandom(size) for size in set(sizes)}
    jobs = [sizes[i % len(sizes)] for i in range(count)]
    s3_cpu = cpu_seconds(stack.pid("s3rver"))

    def put(i: int, size: int) -> None:
        client.put_object("bench", f"raw/{i}", BytesIO(bodies[size]), size)

    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(4) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, put, i, s) for i, s in enumerate(jobs)))
    seconds = time.perf_counter() - start
    megabytes = sum(jobs) / MB
    return {
        "mb_s": megabytes / seconds,
        "puts_s": len(jobs) / seconds,
        "s3_cpu_s_per_mb": (cpu_seconds(stack.pid("s3rver")) - s3_cpu) / megabytes,
    }


async def ingestor_alone(video_mib: float) -> dict[str, float]:
    """tests/bench/ingestor_cpu.py in its own process: the ingestor's CPU per MB with a sink
    that acknowledges at once (its share without the Kafka client's)."""
    child = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tests.bench.ingestor_cpu", "--devices", "10"],
        *["--video-size", str(int(video_mib * 1024 * 1024))],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await child.communicate()
    figures: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return figures


# --- pipeline phases -------------------------------------------------------------------------


async def run_fleet(
    sampler: Sampler, config: SimulationConfig, label: str
) -> tuple[dict[str, Any], float, float]:
    """Run a fleet with progress lines; its report, start and end (epoch)."""
    fleet = Fleet(config)
    fleet.devices = [TimedDevice(plan, config) for plan in fleet.plans]
    sampler.use(fleet)
    start = time.time()
    task = asyncio.create_task(fleet.run())
    while not task.done():
        await asyncio.wait([task], timeout=5)
        say(f"{label}: {fleet.progress().line()}")
    report = task.result()
    sampler.use(None)
    say(f"{label}: {report.summary()}")
    summary = report.to_dict()
    summary.pop("outcomes")
    summary["errors"] = [e for o in report.outcomes for e in o.errors][:10]
    return summary, start, time.time()


def cpu_between(samples: list[dict[str, Any]], start: float, end: float) -> dict[str, float]:
    inside = [s for s in samples if start <= s["t"] <= end] or samples[-1:]
    before = [s for s in samples if s["t"] <= start] or samples[:1]
    first, last = before[-1]["cpu"], inside[-1]["cpu"]
    return {name: last[name] - first.get(name, 0.0) for name in last}


async def stored_all(sampler: Sampler, files: int, within: float) -> None:
    await until(lambda: sampler.samples[-1]["webhooks"] >= files, within, f"{files} webhooks")


async def saturation(
    sampler: Sampler, args: argparse.Namespace, content: ContentSpec
) -> dict[str, Any]:
    stack = sampler.stack
    sampler.phase = "saturation"
    hooks_before = sampler.hooks.poll()
    config = SimulationConfig(
        port=stack.camera_port,
        devices=args.devices,
        content=content,
        seed=1,
        timeout=args.timeout,
    )
    profiler = None
    if args.profile:
        out = args.out / "ingestor-profile.txt"
        profiler = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(stack.pid("ingestor")),
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                "raw",
                "--duration",
                str(args.profile),
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    fleet, start, sent = await run_fleet(sampler, config, "saturation")
    files = hooks_before + fleet["files"]
    await stored_all(sampler, files, args.timeout)
    end = sampler.samples[-1]["t"]
    payload = fleet["payload_bytes"] / MB
    cpu_sent = cpu_between(sampler.samples, start, sent)
    cpu_all = cpu_between(sampler.samples, start, end)
    stored = [s for s in sampler.samples if start <= s["t"] <= end]
    grew = [s["t"] for a, s in itertools.pairwise(stored) if s["stored_bytes"] > a["stored_bytes"]]
    assembler_window = (grew[-1] - start) if grew else end - start
    figures = {
        "fleet": fleet,
        "device_ingest_mb_s": payload / (sent - start),
        "seconds_to_all_webhooks": end - start,
        "cpu_s_per_mb": {name: cpu / payload for name, cpu in cpu_all.items()},
        "cpu_s_per_mb_while_uploading": {name: cpu / payload for name, cpu in cpu_sent.items()},
        "assembler_mb_s": payload / assembler_window,
        "machine_cpu_busy_s": _machine_busy(),
    }
    if profiler is not None:
        profiler.wait(args.profile + 30)
        figures["ingestor_profile"] = top_entries(args.out / "ingestor-profile.txt")
    return figures


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all processes, /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def top_entries(path: Path, count: int = 15) -> dict[str, list[tuple[str, float]]]:
    """py-spy raw (collapsed) stacks -> top functions by own and by total share of samples."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        weight = int(n)
        samples += weight
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1] for f in stack.split(";")]
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + weight
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + weight

    def top(table: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:count]
        return [(name, round(100 * n / max(samples, 1), 1)) for name, n in ranked]

    return {"own_percent": top(own), "total_percent": top(total)}


async def half_load(
    sampler: Sampler, args: argparse.Namespace, content: ContentSpec, saturation_mb_s: float
) -> dict[str, Any]:
    stack = sampler.stack
    sampler.phase = "half load"
    TimedDevice.last_packet.clear()
    per_device = saturation_mb_s * MB / 2 / args.devices
    hooks_before = sampler.hooks.poll()
    config = SimulationConfig(
        port=stack.camera_port,
        devices=args.devices,
        content=content,
        seed=2,
        timeout=args.timeout,
        faults=Faults(slow=per_device),
    )
    fleet, start, sent = await run_fleet(sampler, config, "half load")
    await stored_all(sampler, hooks_before + fleet["files"], args.timeout)
    stored_lat, hook_lat, over_time = [], [], []
    for hook in sampler.hooks.seen[hooks_before:]:
        data = hook.data
        key = (data.get("imei", ""), data.get("file", {}).get("identifier", ""))
        last = TimedDevice.last_packet.get(key)
        if last is None:
            continue
        stored_lat.append(epoch(data["stored_at"]) - last)
        hook_lat.append(hook.received - last)
        over_time.append((last, hook.received - last, epoch(data["stored_at"]) - last))
    return {
        "fleet": fleet,
        "paced_mb_s_per_device": per_device / MB,
        "device_ingest_mb_s": fleet["payload_bytes"] / MB / (sent - start),
        "files_measured": len(hook_lat),
        "last_packet_to_stored_s": {f"p{q}": percentile(stored_lat, q) for q in (50, 95, 99)},
        "last_packet_to_webhook_s": {f"p{q}": percentile(hook_lat, q) for q in (50, 95, 99)},
        "latency_series": over_time,
    }


async def connector_rate(sampler: Sampler, events: int) -> dict[str, Any]:
    """Copies of one stored-file event (new ids) produced at once; deliveries/s at the sink."""
    stack = sampler.stack
    sampler.phase = "connector"
    consumer = AIOKafkaConsumer(
        Topic.FILES, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    template = json.loads(record.value)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    before = sampler.hooks.poll()
    cpu = stack.cpu()
    try:
        futures = []
        for i in range(events):
            event = template | {"event_id": uuid.uuid4().hex, "transfer_id": f"bench-{i}"}
            value = json.dumps(event).encode()
            futures.append(
                await producer.send(Topic.FILES, value, key=event["transfer_id"].encode())
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    await until(lambda: sampler.hooks.poll() >= before + events, 120, f"{events} deliveries")
    hooks = sampler.hooks.seen[before:]
    span = hooks[-1].received - hooks[0].received
    used = {name: v - cpu[name] for name, v in stack.cpu().items()}
    return {
        "events": events,
        "deliveries_s": (events - 1) / span if span > 0 else None,
        "connector_cpu_ms_per_delivery": 1000 * used["connector"] / events,
        "sink_cpu_ms_per_delivery": 1000 * used["webhook-sink"] / events,
    }


async def sessions(sampler: Sampler, args: argparse.Namespace) -> dict[str, Any]:
    stack = sampler.stack
    pid = stack.pid("ingestor")
    count = args.sessions
    # Idle: connected, nothing sent (before INIT).
    sampler.phase = "idle sessions"
    base = rss_bytes(pid)
    open_conns: list[asyncio.StreamWriter] = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", stack.camera_port)
        open_conns.append(writer)
    await until(lambda: sampler.samples[-1]["connections"] >= count, 60, f"{count} connections")
    await asyncio.sleep(1)
    idle_rss = rss_bytes(pid)
    for writer in open_conns:
        writer.close()
    await until(lambda: sampler.samples[-1]["connections"] == 0, 60, "idle sessions closed")
    # Active: mid-file, a DATA packet every few seconds (commands at once, as a real slow
    # link delivers an 8-byte SYNC long before the next KiB), all finishing close together.
    sampler.phase = "active sessions"
    hooks_before = sampler.hooks.poll()
    before = _reasons(scrape(stack.metrics["ingestor"]))
    active_base = rss_bytes(pid)
    content = ContentSpec(photos=1, videos=0, photo_size=args.session_file_kib * 1024)
    plans = plan_fleet(count, 0.5, 3)
    active = [0]
    devices = [
        asyncio.create_task(
            trickle_device(
                stack.camera_port, plan.files(content), plan.imei, args.session_interval, active
            )
        )
        for plan in plans
    ]
    held, peak, start = 0, 0, time.monotonic()
    while not all(task.done() for task in devices):
        await asyncio.sleep(0.5)
        if active[0] >= held:
            held, peak = active[0], max(peak, rss_bytes(pid))
        if int(time.monotonic() - start) % 5 == 0:
            done = sum(task.done() for task in devices)
            say(f"active sessions: {active[0]} mid-file, {done}/{count} done")
    errors = [repr(task.exception()) for task in devices if task.exception() is not None]
    ok = sum(bool(task.result()) for task in devices if task.exception() is None)
    await stored_all(sampler, hooks_before + ok, args.timeout)  # every accepted file stored
    after = _reasons(scrape(stack.metrics["ingestor"]))
    return {
        "sessions": count,
        "idle_rss_per_session_kib": (idle_rss - base) / count / 1024,
        "active_sessions_held": held,
        "active_rss_per_session_kib": (peak - active_base) / max(held, 1) / 1024,
        "active_files_accepted": ok,
        "active_device_errors": len(errors),
        "active_device_error_examples": errors[:5],
        "active_seconds": time.monotonic() - start,
        "active_sessions_closed_by_reason": {
            reason: after[reason] - before.get(reason, 0.0)
            for reason in after
            if after[reason] != before.get(reason, 0.0)
        },
    }


def _reasons(values: dict[str, float]) -> dict[str, float]:
    return {
        key.split('reason="')[1].split('"')[0]: value
        for key, value in values.items()
        if key.startswith("fleetgate_ingestor_sessions_closed_total{")
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    content = ContentSpec(
        photos=1, videos=1, photo_size=50 * 1024, video_size=int(args.video_mib * 1024 * 1024)
    )
    data = Path(tempfile.mkdtemp(prefix="fleetgate-bench-"))
    stack = Stack(data)
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "python": sys.version.split()[0],
            "uname": " ".join(os.uname()),
        },
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    say(f"starting the stack in {data}")
    await stack.start()
    hooks = WebhookLog(stack.sink_out)
    sampler = Sampler(stack, hooks)
    sampling = asyncio.create_task(sampler.run())
    busy0, wall0 = _machine_busy(), time.time()

    async def step(name: str, job: Awaitable[Any]) -> Any:
        say(f"{name} ...")
        if (dead := stack.dead()) is not None:
            raise RuntimeError(dead)
        result = await job
        say(f"{name}: {_short(result)}")
        return result

    try:
        volume = args.devices * content.bytes_per_device
        sampler.phase = "limits"
        limits = {
            "loopback_tcp_mb_s": await step("loopback TCP", loopback_tcp(min(volume, 200_000_000))),
            "raw_produce": await step("raw produce", raw_produce(stack, min(volume, 120_000_000))),
            "raw_s3_put": await step(
                "raw S3 PUT",
                raw_put(stack, [content.photo_size, content.video_size], 2 * args.devices),
            ),
        }
        report["limits"] = limits
        report["ingestor_without_kafka"] = await step(
            "ingestor alone (instant sink)", ingestor_alone(args.video_mib)
        )
        sat = await step("saturation", saturation(sampler, args, content))
        report["saturation"] = sat
        report["half_load"] = await step(
            "half load", half_load(sampler, args, content, sat["device_ingest_mb_s"])
        )
        report["connector"] = await step(
            "connector", connector_rate(sampler, args.connector_events)
        )
        report["sessions"] = await step("sessions", sessions(sampler, args))
    finally:
        sampling.cancel()
        report["machine"]["load_average_at_end"] = os.getloadavg()
        wall = time.time() - wall0
        report["machine"]["machine_cpu_busy_share"] = (
            (_machine_busy() - busy0) / wall / (os.cpu_count() or 1)
        )
        report["samples"] = sampler.samples
        stack.stop()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    report["figures"] = figures(report)
    return report


def _short(result: Any) -> str:
    if isinstance(result, float):
        return f"{result:.1f}"
    if isinstance(result, dict):
        return ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in result.items()
            if isinstance(v, int | float | str) or v is None
        )
    return str(result)


def figures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each headline figure with its limit or target and the ratio."""
    limits, sat = report["limits"], report["saturation"]
    half, conn, sess = report["half_load"], report["connector"], report["sessions"]
    cpu = sat["cpu_s_per_mb"]
    rows = [
        (
            "device ingest MB/s vs raw produce MB/s",
            sat["device_ingest_mb_s"],
            limits["raw_produce"]["mb_s"],
            ">= 0.6",
        ),
        (
            "device ingest MB/s vs loopback TCP MB/s",
            sat["device_ingest_mb_s"],
            limits["loopback_tcp_mb_s"],
            "",
        ),
        (
            "assembler MB/s vs raw S3 PUT MB/s",
            sat["assembler_mb_s"],
            limits["raw_s3_put"]["mb_s"],
            "",
        ),
        ("ingestor CPU ms per MB vs 12 ms", 1000 * cpu["ingestor"], 12.0, "<= 1"),
        (
            "ingestor CPU ms per MB, Kafka left out, vs 12 ms",
            report["ingestor_without_kafka"]["cpu_ms_per_mb"],
            12.0,
            "",
        ),
        (
            "broker CPU ms per MB (pipeline vs raw produce)",
            1000 * cpu["broker"],
            1000 * limits["raw_produce"]["broker_cpu_s_per_mb"],
            "",
        ),
        (
            "p50 last packet -> webhook s vs 0.5 s",
            half["last_packet_to_webhook_s"]["p50"],
            0.5,
            "<= 1",
        ),
        (
            "p99 last packet -> webhook s vs 2 s",
            half["last_packet_to_webhook_s"]["p99"],
            2.0,
            "<= 1",
        ),
        ("connector deliveries/s vs 2000", conn["deliveries_s"], 2000.0, ">= 1"),
        ("active RSS KiB per session vs 24 KiB", sess["active_rss_per_session_kib"], 24.0, "<= 1"),
    ]
    out = []
    for name, value, limit, target in rows:
        ratio = value / limit if value is not None and limit else None
        out.append(
            {"figure": name, "value": value, "limit": limit, "ratio": ratio, "target": target}
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--devices", type=int, default=30, help="cameras in the saturation and half-load fleets"
    )
    parser.add_argument(
        "--video-mib", type=float, default=4, help="each camera's video (plus a 50 KiB photo)"
    )
    parser.add_argument(
        "--sessions", type=int, default=1000, help="concurrent sessions (idle, then active)"
    )
    parser.add_argument(
        "--session-file-kib", type=int, default=8, help="file of each active session"
    )
    parser.add_argument(
        "--session-interval",
        type=float,
        default=2.0,
        help="seconds between DATA packets of each active session",
    )
    parser.add_argument("--connector-events", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=300, help="longest wait of each phase")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="py-spy the ingestor for SECONDS of the saturation phase",
    )
    parser.add_argument("--out", type=Path, default=Path("build/bench"))
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(main_async(args))
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    draw(report, args.out / "report.png")
    print("\npipeline figures (ratio = figure / its limit or target):")
    for row in report["figures"]:
        value, limit, ratio = row["value"], row["limit"], row["ratio"]
        print(
            f"  {row['figure']:<50} {_num(value):>9} / {_num(limit):>9}  ratio {_num(ratio):>6}"
            f"  {row['target']}"
        )
    cpu = report["saturation"]["cpu_s_per_mb"]
    print(
        "  CPU ms per MB of camera file: "
        + ", ".join(f"{k} {1000 * v:.1f}" for k, v in cpu.items())
    )
    print(f"  report: {args.out / 'report.json'}, chart: {args.out / 'report.png'}")
    return 0


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


if __name__ == "__main__":
    raise SystemExit(main())

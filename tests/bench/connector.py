"""Connector benchmark: deliveries/s of one ``fleetgate connector`` process to a fast endpoint.

Starts a broker (the embedded Tansu, or real Apache Kafka with ``--broker kafka``), a minimal
HTTP/1.1 receiver in a process of its own (answers 200 at once and counts distinct
``webhook-id`` headers; it costs the machine far less than the connector does), and, for each
scenario, a fresh connector process with one endpoint:

- ``files``: ``--events`` stored-file events on ``fleetgate.files.v1`` (fleetgate format, each
  with a freshly presigned download URL, signed with one secret);
- ``records``: as many Digital Matter telemetry records on ``fleetgate.records.v1`` (fleetgate
  format, signed);
- ``oem-batch``: the same records to an endpoint with ``format: oem`` and
  ``batch: {max_records: 20}`` (one POST per 20 records of a device).

The events are on the topic before the connector starts (its group's offsets are set to the
end of the other topics, so it reads only its scenario's). Sampled every 20 ms: the receiver's
count and the connector's CPU seconds (/proc); deliveries/s and CPU ms per delivery are taken
between the first delivery and the last, so the process start is left out. Every event must
arrive (distinct ids); a lost or missing one fails the run.

Run alone: ``python -m tests.bench.connector [--events N] [--broker kafka] [--json]``;
``FLEETGATE_BENCH_PYSPY=DIR`` records a py-spy profile of each connector into DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts import FileInfo, FileStored, Topic, encode
from contracts.dmt import telemetry_record_json
from devstack.infra import (
    DEFAULT_PARTITIONS,
    TANSU_CLIENT_ENV,
    Process,
    create_topics,
    free_port,
    start_tansu,
    wait_kafka,
)
from dmtproto import (
    Analogue16,
    Analogue16Field,
    DigitalField,
    GpsField,
    Hello,
    Record,
)

SECRET = "whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="
SOURCES = (str(Topic.FILES), str(Topic.RECORDS))
#: The receiver's answer; the connector reads it whole to reuse the connection.
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


# --- the receiver (a process of its own) ----------------------------------------------------


class _Receiver(asyncio.Protocol):
    """HTTP/1.1 keep-alive, requests with Content-Length only (what the connector sends)."""

    ids: ClassVar[set[bytes]] = set()
    requests: ClassVar[int] = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        out = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            length = int(_header(head, b"content-length") or 0)
            if len(buffer) < end + 4 + length:
                break
            if head.startswith(b"get /reset"):
                _Receiver.ids.clear()
            if head.startswith(b"get /"):
                body = json.dumps({"requests": _Receiver.requests, "ids": len(_Receiver.ids)})
                out.append(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body.encode())
                )
            else:
                _Receiver.requests += 1
                _Receiver.ids.add(_header(head, b"webhook-id"))
                out.append(OK)
            buffer = buffer[end + 4 + length :]
        self.buffer = buffer
        if out:
            self.transport.write(b"".join(out))


def _header(head: bytes, name: bytes) -> bytes:
    """A header's value in a lower-cased request head (b"" if absent)."""
    at = head.find(b"\r\n" + name + b":")
    if at < 0:
        return b""
    start = at + len(name) + 3
    stop = head.find(b"\r", start)
    return head[start : stop if stop >= 0 else len(head)].strip()


async def _receive(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Receiver, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


def receiver_count(port: int, reset: bool = False) -> dict[str, int]:
    """Requests so far and distinct webhook ids (since the last reset)."""
    path = "reset" if reset else "count"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as answer:
        counts: dict[str, int] = json.loads(answer.read())
    return counts


# --- events ---------------------------------------------------------------------------------


def file_events(n: int, run: str) -> Iterator[tuple[bytes, bytes]]:
    at = datetime.now(UTC)
    info = FileInfo(identifier="%photof", slot="photo_front", camera="dualcam", media="photo")
    for i in range(n):
        imei = f"35630704{i % 1000:07d}"
        event = FileStored(
            event_id=f"{run}-file-{i}",
            transfer_id=f"{run}-{i}",
            imei=imei,
            file=info,
            started_at=at,
            size=51_200,
            sha256="0" * 64,
            crc16=0x1234,
            bucket="fleetgate",
            key=f"{imei}/2026/11/30/{run}-{i}.jpg",
            content_type="image/jpeg",
            stored_at=at,
        )
        yield imei.encode(), encode(event)


def record_events(n: int, run: str) -> Iterator[tuple[bytes, bytes]]:
    at = datetime.now(UTC)
    devices = 200
    hellos = [
        Hello(
            serial=100_000 + d,
            imei=f"35332308{d:07d}",
            iccid=f"8961018500182484{d:04d}",
            product_id=34,
            hardware_revision=2,
            firmware_major=1,
            firmware_minor=9,
        )
        for d in range(devices)
    ]
    for i in range(n):
        hello = hellos[i % devices]
        record = Record(
            sequence=i // devices,
            time=400_000_000 + i,
            log_reason=3,
            fields=(
                GpsField(
                    gps_time=400_000_000 + i, latitude_e7=554574140 + i, longitude_e7=99343941,
                    altitude_m=30, speed_cm_s=2330, speed_accuracy=1, heading_2deg=148,
                    pdop_tenths=12, position_accuracy_m=7, status=3,
                ),
                DigitalField(inputs=3, outputs=0, status=3),
                Analogue16Field(
                    values=tuple(Analogue16(a, v) for a, v in ((1, 4125), (3, 2112), (4, 24)))
                ),
            ),
        )  # fmt: skip
        value = telemetry_record_json(
            record, hello, session_id=f"{run}-{i % devices}", ingestor="bench", received_at=at
        )
        yield hello.imei.encode(), value


# --- the run --------------------------------------------------------------------------------


SCENARIOS: dict[str, tuple[str, str]] = {
    # name: (topic, endpoint options)
    "files": (str(Topic.FILES), f"secrets: ['{SECRET}']"),
    "records": (str(Topic.RECORDS), f"secrets: ['{SECRET}']"),
    "oem-batch": (
        str(Topic.RECORDS),
        f"secrets: ['{SECRET}'], format: oem, batch: {{max_records: 20, max_wait_seconds: 1}}",
    ),
}


async def _produce(bootstrap: str, topic: str, events: Iterator[tuple[bytes, bytes]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


async def _start_group_at_end(bootstrap: str, group: str) -> None:
    """Commit ``group``'s offsets at the end of every source topic (it reads only what comes)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in SOURCES
            for p in range(DEFAULT_PARTITIONS[Topic(topic)])
        ]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit(dict(ends.items()))
    finally:
        await consumer.stop()


def _runnable(pid: int) -> float:
    """Seconds the process's main thread (the event loop) spent on a CPU or waiting for one
    (``/proc/<pid>/task/<pid>/schedstat``); the rest of the wall time it slept, waiting for the
    broker or the endpoint. The difference from wall time does not grow with other jobs' load."""
    on_cpu, queued = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[:2]
    return (int(on_cpu) + int(queued)) / 1e9


def _cpu(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def scenario(
    name: str,
    *,
    bootstrap: str,
    client_env: dict[str, str],
    receiver: int,
    events: int,
    data: Path,
    within: float,
    concurrency: int,
) -> dict[str, Any]:
    topic, options = SCENARIOS[name]
    run = f"{name}-{int(time.time() * 1000)}"
    prefix = f"bench-{run}"
    config = data / f"{name}.yaml"
    config.write_text(
        "endpoints:\n"
        f"  - {{name: sink, url: 'http://127.0.0.1:{receiver}/hooks/[IMEI]',"
        f" allow_private_network: true, max_concurrency: {concurrency}, {options}}}\n"
    )
    await _start_group_at_end(bootstrap, f"{prefix}-sink")
    source = file_events(events, run) if topic == str(Topic.FILES) else record_events(events, run)
    await _produce(bootstrap, topic, source)
    expected_posts = events if "batch" not in options else None
    before = receiver_count(receiver, reset=True)
    env = {
        **client_env,
        "FLEETGATE_KAFKA_BOOTSTRAP": bootstrap,
        "FLEETGATE_CONNECTOR_CONFIG": str(config),
        "FLEETGATE_CONNECTOR_GROUP_PREFIX": prefix,
        "FLEETGATE_METRICS_PORT": str(free_port()),
        "FLEETGATE_LOG_LEVEL": "warning",
        "FLEETGATE_S3_ACCESS_KEY": "bench",
        "FLEETGATE_S3_SECRET_KEY": "bench-secret",
        "FLEETGATE_S3_ENDPOINT": "127.0.0.1:9",
    }
    command = [sys.executable, "-m", "fleetgate", "connector"]
    connector = Process(f"connector-{name}", command, 0, data / f"{name}.log", env=env).start()
    assert connector.popen is not None
    pid = connector.popen.pid
    spy = _profile(pid, name)
    samples: list[tuple[float, int, int, float]] = []
    runnable: list[float] = []
    done = False
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if connector.popen.poll() is not None:
                raise SystemExit(f"connector exited ({connector.popen.returncode}): see {config}")
            counts = receiver_count(receiver)
            posts = counts["requests"] - before["requests"]
            ids = counts["ids"]
            samples.append((time.monotonic(), posts, ids, _cpu(pid)))
            runnable.append(_runnable(pid))
            # ids: one per event (a batch carries its first record's id), so with batches the
            # end is when the POSTs stop growing after the last record could be in one.
            if expected_posts is not None and ids >= events:
                done = True
                break
            if expected_posts is None and _batches_done(samples, events):
                done = True
                break
            await asyncio.sleep(0.02)
    finally:
        if spy is not None:  # SIGINT: py-spy writes its profile and exits
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        connector.stop(timeout=25)
    if not done:
        raise SystemExit(f"{name}: not every event delivered within {within} s: {samples[-1]}")
    (data / f"{name}-samples.json").write_text(json.dumps(samples))  # time, posts, ids, cpu
    at_first = next(i for i, s in enumerate(samples) if s[1] > 0)
    at_last = next(i for i, s in enumerate(samples) if s[1] == samples[-1][1])
    first, last = samples[at_first], samples[at_last]  # not the quiet tail of batches
    posts = last[1] - first[1]
    seconds = last[0] - first[0]
    cpu = last[3] - first[3]
    result: dict[str, Any] = {
        "events": events,
        "posts": last[1],
        "deliveries_s": posts / seconds if seconds > 0 else None,
        "cpu_ms_per_delivery": 1000 * cpu / posts if posts else None,
        "connector_cpu_share": cpu / seconds if seconds > 0 else None,
        # Share of the time the event loop slept (waiting for I/O, not for a CPU).
        "loop_sleeping_share": (
            1 - (runnable[at_last] - runnable[at_first]) / seconds if seconds > 0 else None
        ),
    }
    if expected_posts is None:
        result["records_s"] = events * posts / last[1] / seconds if seconds > 0 else None
        result["cpu_ms_per_record"] = 1000 * cpu / events
    elif last[1] < events or last[2] < events:
        raise SystemExit(f"{name}: {last[2]} distinct ids of {events}")
    return result


def _batches_done(samples: list[tuple[float, int, int, float]], events: int) -> bool:
    """Batches of 20 records of one device: at least events/20 POSTs, and none for 1.5 s (the
    longest wait is 1 s)."""
    now, posts = samples[-1][0], samples[-1][1]
    if posts < events // 20:
        return False
    earlier = [s for s in samples if s[0] <= now - 1.5]
    return bool(earlier) and earlier[-1][1] == posts


def _profile(pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """With ``FLEETGATE_BENCH_PYSPY=DIR``: py-spy records ``pid`` into DIR/connector-NAME.txt
    (collapsed stacks, for ``flamegraph.pl`` or speedscope) until it gets SIGINT."""
    directory = os.environ.get("FLEETGATE_BENCH_PYSPY")
    if not directory:
        return None
    out = Path(directory) / f"connector-{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    args = [spy, "record", "--format", "raw", "--rate", "200", "--pid", str(pid), "-o", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def bench_connector(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="fleetgate-bench-connector-"))
    stack: list[Any] = []
    try:
        receiver = free_port()
        stack.append(
            Process(
                "receiver",
                [sys.executable, "-m", "tests.bench.connector", "--receive", str(receiver)],
                receiver,
                data / "receiver.log",
            ).start()
        )
        stack[-1].wait_port()
        if args.broker == "kafka":
            from devstack.kafka import start_kafka

            cluster = start_kafka(data / "kafka", 1)
            stack.append(cluster)
            bootstrap = cluster.bootstrap
            client_env: dict[str, str] = {}
        else:
            broker = start_tansu(log=data / "tansu.log")
            stack.append(broker)
            bootstrap = f"127.0.0.1:{broker.port}"
            client_env = dict(TANSU_CLIENT_ENV)
        await wait_kafka(bootstrap, within=60)
        await create_topics(bootstrap)
        figures: dict[str, Any] = {"broker": args.broker}
        for name in args.scenarios:
            figures[name] = await scenario(
                name,
                bootstrap=bootstrap,
                client_env=client_env,
                receiver=receiver,
                events=args.events,
                data=data,
                within=args.timeout,
                concurrency=args.max_concurrency,
            )
        return figures
    finally:
        for part in reversed(stack):
            part.stop()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
        else:
            print(f"kept {data}", file=sys.stderr)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=10_000, help="events per scenario")
    parser.add_argument(
        "--scenarios", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS)
    )
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=10,
        help="the endpoint's max_concurrency (requests in flight; 10 is its default)",
    )
    parser.add_argument("--timeout", type=float, default=180, help="longest wait per scenario")
    parser.add_argument("--keep", action="store_true", help="keep the logs and configs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--receive", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receive:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_receive(args.receive))
        return 0
    figures = asyncio.run(bench_connector(args))
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"connector benchmark ({args.events} events per scenario, broker {args.broker})")
    for name in args.scenarios:
        row = figures[name]
        extra = (
            f", {row['records_s']:.0f} records/s, {row['cpu_ms_per_record']:.3f} CPU ms/record"
            if "records_s" in row
            else ""
        )
        print(
            f"  {name:<10} {row['deliveries_s']:>8.0f} deliveries/s"
            f"  {row['cpu_ms_per_delivery']:.3f} CPU ms/delivery"
            f"  (connector busy {row['connector_cpu_share']:.0%},"
            f" its loop asleep {row['loop_sleeping_share']:.0%}){extra}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Digital Matter ingest benchmark: a real ingestor process on the embedded broker (Tansu).

Starts Tansu and ``fleetgate ingestor`` (Digital Matter only) as child processes and drives
simulated trackers over TCP from this process (pre-encoded messages, so the load generator
costs little): each sends HELLO, then batches of records, each batch followed by a commit
request whose reply it waits for (commit-after-acknowledgement: the reply comes only once
Kafka acknowledged every record of the batch).

Figures:

- ``dmt_ingest_records_per_s``: records/s with as many trackers as ``--devices`` pushing as
  fast as their commits come back; ``dmt_ingest_records_per_cpu_s``: the same records over the
  ingestor's CPU seconds (user + system) in that time, a figure less at the mercy of a shared
  machine. Each record goes out twice (decoded and raw).
- ``dmt_commit_p50_ms`` / ``p99``: commit latency (commit request written -> reply read) with
  the trackers paced to half the measured rate (for ``--dmt-seconds`` or four commits per
  tracker, whichever is longer).
- ``dmt_sessions`` and ``dmt_session_kib``: sessions held open after HELLO, and the ingestor's
  resident memory per session.

Run alone: ``python tests/bench/dmt_ingest.py [--json]``; ``make bench`` runs it too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devstack.infra import TANSU_CLIENT_ENV, create_topics, free_port, start_tansu, wait_kafka
from dmtproto import (
    Analogue16,
    Analogue16Field,
    DigitalField,
    GpsField,
    Hello,
    MessageType,
    Record,
    encode,
    encode_hello,
    encode_record,
)

#: ``["-m", "cProfile", "-o", FILE]`` to profile the ingestor (FLEETGATE_BENCH_PROFILE=FILE).
PROFILE = (
    ["-m", "cProfile", "-o", os.environ["FLEETGATE_BENCH_PROFILE"]]
    if os.environ.get("FLEETGATE_BENCH_PROFILE")
    else []
)
#: py-spy's samples of the ingestor during the full-load phase only, in py-spy's raw format
#: (FLEETGATE_BENCH_PYSPY=FILE; needs ``py-spy`` on PATH or next to this Python).
PYSPY = os.environ.get("FLEETGATE_BENCH_PYSPY")
COMMIT_REPLY = encode(MessageType.COMMIT_RESPONSE, b"\x01")
HELLO_REPLY_SIZE = 5 + 8


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _ticks()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def batch_bytes(imei_index: int, records: int, per_message: int) -> bytes:
    """``records`` records (GPS, digital I/O, four analogues; 48 bytes each) in messages of
    ``per_message``, then a commit request."""
    now = 430_000_000
    encoded = [
        encode_record(
            Record(
                sequence=i + 1,
                time=now + i,
                log_reason=3,
                fields=(
                    GpsField(
                        gps_time=now + i,
                        latitude_e7=-338_000_000 + i,
                        longitude_e7=1_512_000_000,
                        altitude_m=40,
                        speed_cm_s=1000,
                        speed_accuracy=1,
                        heading_2deg=45,
                        pdop_tenths=12,
                        position_accuracy_m=5,
                        status=3,
                    ),
                    DigitalField(inputs=1, outputs=0, status=3),
                    Analogue16Field(
                        values=(
                            Analogue16(1, 4000),
                            Analogue16(2, 1250),
                            Analogue16(3, 2150),
                            Analogue16(4, 20),
                        )
                    ),
                ),
            )
        )
        for i in range(records)
    ]
    out = bytearray()
    for start in range(0, records, per_message):
        out += encode(MessageType.DATA_RECORDS, b"".join(encoded[start : start + per_message]))
    out += encode(MessageType.COMMIT_REQUEST)
    return bytes(out)


def hello_bytes(index: int) -> bytes:
    imei = f"35{index:013d}"
    return encode_hello(
        Hello(serial=index, imei=imei, iccid="8961" + imei[2:] + "00", product_id=34,
              hardware_revision=2, firmware_major=1, firmware_minor=9)
    )  # fmt: skip


class Tracker:
    def __init__(self, port: int, index: int, batch: bytes) -> None:
        self.port, self.index, self.batch = port, index, batch
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(hello_bytes(self.index))
        await self.reader.readexactly(HELLO_REPLY_SIZE)

    async def commit(self) -> float:
        """One batch and its commit request; seconds from the request to the reply."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.batch)
        sent = time.perf_counter()
        reply = await self.reader.readexactly(len(COMMIT_REPLY))
        if reply != COMMIT_REPLY:
            raise RuntimeError(f"unexpected reply {reply.hex()}")
        return time.perf_counter() - sent

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _run_load(
    trackers: list[Tracker], seconds: float, interval: float | None
) -> tuple[int, list[float]]:
    """Commits answered and their latencies; ``interval``: seconds between one tracker's
    batches (None: as fast as the replies come)."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    done = 0

    async def one(tracker: Tracker, offset: float) -> None:
        nonlocal done
        if interval is not None:
            await asyncio.sleep(offset)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            latencies.append(await tracker.commit())
            done += 1
            if interval is not None:
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))

    step = (interval or 0) / max(1, len(trackers))
    await asyncio.gather(*(one(t, i * step) for i, t in enumerate(trackers)))
    return done, latencies


async def _bench(
    port: int, pid: int, broker_pid: int, args: argparse.Namespace
) -> dict[str, float]:
    figures: dict[str, float] = {}
    # Sessions held after HELLO (first: a fresh process, no buffers left from the load).
    before = rss_bytes(pid)
    idle = [Tracker(port, 100_000 + i, b"") for i in range(args.sessions)]
    opened = 0
    for start in range(0, len(idle), 500):
        results = await asyncio.gather(
            *(t.connect() for t in idle[start : start + 500]), return_exceptions=True
        )
        opened += sum(not isinstance(r, BaseException) for r in results)
    await asyncio.sleep(2.0)
    after = rss_bytes(pid)
    figures["dmt_sessions"] = opened
    figures["dmt_session_kib"] = (after - before) / max(1, opened) / 1024
    figures["dmt_ingestor_rss_mib"] = after / 2**20
    for t in idle:
        t.close()
    await asyncio.sleep(3.0)  # their session_closed records go out before the load
    batch = batch_bytes(0, args.batch, args.per_message)
    trackers = [Tracker(port, i, batch) for i in range(args.devices)]
    await asyncio.gather(*(t.connect() for t in trackers))
    await _run_load(trackers, 2.0, None)  # warm-up
    sampler = _pyspy(pid, args.seconds) if PYSPY else None
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    broker0, load0 = cpu_seconds(broker_pid), time.process_time()
    commits, latencies = await _run_load(trackers, args.seconds, None)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    figures["dmt_broker_cpu_share"] = (cpu_seconds(broker_pid) - broker0) / wall
    figures["dmt_loadgen_cpu_share"] = (time.process_time() - load0) / wall
    records = commits * args.batch
    rate = records / wall
    figures["dmt_ingest_records_per_s"] = rate
    figures["dmt_ingest_records_per_cpu_s"] = records / cpu if cpu else 0.0
    figures["dmt_ingest_cpu_share"] = cpu / wall
    figures["dmt_commit_full_load_p50_ms"] = statistics.median(latencies) * 1000
    if sampler is not None:
        sampler.wait(30)
    # Half the measured rate: each tracker paced, long enough for a few commits each.
    interval = args.devices * args.batch / (rate / 2)
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    paced = min(max(args.seconds, 4 * interval), 90.0)
    commits, latencies = await _run_load(trackers, paced, interval)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    latencies.sort()
    figures["dmt_half_load_records_per_s"] = commits * args.batch / wall
    figures["dmt_commit_p50_ms"] = latencies[len(latencies) // 2] * 1000
    figures["dmt_commit_p99_ms"] = (
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    )
    figures["dmt_half_load_cpu_share"] = cpu / wall
    for t in trackers:
        t.close()
    return figures


def _pyspy(pid: int, seconds: float) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("py-spy")
    command = [str(exe) if exe.exists() else "py-spy", "record", "--pid", str(pid)]
    return subprocess.Popen(
        [*command, "--duration", str(int(seconds)), "--rate", "200", "--nonblocking",
         "--format", "raw", "-o", str(PYSPY)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def bench_dmt_ingest(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fleetgate-dmt-bench-") as tmp:
        broker = start_tansu(log=Path(tmp) / "tansu.log")
        bootstrap = f"127.0.0.1:{broker.port}"
        ingestor: subprocess.Popen[bytes] | None = None
        try:
            asyncio.run(wait_kafka(bootstrap))
            asyncio.run(create_topics(bootstrap))
            port = free_port()
            env = (
                os.environ
                | TANSU_CLIENT_ENV
                | {
                    "FLEETGATE_KAFKA_BOOTSTRAP": bootstrap,
                    "FLEETGATE_CAMERA_ENABLED": "false",
                    "FLEETGATE_DMT_HOST": "127.0.0.1",
                    "FLEETGATE_DMT_PORT": str(port),
                    "FLEETGATE_LOG_LEVEL": "WARNING",
                    "FLEETGATE_METRICS_PORT": "0",
                }
            )
            with open(Path(tmp) / "ingestor.log", "wb") as log:
                ingestor = subprocess.Popen(
                    [sys.executable, *PROFILE, "-m", "fleetgate", "ingestor"], env=env, stdout=log,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
                try:
                    _wait_port(port, ingestor)
                except RuntimeError as exc:
                    tail = (Path(tmp) / "ingestor.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{exc}:\n{tail}") from exc
                assert broker.popen is not None
                return asyncio.run(_bench(port, ingestor.pid, broker.popen.pid, args))
        finally:
            if ingestor is not None:
                ingestor.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    ingestor.wait(30)
                if ingestor.poll() is None:
                    ingestor.kill()
            broker.stop()


def _wait_port(port: int, process: subprocess.Popen[Any], within: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the ingestor exited at start")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"the ingestor did not listen on {port} within {within} s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dmt-devices", dest="devices", type=int, default=64)
    parser.add_argument("--dmt-batch", dest="batch", type=int, default=256,
                        help="records per commit")  # fmt: skip
    parser.add_argument("--dmt-per-message", dest="per_message", type=int, default=32)
    parser.add_argument("--dmt-seconds", dest="seconds", type=float, default=10.0)
    parser.add_argument("--dmt-sessions", dest="sessions", type=int, default=4000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = bench_dmt_ingest(args)
    if args.json:
        print(json.dumps({k: round(v, 2) for k, v in figures.items()}, indent=2))
    else:
        for name, value in figures.items():
            print(f"  {name:<40} {value:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The assembler's limits and S3 watch against a real broker (Tansu) and a real s3rver:
an abandoned transfer's spool freed and rebuilt from Kafka, an S3 server frozen with SIGSTOP.
Each test prints its figures (``-s``; the README's "Reliability" section quotes them)."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from pathlib import Path

from contracts import FileStored
from devstack.infra import S3RVER_KEY, free_port, start_s3rver
from tests.assembler.assembler_helpers import (
    AssemblerProcess,
    Sender,
    dsm,
    file_events,
    objects,
    read_object,
    wait_for,
)
from tests.conftest import S3


def _figure(name: str, **values: object) -> None:
    print(f"\n[reliability] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"no {name} in /metrics"
    return float(match.group(1))


def _spooled(workdir: Path) -> list[Path]:
    return list((workdir / "spool").glob("pid-*/files/*.part"))


async def test_an_abandoned_transfer_frees_its_spool_and_is_rebuilt_from_kafka(
    kafka: str, s3: S3, tmp_path: Path
) -> None:
    f = dsm(os.urandom(3_000_000), "/DSM/abandoned.mp4\0")
    half = 1_500_160
    process = AssemblerProcess(kafka, s3, tmp_path, env={"FLEETGATE_TRANSFER_IDLE_SECONDS": "1"})
    try:
        process.start()
        async with Sender(kafka) as sender:
            origin = await sender.start(f)
            await sender.chunks(f, origin, 0, half)
            await wait_for(lambda: bool(_spooled(tmp_path)), 30, "the first half spooled")
            began = time.monotonic()
            await process.wait_logged("transfer_expired", within=30)
            freed = time.monotonic() - began
            assert not _spooled(tmp_path)
            await sender.chunks(f, origin, half)  # the device came back and resumed
            await sender.end(f, origin)
        events = await file_events(kafka, lambda ev: any(isinstance(e, FileStored) for e in ev))
        [event] = [e for e in events if isinstance(e, FileStored)]
        assert read_object(s3.client(), s3.bucket, event.key) == f.data
        assert len(objects(s3.client(), s3.bucket)) == 1
        [rewind] = process.logged("rewind")
        assert f'"origin": {origin}' in rewind  # read again from its start record
        assert process.terminate() == 0
    finally:
        process.kill()
    _figure("abandoned spool", idle_seconds=1, held=half, freed_after_s=round(freed, 2))


async def test_a_frozen_s3_server_shows_within_seconds_and_files_are_stored_after(
    kafka: str, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    server = start_s3rver(tmp_path / "s3", port, log=tmp_path / "s3rver.log")
    s3 = S3(f"127.0.0.1:{port}", S3RVER_KEY, S3RVER_KEY, "frozen")
    env = {"FLEETGATE_S3_SLOW_SECONDS": "2", "FLEETGATE_METRICS_PORT": str(metrics_port)}
    process = AssemblerProcess(kafka, s3, tmp_path, env=env)
    assert server.popen is not None
    try:
        process.start()
        await process.wait_logged("assembler_started", within=60)
        assert _metric(metrics_port, "fleetgate_assembler_s3_ready") == 1
        server.popen.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
        frozen = time.monotonic()
        f = dsm(os.urandom(1_000_000), "/DSM/frozen.mp4\0")
        async with Sender(kafka) as sender:
            await sender.transfer(f)
        await process.wait_logged("s3_slow", within=20)
        logged = time.monotonic() - frozen
        age = _metric(metrics_port, "fleetgate_assembler_s3_oldest_request_seconds")
        assert age >= 2
        assert _metric(metrics_port, "fleetgate_assembler_s3_ready") == 0
        assert _metric(metrics_port, "fleetgate_assembler_s3_requests_in_flight") >= 1
        assert process.logged("s3_not_ready")
        assert process.logged("s3_error") == []  # the client has not given up: yet we know
        server.popen.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        events = await file_events(kafka, lambda ev: any(isinstance(e, FileStored) for e in ev))
        stored = time.monotonic() - resumed
        [event] = [e for e in events if isinstance(e, FileStored)]
        assert read_object(s3.client(), s3.bucket, event.key) == f.data
        await wait_for(
            lambda: _metric(metrics_port, "fleetgate_assembler_s3_ready") == 1, 10, "ready again"
        )
        assert _metric(metrics_port, "fleetgate_assembler_s3_oldest_request_seconds") == 0
        assert process.terminate() == 0
    finally:
        if server.popen.poll() is None:
            server.popen.send_signal(signal.SIGCONT)
        process.kill()
        server.stop()
    _figure(
        "S3 frozen (SIGSTOP)",
        slow_threshold_s=2,
        frozen_to_s3_slow_log_s=round(logged, 2),
        oldest_request_age_at_log_s=round(age, 2),
        sigcont_to_stored_s=round(stored, 2),
    )


async def test_a_full_spool_pauses_the_real_consumer_and_both_files_are_stored(
    kafka: str, s3: S3, tmp_path: Path
) -> None:
    """Two 1 MB files interleaved with a 1.5 MB quota: the assembler sets one aside (frees its
    spool), finishes the other, then reads the first again from Kafka; both stored intact."""
    env = {"FLEETGATE_SPOOL_QUOTA_BYTES": "1500000", "FLEETGATE_TRANSFER_IDLE_SECONDS": "2"}
    process = AssemblerProcess(kafka, s3, tmp_path, env=env)
    a, b = (
        dsm(os.urandom(1_000_000), "/DSM/q-a.mp4\0"),
        dsm(os.urandom(1_000_000), "/DSM/q-b.mp4\0"),
    )
    try:
        process.start()
        began = time.monotonic()
        async with Sender(kafka) as sender:
            origin_a, origin_b = await sender.start(a), await sender.start(b)
            await sender.chunks(a, origin_a, 0, 700_416)
            await sender.chunks(b, origin_b, 0, 700_416)
            await sender.chunks(a, origin_a, 700_416)
            await sender.chunks(b, origin_b, 700_416)
            await sender.end(a, origin_a)
            await sender.end(b, origin_b)
        events = await file_events(
            kafka, lambda ev: sum(isinstance(e, FileStored) for e in ev) >= 2, within=60
        )
        took = time.monotonic() - began
        stored = {e.transfer_id: e for e in events if isinstance(e, FileStored)}
        for f in (a, b):
            assert read_object(s3.client(), s3.bucket, stored[f.tid].key) == f.data
        assert process.logged("spool_full_set_aside")
        assert process.terminate() == 0
    finally:
        process.kill()
    _figure(
        "spool quota",
        quota=1_500_000,
        interleaved=2_000_000,
        set_aside=len(process.logged("spool_full_set_aside")),
        pauses=len(process.logged("spool_full")),
        rewinds=len(process.logged("rewind")),
        both_stored_after_s=round(took, 1),
    )

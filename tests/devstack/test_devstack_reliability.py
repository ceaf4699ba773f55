"""``make run``'s stack under crashes and stops: services SIGKILLed while cameras upload, the
whole stack stopped (SIGTERM, as Ctrl-C) mid-upload. Every file a device was told is done must
end up in S3, byte for byte. The devstack is a real child process (Tansu, the three services,
the webhook sink); cameras are the simulator over TCP; S3 is an s3rver the test owns, so objects
can be read after the stack exited.

Each test prints its figures (``-s`` shows them; the README's "Reliability" section quotes them).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path

from simulator import ContentSpec, Faults, Fleet, SimulationConfig
from tests.devstack.devstack_helpers import accepted_files, devstack, figure


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


def _webhooks(data_dir: Path) -> set[str]:
    """Transfer ids of the file.stored webhooks the local sink received."""
    path = data_dir / "webhooks.jsonl"
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        body = json.loads(line)["body"]
        if isinstance(body, dict) and body.get("type") == "file.stored":
            out.add(body["data"]["transfer_id"])
    return out


async def test_killed_services_restart_and_every_confirmed_file_is_stored(
    tmp_path: Path,
) -> None:
    with devstack(tmp_path) as stack:
        config = SimulationConfig(
            port=stack.camera_port,
            devices=6,
            dualcam_ratio=0.5,
            content=ContentSpec(photos=1, videos=1, photo_size=50_000, video_size=1_000_000),
            faults=Faults(slow=150_000),  # a cellular link: about 7 s per device
            seed=21,
            timeout=150,
            max_reconnects=100,  # the ingestor is away while it restarts
            reconnect_backoff=0.2,
        )
        fleet = Fleet(config)
        run = asyncio.create_task(fleet.run())
        began = time.monotonic()
        killed: dict[str, float] = {}
        for service in ("assembler", "connector", "ingestor"):
            await until(
                lambda: fleet.progress().bytes_sent > 300_000 * (len(killed) + 1), 60, "bytes"
            )
            os.kill(stack.child(service), signal.SIGKILL)
            at = time.monotonic()
            await until(partial(stack.said_again, service), 30, f"{service} restart")
            killed[service] = round(time.monotonic() - at, 2)
        report = await run
        assert report.ok, report.summary()
        expected = accepted_files(config, report)
        assert len(expected) == 12
        await until(lambda: len(stack.objects()) >= len(expected), 120, "every file in S3")
        stored_after = time.monotonic() - began
        assert sorted(stack.objects().values()) == sorted(expected)
        data_dir = tmp_path / "data"
        await until(lambda: len(_webhooks(data_dir)) >= len(expected), 60, "every webhook")
        assert stack.process.poll() is None  # the stack kept running throughout
        for service in killed:
            assert stack.said(f"devstack: {service} exited (signal 9)") == 1
    figure(
        "devstack SIGKILL of each service",
        files=len(expected),
        kill_to_restart_s=killed,
        all_stored_after_s=round(stored_after, 1),
    )


async def test_sigterm_mid_upload_stores_every_confirmed_file(tmp_path: Path) -> None:
    with devstack(tmp_path) as stack:
        config = SimulationConfig(
            port=stack.camera_port,
            devices=10,
            dualcam_ratio=0.5,
            content=ContentSpec(photos=1, videos=1, photo_size=50_000, video_size=1_500_000),
            faults=Faults(slow=200_000),
            seed=22,
            timeout=150,
            max_reconnects=2,
        )
        fleet = Fleet(config)
        run = asyncio.create_task(fleet.run())
        await until(lambda: fleet.progress().files_accepted >= 10, 60, "the photos accepted")
        before = fleet.progress().files_accepted
        stack.process.send_signal(signal.SIGTERM)  # what Ctrl-C does
        stopped = time.monotonic()
        report = await run
        await until(lambda: stack.process.poll() is not None, 150, "the devstack to exit")
        stop_seconds = time.monotonic() - stopped
        assert stack.process.returncode == 0, stack.text()[-3000:]
        expected = accepted_files(config, report)
        objects = stack.objects()  # the stack is gone; its S3 server is the test's
        stored = sorted(objects.values())
        missing = [data for data in expected if data not in stored]
        assert not missing, f"{len(missing)} confirmed files lost:\n{stack.text()[-3000:]}"
        assert len(expected) > before  # files were confirmed during the stop, and kept
        text = stack.text()
        assert text.index("stopping the ingestor") < text.index("have finished what Kafka")
    figure(
        "devstack SIGTERM mid-upload",
        confirmed_before_stop=before,
        confirmed_total=len(expected),
        stored=len(objects),
        stop_seconds=round(stop_seconds, 1),
    )


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"no {name} in /metrics"
    return float(match.group(1))


async def test_a_frozen_s3_shows_within_seconds_and_a_stop_says_what_is_left(
    tmp_path: Path,
) -> None:
    with devstack(tmp_path, metrics=True, s3_slow_seconds="2", stop_drain_seconds="3") as stack:
        server = stack.s3.popen
        assert server is not None
        port = stack.metrics_port

        def photos(seed: int) -> SimulationConfig:
            content = ContentSpec(photos=1, videos=0, photo_size=50_000)
            return SimulationConfig(port=stack.camera_port, devices=2, content=content, seed=seed)

        await until(lambda: stack.said('"event": "assembler_started"') > 0, 60, "the assembler")
        server.send_signal(signal.SIGSTOP)  # it accepts connections and answers nothing
        frozen = time.monotonic()
        first = photos(24)
        report = await Fleet(first).run()
        assert report.ok, report.summary()  # ingestion goes on into Kafka
        await until(lambda: stack.said('"event": "s3_slow"') > 0, 20, "the s3_slow log line")
        logged = time.monotonic() - frozen
        age = _metric(port, "fleetgate_assembler_s3_oldest_request_seconds")
        assert age >= 2 and _metric(port, "fleetgate_assembler_s3_ready") == 0
        server.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        expected = accepted_files(first, report)
        await until(lambda: len(stack.objects()) == len(expected), 60, "the photos in S3")
        stored = time.monotonic() - resumed
        assert sorted(stack.objects().values()) == sorted(expected)
        await until(
            lambda: _metric(port, "fleetgate_assembler_s3_ready") == 1, 10, "S3 ready again"
        )

        server.send_signal(signal.SIGSTOP)  # frozen again, and the stack is stopped
        report = await Fleet(photos(25)).run()
        assert report.ok, report.summary()
        stack.process.send_signal(signal.SIGTERM)
        await until(lambda: stack.process.poll() is not None, 90, "the devstack to exit")
        assert stack.process.returncode == 0
        assert stack.said("devstack: stopping with work left: assembler ") == 1
        assert stack.said("it is lost with the in-memory broker") == 1
        server.send_signal(signal.SIGCONT)
    figure(
        "devstack S3 frozen (SIGSTOP)",
        slow_threshold_s=2,
        freeze_to_s3_slow_log_s=round(logged, 2),
        oldest_request_age_s=round(age, 2),
        sigcont_to_stored_s=round(stored, 2),
    )

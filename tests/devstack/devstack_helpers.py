"""``fleetgate devstack`` as a user runs it, in a child process, against an s3rver the test owns
(so objects can be read after the stack exited, and the S3 server stopped with SIGSTOP)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from minio import Minio

from devstack.infra import S3RVER_KEY, Process, free_port, start_s3rver
from simulator import Fleet, FleetReport, SimulationConfig
from tests.bucket import contents

BUCKET = "fleetgate"


@dataclass
class Stack:
    process: subprocess.Popen[str]
    camera_port: int
    metrics_port: int  # the assembler's (0: off)
    s3: Process
    output: list[str]

    @property
    def s3_client(self) -> Minio:
        return Minio(f"127.0.0.1:{self.s3.port}", S3RVER_KEY, S3RVER_KEY, secure=False)

    def text(self) -> str:
        return "".join(self.output)

    def said(self, fragment: str) -> int:
        return sum(fragment in line for line in list(self.output))

    def said_again(self, service: str) -> bool:
        """The devstack said it restarted ``service``."""
        return self.said(f"starting {service} again") > 0

    def child(self, service: str) -> int:
        """PID of the devstack's ``fleetgate <service>`` child now."""
        for pid in _children(self.process.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"fleetgate" in argv and service.encode() in argv:
                return pid
        raise LookupError(f"no {service} child of the devstack")

    def objects(self) -> dict[str, bytes]:
        return contents(self.s3_client, BUCKET)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


@contextlib.contextmanager
def devstack(tmp_path: Path, *, metrics: bool = False, **settings: str) -> Iterator[Stack]:
    s3 = start_s3rver(tmp_path / "s3", log=tmp_path / "s3rver.log")
    client = Minio(f"127.0.0.1:{s3.port}", S3RVER_KEY, S3RVER_KEY, secure=False)
    client.make_bucket(BUCKET)
    base = free_port(count=3) if metrics else 0  # ingestor, assembler, connector
    camera = free_port()
    env = os.environ | {
        "FLEETGATE_DATA_DIR": str(tmp_path / "data"),
        "FLEETGATE_CAMERA_PORT": str(camera),
        "FLEETGATE_DMT_PORT": str(free_port()),
        "FLEETGATE_KAFKA_PORT": str(free_port()),
        "FLEETGATE_S3_ENDPOINT": f"127.0.0.1:{s3.port}",
        "FLEETGATE_SINK_PORT": str(free_port()),
        "FLEETGATE_METRICS_BASE_PORT": str(base),
        "FLEETGATE_LOG_JSON": "true",
        "PYTHONWARNINGS": "ignore",
    }
    env |= {f"FLEETGATE_{k.upper()}": v for k, v in settings.items()}
    env.pop("FLEETGATE_KAFKA_BOOTSTRAP", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "fleetgate", "devstack"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)

    threading.Thread(target=pump, daemon=True).start()
    stack = Stack(process, camera, base + 1 if base else 0, s3, output)
    try:
        wait_for(
            lambda: stack.said("fleetgate is running") > 0 or process.poll() is not None,
            90,
            "the devstack to start",
        )
        if process.poll() is not None:
            raise RuntimeError("devstack did not start:\n" + "".join(output[-40:]))
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if s3.popen is not None and s3.popen.poll() is None:
            s3.popen.send_signal(signal.SIGCONT)  # a test may have stopped it
        s3.stop()


def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(0.05)


def accepted_files(config: SimulationConfig, report: FleetReport) -> list[bytes]:
    """The bytes of every file the devices were told is done. A device reports how many files
    and how many bytes were accepted, not which (the server picks the order), so the files are
    the one subset of its files with that count and size (an ambiguous plan is an error)."""
    plans = {plan.imei: plan for plan in Fleet(config).plans}
    out = []
    for outcome in report.outcomes:
        files = plans[outcome.imei].files(config.content)
        matches = [
            subset
            for subset in itertools.combinations(files, outcome.files_accepted)
            if sum(len(item.data) for item in subset) == outcome.payload_bytes
        ]
        if len(matches) != 1:
            raise AssertionError(f"cannot tell which files of {outcome.imei} were accepted")
        out += [item.data for item in matches[0]]
    return out


def figure(name: str, **values: object) -> None:
    print(f"\n[reliability] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))

"""The whole pipeline as a user runs it: ``fleetgate devstack`` in a child process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devstack.infra import free_port
from tests.helpers import eventually_sync


@dataclass
class Receiver:
    """A threaded HTTP server keeping every webhook; while ``hold`` is clear it keeps the
    requests waiting (answering 204 once it is set, if the caller is still there)."""

    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    held: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, body in self.received]

    def stored(self) -> dict[str, dict[str, Any]]:
        """event_id -> the data of each file.stored webhook (duplicates collapse)."""
        stored = [b["data"] for b in self.bodies() if b["type"] == "file.stored"]
        return {data["event_id"]: data for data in stored}


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    state.hold.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            with state.lock:
                state.received.append((dict(self.headers.items()), body))
                if not state.hold.is_set():
                    state.held += 1
            state.hold.wait(60)
            with contextlib.suppress(OSError):
                self.send_response(204)
                self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    state.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.server.daemon_threads = True
    thread = threading.Thread(target=state.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.hold.set()
        state.server.shutdown()
        state.server.server_close()


@dataclass
class Stack:
    process: subprocess.Popen[str]
    camera_port: int
    s3_endpoint: str
    data_dir: Path
    output: list[str]
    kafka_bootstrap: str = ""
    dmt_port: int = 0


@contextmanager
def devstack(tmp_path: Path, connector_config: Path, kafka: str | None = None) -> Iterator[Stack]:
    """``fleetgate devstack`` on its embedded Tansu, or on the running Kafka ``kafka``."""
    ports = {name: free_port() for name in ("camera", "dmt", "kafka", "s3", "metrics")}
    env = os.environ | {
        "FLEETGATE_DATA_DIR": str(tmp_path / "data"),
        "FLEETGATE_CAMERA_PORT": str(ports["camera"]),
        "FLEETGATE_DMT_PORT": str(ports["dmt"]),
        "FLEETGATE_KAFKA_PORT": str(ports["kafka"]),
        "FLEETGATE_S3_PORT": str(ports["s3"]),
        "FLEETGATE_METRICS_BASE_PORT": "0",
        "FLEETGATE_CONNECTOR_CONFIG": str(connector_config),
        "FLEETGATE_LOG_JSON": "true",
    }
    env.pop("FLEETGATE_KAFKA_BOOTSTRAP", None)
    if kafka is not None:
        env["FLEETGATE_KAFKA_BOOTSTRAP"] = kafka
    env.pop("FLEETGATE_S3_ENDPOINT", None)
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

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    stack = Stack(process, ports["camera"], f"127.0.0.1:{ports['s3']}", tmp_path / "data", output)
    stack.kafka_bootstrap = f"127.0.0.1:{ports['kafka']}"
    stack.dmt_port = ports["dmt"]
    try:
        deadline = time.monotonic() + 60
        while not any("fleetgate is running" in line for line in output):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("devstack did not start:\n" + "".join(output[-40:]))
            time.sleep(0.05)
        yield stack
    finally:
        process.terminate()  # an ordered stop: it waits for the consumers to catch up
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            # A second SIGTERM stops it without waiting, children included. SIGKILL would
            # leave them running, holding our pipe open (the reader thread would never end).
            process.terminate()
            process.wait(60)
        pumper.join(10)  # EOF once every child is gone; closing under a reading thread races
        if process.stdout is not None and not pumper.is_alive():
            process.stdout.close()


wait_for = eventually_sync  # the shared helper (tests/helpers.py), under its old name

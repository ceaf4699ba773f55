"""What the pipeline benchmark measures from outside the processes: CPU seconds and resident
memory from /proc, Prometheus counters over HTTP, webhooks from the sink's JSON lines, and
the time each simulated camera sent a file's last packet."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from camproto import CameraDevice, DeviceConnection, DeviceFile, FileAccepted
from simulator import SimulatedDevice

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except OSError:
        return 0


def scrape(port: int) -> dict[str, float]:
    """A /metrics page as ``{"name{labels}": value}`` (0-port: nothing)."""
    if not port:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                continue
    return values


def metric(values: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the series of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in values.items():
        base, _, rest = key.partition("{")
        if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


@dataclass
class Webhook:
    received: float  # epoch seconds
    body: dict[str, Any]

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.body.get("data", {})
        return data


@dataclass
class WebhookLog:
    """The sink's JSON lines, read as they grow."""

    path: Path
    seen: list[Webhook] = field(default_factory=list)
    _offset: int = 0

    def poll(self) -> int:
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                chunk = file.read()
        except FileNotFoundError:
            return len(self.seen)
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        for line in chunk[:end].splitlines():
            item = json.loads(line)
            at = item["received_at"]
            received = _epoch(at)
            body = item["body"] if isinstance(item["body"], dict) else {}
            self.seen.append(Webhook(received, body))
        return len(self.seen)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def epoch(iso: str) -> float:
    return _epoch(iso)


class TimedDevice(SimulatedDevice):
    """A simulated camera that notes when each file's last packet left (epoch seconds),
    keyed by (IMEI, file identifier) as webhooks name them."""

    last_packet: ClassVar[dict[tuple[str, str], float]] = {}

    def after_send(self, connection: DeviceConnection) -> None:
        item = connection.current
        fresh = item is not None and connection.all_sent and id(item) not in self._sent
        super().after_send(connection)
        if fresh and item is not None:
            key = (f"{self.plan.imei:015d}", item.file.path)
            TimedDevice.last_packet[key] = time.time()


async def trickle_device(
    port: int, files: list[DeviceFile], imei: int, interval: float, active: list[int]
) -> bool:
    """A camera on a slow link: commands (INIT, SYNC...) go out at once, DATA packets one
    every ``interval`` s. ``active[0]`` counts devices past their first packet. True once
    every file was accepted."""
    wanted = len(files)  # the device drops files from the list as they are accepted
    conn = CameraDevice(imei=imei, files=files).connect()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    wake = asyncio.Event()
    accepted = 0

    async def read() -> None:
        nonlocal accepted
        while data := await reader.read(64 * 1024):
            accepted += sum(isinstance(e, FileAccepted) for e in conn.receive_data(data))
            wake.set()
        conn.receive_data(b"", eof=True)
        wake.set()

    task = asyncio.create_task(read())
    counted = False
    try:
        while not conn.closed and not task.done():
            sent = conn.packets_sent
            out = conn.data_to_send(1)  # pending commands, else at most one DATA packet
            if out:
                writer.write(out)
                await writer.drain()
            if conn.packets_sent > sent:
                if not counted:
                    active[0] += 1
                    counted = True
                await asyncio.sleep(interval)
            elif not out:
                wake.clear()
                async with asyncio.timeout(60):
                    await wake.wait()
    finally:
        if counted:
            active[0] -= 1
        writer.close()
        task.cancel()
    return accepted == wanted

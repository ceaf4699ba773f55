"""The ingestor's own CPU per MB of camera file, Kafka left out: an in-process ingestor whose
sink acknowledges every record at once, fed by ``fleetgate simulate`` in another process.
Prints one JSON line. Part of ``make bench`` (the pipeline benchmark runs it); separates
the edge, camera adapter and camproto from the Kafka client's share."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from ingestor.camera import CameraProtocol, CameraSettings
from ingestor.server import Ingestor
from ingestor.settings import IngestorSettings


class _Meta:
    __slots__ = ("offset", "partition")

    def __init__(self, offset: int) -> None:
        self.offset, self.partition = offset, 0


class InstantSink:
    """Every record acknowledged as it is sent."""

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        self.records += 1
        self.bytes += len(value)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(_Meta(self.records))
        return future


async def measure(devices: int, video: str) -> dict[str, float]:
    sink = InstantSink()
    edge = IngestorSettings(kafka_bootstrap="127.0.0.1:1", instance="bench", log_level="warning")
    camera = CameraProtocol(
        CameraSettings(host="127.0.0.1", port=0), edge, sink, read_progress=False
    )
    ingestor = Ingestor(edge, sink, [camera])
    await ingestor.start()
    port = ingestor.ports["camera"]
    fleet = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "fleetgate", "simulate", "--port", str(port)],
        *["--devices", str(devices), "--video-size", video, "--progress-interval", "1000"],
        stdout=asyncio.subprocess.DEVNULL,
    )
    cpu = time.process_time()
    await fleet.wait()
    used = time.process_time() - cpu
    await ingestor.stop()
    megabytes = sink.bytes / 1e6
    return {"megabytes": megabytes, "cpu_ms_per_mb": 1000 * used / megabytes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--video-size", default="4M")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.devices, args.video_size))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`make bench`: protocol-core figures (CRC throughput, in-memory transfer through the pair).

Prints one table; ``--json`` prints the same figures as JSON. Timings are best of ``--repeat``
runs on this machine; they are figures to report, not pass/fail checks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable

from camproto import (
    DATA_CHUNK,
    CameraDevice,
    CameraFile,
    DefaultPolicy,
    DeviceFile,
    DualCamSlot,
    ServerConnection,
    TransferComplete,
    crc16,
)

MB = 1e6


def best(run: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_crc(repeat: int) -> dict[str, float]:
    data = os.urandom(64 * 1024 * 1024)
    packets = [data[i : i + DATA_CHUNK] for i in range(0, 16 * 1024 * 1024, DATA_CHUNK)]

    def whole() -> None:
        crc16(data)

    def chained() -> None:
        crc = 0
        for packet in packets:
            crc = crc16(packet, crc)

    return {
        "crc_whole_buffer_MBps": len(data) / best(whole, repeat) / MB,
        "crc_chained_1KiB_packets_MBps": len(packets) * DATA_CHUNK / best(chained, repeat) / MB,
    }


def transfer(video: bytes, write_size: int) -> None:
    """One DualCam session uploading ``video`` through a device/server pair in memory."""
    item = DeviceFile(CameraFile.for_slot(DualCamSlot.VIDEO_REAR), video, bytes(32))
    device = CameraDevice(imei=352094082736916, files=[item]).connect()
    server = ServerConnection(DefaultPolicy(metadata=False))
    received = 0
    while not device.closed:
        for event in server.receive_data(device.data_to_send(write_size), 0.0):
            if isinstance(event, TransferComplete):
                received = event.size
                server.confirm_file()
        device.receive_data(server.data_to_send())
    if received != len(video):
        raise SystemExit(f"transfer broken: {received} of {len(video)} bytes")


def bench_transfer(repeat: int, size: int) -> dict[str, float]:
    video = os.urandom(size)
    figures: dict[str, float] = {}
    for write_size, label in ((64 * 1024, "64KiB"), (DATA_CHUNK + 6, "one_packet")):
        seconds = best(lambda w=write_size: transfer(video, w), repeat)  # type: ignore[misc]
        figures[f"transfer_6MB_writes_{label}_MBps"] = size / seconds / MB
    tracemalloc.start()
    transfer(video, 64 * 1024)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    figures["transfer_peak_alloc_KiB"] = peak / 1024
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--video-bytes", type=int, default=6 * 1000 * 1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = bench_crc(args.repeat) | bench_transfer(args.repeat, args.video_bytes)
    if args.json:
        print(json.dumps({k: round(v, 1) for k, v in figures.items()}, indent=2))
    else:
        print(f"camproto benchmarks (python {sys.version.split()[0]}, best of {args.repeat})")
        for name, value in figures.items():
            print(f"  {name:<40} {value:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

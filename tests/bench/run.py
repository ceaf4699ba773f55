"""`make bench`: protocol-core figures (CRC throughput, in-memory camera transfer through the
pair; Digital Matter records through the device/server pair, decode alone, mapping to the
records contract, memory per session).

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
from datetime import UTC, datetime

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
from contracts.dmt import telemetry_record, telemetry_record_json
from dmtproto import (
    Analogue16,
    Analogue16Field,
    CommitRequested,
    DigitalField,
    DmtDevice,
    GpsField,
    Hello,
    MessageType,
    RecordReceived,
    encode,
    encode_hello,
)
from dmtproto import ServerConnection as DmtServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.bench import dmt_ingest

MB = 1e6


def best(
    run: Callable[[], None], repeat: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    times = []
    for _ in range(repeat):
        start = clock()
        run()
        times.append(clock() - start)
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


DMT_HELLO = Hello(
    serial=129336,
    imei="353323081669730",
    iccid="89610185001824844630",
    product_id=34,
    hardware_revision=2,
    firmware_major=1,
    firmware_minor=9,
)
DMT_HELLO_REPLY = encode(MessageType.HELLO_RESPONSE, bytes(8))


def dmt_device(records: int) -> DmtDevice:
    """A tracker holding ``records`` typical records (GPS, digital I/O, 5 analogues: 61 bytes)."""
    device = DmtDevice(DMT_HELLO)
    for i in range(records):
        device.log(
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
                    values=tuple(Analogue16(a, v) for a, v in ((1, 4125), (3, 2112), (4, 24),
                                                               (5, 4072), (6, 7214)))
                ),
            ),
        )  # fmt: skip
    return device


def dmt_session(device: DmtDevice, per_message: int, per_commit: int) -> int:
    """One connection uploading everything the device holds; returns the records received."""
    conn = device.connect(records_per_message=per_message, records_per_commit=per_commit)
    server = DmtServer(now=0.0, unix_time=1.8e9)
    received = 0
    while not conn.finished:
        for event in server.receive_data(conn.data_to_send(), 0.0):
            if isinstance(event, RecordReceived):
                received += 1
            elif isinstance(event, CommitRequested):
                server.commit()
        conn.receive_data(server.data_to_send())
    return received


def bench_dmt(repeat: int, records: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for per_message, per_commit, label in ((16, 256, "16_per_msg"), (1, 32, "1_per_msg")):

        def pair(m: int = per_message, c: int = per_commit) -> None:
            if dmt_session(dmt_device(records), m, c) != records:
                raise SystemExit("dmt pair lost records")

        figures[f"dmt_pair_{label}_records_per_s"] = records / best(pair, repeat)

    # Decode alone: the server fed a captured byte stream (what one ingestor session does).
    device = dmt_device(records)
    conn = device.connect(records_per_message=16, records_per_commit=records)
    conn.receive_data(DMT_HELLO_REPLY)
    stream = conn.data_to_send()  # HELLO, the records in 0x04 messages, COMMIT
    decoded: list[RecordReceived] = []

    reads = [stream[i : i + 64 * 1024] for i in range(0, len(stream), 64 * 1024)]

    def decode() -> None:  # in 64 KiB reads, as a socket delivers them
        server = DmtServer(now=0.0, unix_time=1.8e9)
        decoded.clear()
        for read in reads:
            events = server.receive_data(read, 0.0)
            decoded.extend(e for e in events if isinstance(e, RecordReceived))

    figures["dmt_server_decode_records_per_s"] = records / best(decode, repeat)
    # The same in CPU time: what one core can do when other processes share the machine.
    figures["dmt_server_decode_records_per_cpu_s"] = records / best(
        decode, repeat, time.process_time
    )
    figures["dmt_stream_bytes_per_record"] = len(stream) / records

    def encode_all() -> None:
        dmt_device(records).connect(records_per_commit=records).receive_data(DMT_HELLO_REPLY)

    figures["dmt_device_log_and_encode_records_per_s"] = records / best(encode_all, repeat)

    at = datetime.now(UTC)

    def to_contract() -> None:
        for event in decoded:
            telemetry_record(event.record, DMT_HELLO, session_id="s", ingestor="i", received_at=at)

    def to_json() -> None:
        for event in decoded:
            telemetry_record_json(
                event.record, DMT_HELLO, session_id="s", ingestor="i", received_at=at
            )

    figures["dmt_to_records_v1_model_per_s"] = records / best(to_contract, repeat)
    figures["dmt_to_records_v1_json_per_s"] = records / best(to_json, repeat)
    figures["dmt_to_records_v1_json_per_cpu_s"] = records / best(to_json, repeat, time.process_time)

    # Memory held by idle server sessions after HELLO (the protocol core's share only).
    sessions = 2000
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = []
    for _ in range(sessions):
        server = DmtServer(now=0.0, unix_time=1.8e9)
        server.receive_data(encode_hello(DMT_HELLO), 0.0)
        server.data_to_send()
        held.append(server)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    figures["dmt_server_session_bytes"] = (after - before) / sessions
    return figures


def bench_connector_bodies(repeat: int, records: int) -> dict[str, float]:
    """The connector's per-attempt CPU work on a record, no I/O: the body in each format, the
    headers (signature, dynamic fields) and the URL. A batch of 20 is one body and one set of
    headers for 20 records."""
    from connector.config import parse_config
    from connector.delivery import EndpointClient
    from connector.events import dynamic_fields, render
    from connector.presign import Presigner
    from connector.settings import ConnectorSettings

    secret = "whsec_" + "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="
    config = parse_config(
        "endpoints:\n"
        + "".join(
            f"  - {{name: {name}, url: 'https://example.com/dm/[IMEI]', format: {fmt},"
            f" secrets: ['{secret}'], headers: {{X-Device: '[IMEI]-[SERIAL]'}}}}\n"
            for name, fmt in (("plain", "fleetgate"), ("oem", "oem"))
        )
    )
    presigner = Presigner(ConnectorSettings())
    at = datetime.now(UTC)
    device = dmt_device(records)
    conn = device.connect(records_per_message=16, records_per_commit=records)
    conn.receive_data(DMT_HELLO_REPLY)
    server = DmtServer(now=0.0, unix_time=1.8e9)
    events = server.receive_data(conn.data_to_send(), 0.0)
    values = [
        telemetry_record(e.record, DMT_HELLO, session_id="s", ingestor="i", received_at=at)
        for e in events
        if isinstance(e, RecordReceived)
    ]
    figures: dict[str, float] = {}
    for endpoint in config.endpoints:
        client = EndpointClient(endpoint)

        def one_by_one(client: EndpointClient = client) -> None:
            for value in values:
                fields = dynamic_fields(value)
                body = render(client.endpoint, value, presigner)
                client.headers(value.event_id, value.imei, body, fields=fields)
                client.url(fields)

        figures[f"connector_{endpoint.format}_body_records_per_s"] = records / best(
            one_by_one, repeat
        )
    from connector.batch import RecordBatch

    oem = EndpointClient(config.endpoints[1])
    batches = [
        RecordBatch.of(values[i : i + 20], [None] * len(values[i : i + 20]))
        for i in range(0, len(values), 20)
    ]

    def batched() -> None:
        for batch in batches:
            body = render(oem.endpoint, batch, presigner)
            oem.headers(batch.event_id, batch.imei, body, fields=dynamic_fields(batch))

    figures["connector_oem_batch20_body_records_per_s"] = records / best(batched, repeat)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--video-bytes", type=int, default=6 * 1000 * 1000)
    parser.add_argument("--dmt-records", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--no-ingest", action="store_true", help="skip the Digital Matter ingest benchmark"
    )
    dmt_ingest.add_arguments(parser)
    args = parser.parse_args(argv)
    figures = (
        bench_crc(args.repeat)
        | bench_transfer(args.repeat, args.video_bytes)
        | bench_dmt(args.repeat, args.dmt_records)
        | bench_connector_bodies(args.repeat, 5_000)
    )
    if not args.no_ingest:
        figures |= dmt_ingest.bench_dmt_ingest(args)
    if args.json:
        print(json.dumps({k: round(v, 1) for k, v in figures.items()}, indent=2))
    else:
        print(f"protocol-core benchmarks (python {sys.version.split()[0]}, best of {args.repeat})")
        for name, value in figures.items():
            print(f"  {name:<40} {value:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

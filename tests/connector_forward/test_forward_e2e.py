"""Raw TCP forwarding end to end: a binary Digital Matter device -> the real ingestor -> real
Kafka -> the connector -> a Digital Matter server (``dmtproto``'s server role) on a real
socket, which gets every record byte for byte and commits."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2

from connector.forward.replay import replay_forward
from contracts import Topic
from contracts.records import RawHeader, TelemetryRecord
from devstack.infra import DEFAULT_PARTITIONS
from dmtproto import Hello, MessageType, encode, encode_hello
from ingestor.server import Ingestor
from tests.connector.connector_helpers import (
    committed_offsets,
    config_of,
    metric,
    receivers,
    running,
    wait_dead_letters,
)
from tests.connector_forward.forward_helpers import (
    DmServer,
    free_port,
    record_bytes,
    settings,
    upload,
    wait_for,
)
from tests.dmt_e2e.dmt_helpers import running as ingestor_running
from tests.dmt_e2e.dmt_helpers import tracker
from tests.helpers import eventually_async

A, B = "352093081234567", "352093089999999"


def _port(ingestor: Ingestor) -> int:
    return ingestor.ports["dmt"]


async def _raw_topic(kafka: str, count: int) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    """The first ``count`` messages of fleetgate.dmt.raw.v1 (key, value, headers)."""
    consumer = AIOKafkaConsumer(
        str(Topic.DMT_RAW), bootstrap_servers=kafka, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    out: list[tuple[bytes, bytes, dict[str, bytes]]] = []
    await consumer.start()
    try:
        async with asyncio.timeout(20):
            while len(out) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    out += [(r.key, r.value, dict(r.headers)) for r in records]
    finally:
        await consumer.stop()
    return out


async def _all_committed(kafka: str, group: str, total: int) -> None:
    """The group's offsets on the raw topic cover ``total`` messages."""

    async def check() -> bool:
        return sum((await committed_offsets(kafka, group, str(Topic.DMT_RAW))).values()) == total

    await eventually_async(check, 20, f"{group} committed {total} raw-topic offsets")


def _with_junk(hello: Hello) -> bytes:
    """The HELLO message with a byte of junk after the ICCID's terminating NUL: the device's
    own bytes, which re-encoding the decoded HELLO would not give back."""
    message = bytearray(encode_hello(hello))
    iccid_end = 5 + 4 + 16 + 21
    assert message[iccid_end - 2 : iccid_end] == b"\x00\x00"
    message[iccid_end - 1] = 0xAA
    return bytes(message)


async def test_every_record_reaches_the_server_byte_for_byte(kafka: str) -> None:
    a = tracker(A, records=5)
    b = tracker(B, records=7, serial=77)
    # A 51-byte HELLO: its two unknown bytes must reach the server too.
    b.hello = replace(b.hello, iccid="8961018000412345678", extra=b"\x07\x09")
    b.hello_message = _with_junk(b.hello)
    sent_a, sent_b = record_bytes(list(a.pending)), record_bytes(list(b.pending))
    server = await DmServer().start()
    config = config_of({"name": "fwd-tg", "url": server.url, "format": "dmt"})
    try:
        async with ingestor_running(kafka) as (ingestor, _), running(settings(kafka), config):
            port = _port(ingestor)
            await upload(port, a, records_per_message=1)
            await upload(port, b, records_per_message=4)  # split into one message a record
            await wait_for(
                lambda: server.committed(A) == sent_a and server.committed(B) == sent_b,
                "every record of both devices committed by the server",
            )
            # Two sessions in, 14 messages (2 HELLOs, 12 records) on the raw topic: the
            # connector commits its offsets only now that the server committed.
            await _all_committed(kafka, "fleetgate-connector-fwd-tg", 14)
            await wait_for(lambda: server.open == 0, "the forwarder's connections closed")
    finally:
        await server.stop()
    # The HELLO each device sent, byte for byte (the 51-byte one too).
    assert server.devices[A].hellos == [encode_hello(a.hello)]
    assert server.devices[B].hellos == [b.hello_message]
    assert len(b.hello_message) == 5 + 51 and b.hello_message != encode_hello(b.hello)
    # Every record exactly once, in order, and on the wire: per connection the HELLO, the
    # raw topic's messages byte for byte, one commit request.
    assert server.devices[A].records == sent_a and server.devices[B].records == sent_b
    raw = await _raw_topic(kafka, 14)
    for imei, device in ((A, a), (B, b)):
        published = [
            value
            for key, value, headers in raw
            if key == imei.encode() and headers[RawHeader.MESSAGE_TYPE] != b"0"
        ]
        hello = device.hello_message or encode_hello(device.hello)
        commit = encode(MessageType.COMMIT_REQUEST)
        middles = []
        for stream in server.devices[imei].streams:
            assert stream.startswith(hello) and stream.endswith(commit)
            middles.append(stream[len(hello) : -len(commit)])
        assert b"".join(middles) == b"".join(published)
    assert published[0] == encode(MessageType.DATA_RECORDS, sent_b[0])  # B's split message
    assert not server.errors
    assert metric("fleetgate_connector_forward_records_total", endpoint="fwd-tg") == 12
    sessions = "fleetgate_connector_forward_sessions_total"
    assert metric(sessions, endpoint="fwd-tg", result="success") >= 2


async def test_a_target_down_for_a_while_loses_nothing(kafka: str) -> None:
    """Down while devices upload and across a connector restart: when it is back, every
    record arrives, in order per device, none twice; the breaker opened meanwhile."""
    port = free_port()
    server = DmServer(port)
    a = tracker(A, records=6)
    b = tracker(B, records=4, serial=77)
    sent_a, sent_b = record_bytes(list(a.pending)), record_bytes(list(b.pending))
    a_later = a.pending[3:]
    a.pending = a.pending[:3]
    config = config_of(
        {
            "name": "fwd-down",
            "url": server.url,
            "format": "dmt",
            "timeout_seconds": 2,
            "circuit_breaker": {"failures": 2, "open_seconds": "1s"},
        },
        retry={"schedule": ["200ms", "500ms", "1s"], "max_age": "2m", "jitter": 0.1},
    )
    group = "fleetgate-connector-fwd-down"

    def failures() -> float:
        return metric(
            "fleetgate_connector_forward_sessions_total", endpoint="fwd-down", result="failure"
        )

    try:
        async with ingestor_running(kafka) as (ingestor, _):
            await upload(_port(ingestor), a)
            async with running(settings(kafka), config):
                await wait_for(lambda: failures() >= 2, "two failed sessions")
                await wait_for(
                    lambda: metric("fleetgate_connector_circuit_state", endpoint="fwd-down") == 2,
                    "the circuit breaker open",
                )
            # Stopped without a delivery: nothing committed past the HELLO (offset 0, nothing
            # to send), so a restart starts over at the first record.
            held = await committed_offsets(kafka, group, str(Topic.DMT_RAW))
            assert all(offset <= 1 for offset in held.values()), held
            a.pending = a_later
            await upload(_port(ingestor), a)
            await upload(_port(ingestor), b)
            async with running(settings(kafka), config):
                before = failures()
                await wait_for(lambda: failures() > before, "a failure after the restart")
                await server.start()  # back, on the same port
                await wait_for(
                    lambda: server.committed(A) == sent_a and server.committed(B) == sent_b,
                    "everything delivered once the target is back",
                )
                await _all_committed(kafka, group, 3 + 10)
    finally:
        await server.stop()
    assert server.devices[A].records == sent_a  # in order, none twice
    assert server.devices[B].records == sent_b
    assert metric("fleetgate_connector_dead_letters_total", endpoint="fwd-down") == 0


def _same_partition() -> tuple[str, str]:
    """Two IMEIs whose raw-topic records share a partition (Kafka's default partitioner)."""
    partitions = DEFAULT_PARTITIONS[Topic.DMT_RAW]
    first = A.encode()
    for n in range(1000):
        other = f"35209308{n:07d}"
        if other != A and _partition(other.encode(), partitions) == _partition(first, partitions):
            return A, other
    raise AssertionError("no two IMEIs in one partition")


def _partition(key: bytes, partitions: int) -> int:
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


async def test_a_device_the_server_refuses_holds_back_no_other(kafka: str) -> None:
    """Two devices in one Kafka partition: the server never commits the first one's records,
    the second one's are delivered all the same; the offset stays before the first's."""
    stuck_imei, other_imei = _same_partition()
    stuck, other = tracker(stuck_imei, records=3), tracker(other_imei, records=3, serial=9)
    sent_other = record_bytes(list(other.pending))
    server = await DmServer(refuse=frozenset({stuck_imei})).start()
    config = config_of(
        {"name": "fwd-stuck", "url": server.url, "format": "dmt", "timeout_seconds": 0.3},
        retry={"schedule": ["200ms", "500ms"], "max_age": "2m", "jitter": 0.1},
    )
    group = "fleetgate-connector-fwd-stuck"
    try:
        async with ingestor_running(kafka) as (ingestor, _), running(settings(kafka), config):
            await upload(_port(ingestor), stuck)  # offsets 0 (HELLO), 1..3
            await upload(_port(ingestor), other)  # offsets 4 (HELLO), 5..7
            await wait_for(
                lambda: server.committed(other_imei) == sent_other,
                "the other device's records delivered while the first one's wait",
            )
            partition = _partition(stuck_imei.encode(), DEFAULT_PARTITIONS[Topic.DMT_RAW])

            async def held_at_the_stuck_record() -> bool:
                # One partition only (both devices share it), committed up to the stuck record.
                offsets = await committed_offsets(kafka, group, str(Topic.DMT_RAW))
                return offsets == {partition: 1}

            await eventually_async(held_at_the_stuck_record, 20, "the offset held at 1")
            assert server.devices[stuck_imei].records and not server.committed(stuck_imei)
    finally:
        await server.stop()
    raw = await _raw_topic(kafka, 8)
    assert {key for key, _, _ in raw} == {stuck_imei.encode(), other_imei.encode()}
    assert metric("fleetgate_connector_dead_letters_total", endpoint="fwd-stuck") == 0


async def test_a_forward_and_a_webhook_endpoint_both_get_everything(kafka: str) -> None:
    """The multi-connector: each endpoint independent, each gets every record."""
    device = tracker(A, records=4)
    sent = record_bytes(list(device.pending))
    server = await DmServer().start()
    try:
        with receivers() as receiver:
            hook = receiver()
            config = config_of(
                {"name": "fwd-split-tcp", "url": server.url, "format": "dmt"},
                {"name": "fwd-split-http", "url": hook.url, "filter": {"types": ["record"]}},
            )
            async with ingestor_running(kafka) as (ingestor, _), running(settings(kafka), config):
                await upload(_port(ingestor), device)
                await wait_for(
                    lambda: server.committed(A) == sent and len(hook.delivered()) == 4,
                    "all records at both endpoints",
                )
            bodies = [r.json()["data"] for r in hook.delivered()]
    finally:
        await server.stop()
    assert server.devices[A].records == sent
    assert sorted(b["sequence"] for b in bodies) == [1, 2, 3, 4]
    assert {b["device"]["imei"] for b in bodies} == {A}


async def test_a_server_that_never_commits_gets_retries_then_dead_letters(kafka: str) -> None:
    device = tracker(A, records=2)
    sent = record_bytes(list(device.pending))
    hello = encode_hello(device.hello)
    server = await DmServer(commits=False).start()
    config = config_of(
        {"name": "fwd-mute", "url": server.url, "format": "dmt", "timeout_seconds": 0.3},
        retry={"schedule": ["200ms", "500ms"], "max_age": "2s", "jitter": 0.1},
    )
    try:
        async with ingestor_running(kafka) as (ingestor, _), running(settings(kafka), config):
            await upload(_port(ingestor), device)
            letters = await wait_dead_letters(kafka, "fwd-mute", 2)
            # Parked, so done: the offsets move on.
            await _all_committed(kafka, "fleetgate-connector-fwd-mute", 3)
    finally:
        await server.stop()
    assert server.connections >= 2  # retried
    assert server.devices[A].records[:2] == sent and not server.committed(A)
    events = [letter.event for letter in letters]
    assert all(isinstance(event, TelemetryRecord) for event in events)
    by_sequence = {
        event.sequence: letter
        for event, letter in zip(events, letters, strict=True)
        if isinstance(event, TelemetryRecord)
    }
    for sequence, record in zip((1, 2), sent, strict=True):
        letter = by_sequence[sequence]
        assert letter.reason == "expired" and letter.attempts >= 2
        assert letter.last_error is not None and "commit response" in letter.last_error
        assert letter.raw_hex == encode(MessageType.DATA_RECORDS, record).hex()
        assert letter.hello_hex == hello.hex()
        assert letter.source is not None and letter.source.startswith(str(Topic.DMT_RAW))
    assert metric("fleetgate_connector_dead_letters_total", endpoint="fwd-mute") == 2
    # Once the server works, a replay sends the dead letters from their own bytes, once.
    fixed = await DmServer(server.port).start()
    endpoint = config.endpoint("fwd-mute")
    assert endpoint is not None
    try:
        report = await replay_forward(settings(kafka), config, endpoint)
        assert (report.delivered, report.failed, report.already) == (2, 0, 0), report.summary()
        again = await replay_forward(settings(kafka), config, endpoint)
        assert (again.delivered, again.already) == (0, 2), again.summary()
        # --since: every record of the raw topic in the range, again.
        since = await replay_forward(
            settings(kafka), config, endpoint, since=datetime(2026, 1, 1, tzinfo=UTC)
        )
        assert (since.delivered, since.failed) == (2, 0), since.summary()
    finally:
        await fixed.stop()
    assert fixed.devices[A].hellos == [hello, hello]
    assert fixed.devices[A].records == sent + sent
    assert fixed.committed(A) == sent + sent

"""Raw TCP forwarding in pieces: the config rules, what is read from the raw topic, the
per-device runs, and one connection against servers that misbehave (real sockets, no Kafka)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from connector.cli import lag_monitors
from connector.config import ConfigError, parse_config
from connector.forward.plan import Item, Offsets, Target, Unusable, read_item, runs
from connector.forward.session import forward
from connector.settings import ConnectorSettings
from contracts import Topic
from contracts.records import RawHeader
from dmtproto import (
    CommitRequested,
    DmtDevice,
    FixedRecord,
    HelloReceived,
    MessageType,
    RecordReceived,
    ServerConnection,
    decode_fixed_records,
    encode,
    encode_hello,
)
from tests.connector_forward.forward_helpers import DmServer, record_bytes, wait_for
from tests.dmt_e2e.dmt_helpers import tracker
from tests.dmtproto.dmtproto_helpers import FIXED

IMEI = "352093081234567"


def _config(**endpoint: Any) -> str:
    lines = [f"    {key}: {value}" for key, value in endpoint.items()]
    return "endpoints:\n  - name: tg\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("endpoint", "error"),
    [
        ({"url": "tcp://dmt.example.com:5000"}, "set 'format: dmt'"),
        ({"url": "https://x.example.com/", "format": "dmt"}, "the url must be tcp://host:port"),
        ({"url": "tcp://dmt.example.com", "format": "dmt"}, "tcp://host:port, nothing more"),
        ({"url": "tcp://dmt.example.com:5000/x", "format": "dmt"}, "nothing more"),
        (
            {"url": "tcp://dmt.example.com:5000", "format": "dmt", "headers": "{X-A: b}"},
            "'headers': HTTP options, meaningless for a tcp:// endpoint",
        ),
        (
            {"url": "tcp://dmt.example.com:5000", "format": "dmt", "auth": "{bearer: t}"},
            "'auth': HTTP options",
        ),
        (
            {"url": "tcp://dmt.example.com:5000", "format": "dmt", "tls": "{verify: false}"},
            "'tls': HTTP options",
        ),
        (
            {"url": "tcp://dmt.example.com:5000", "format": "dmt", "filter": "{media: [photo]}"},
            "forwards Digital Matter records only",
        ),
        (
            {"url": "tcp://dmt.example.com:5000", "format": "dmt",
             "filter": "{types: [file.stored]}"},
            "types: [record]",
        ),
        ({"url": "tcp://10.0.0.5:5000", "format": "dmt"}, "10.0.0.5 is a private address"),
        ({"url": "http://x.example.com/", "format": "rss"}, "format"),
    ],
)  # fmt: skip
def test_a_tcp_endpoint_takes_only_what_means_something_for_it(
    endpoint: dict[str, str], error: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(**endpoint), "c.yaml")
    assert error in str(caught.value) and "(endpoint 'tg')" in str(caught.value)


def test_a_tcp_endpoint_that_is_right() -> None:
    text = _config(
        url="tcp://dmt.example.com:5000",
        format="dmt",
        timeout_seconds=3,
        max_concurrency=4,
        filter="{types: [record], imeis: ['352093081234567']}",
        circuit_breaker="{failures: 2, open_seconds: 1s}",
    )
    (endpoint,) = parse_config(text).endpoints
    assert endpoint.forwards and Target.of(endpoint.url) == Target("dmt.example.com", 5000)
    assert str(Target.of("tcp://[::1]:7")) == "[::1]:7"
    (webhook,) = parse_config(_config(url="https://x.example.com/")).endpoints
    assert webhook.format == "fleetgate" and not webhook.forwards


# --- what is read from the raw topic ---------------------------------------------------------


def _raw(imei: str = IMEI, records: int = 2) -> tuple[bytes, list[bytes]]:
    """A device's HELLO message and its record messages, as the ingestor publishes them."""
    device = tracker(imei, records=records)
    messages = [encode(MessageType.DATA_RECORDS, r) for r in record_bytes(device.pending)]
    return encode_hello(device.hello), messages


def _headers(kind: bytes, hello: bytes | None = None) -> list[tuple[str, bytes]]:
    headers = [(RawHeader.MESSAGE_TYPE.value, kind), (RawHeader.RECEIVED_AT.value, b"1000")]
    if hello is not None:
        headers.append((RawHeader.HELLO.value, hello.hex().encode()))
    return headers


def test_a_record_goes_with_the_hello_of_its_header() -> None:
    hello, (first, _) = _raw()
    hellos: dict[str, bytes] = {}
    item = read_item(IMEI.encode(), first, _headers(b"4", hello), "t/0/1", hellos)
    assert item is not None and item.message == first and item.hello == hello
    assert item.record.sequence == 1 and item.source == "t/0/1" and len(item.record_id) == 32
    assert item.received_at is not None and item.received_at.timestamp() == 1.0
    assert item.telemetry().device.imei == IMEI
    assert hellos == {}


def test_a_record_without_the_header_goes_with_the_hello_read_before() -> None:
    hello, (first, _) = _raw()
    hellos: dict[str, bytes] = {}
    with pytest.raises(Unusable, match="no HELLO known"):
        read_item(IMEI.encode(), first, _headers(b"4"), "t/0/1", hellos)
    assert read_item(IMEI.encode(), hello, _headers(b"0"), "t/0/0", hellos) is None
    item = read_item(IMEI.encode(), first, _headers(b"4"), "t/0/1", hellos)
    assert item is not None and item.hello == hello


@pytest.mark.parametrize(
    ("value", "headers", "why"),
    [
        (None, [], "no key or no value"),
        (b"\x02\x55\x04\x03\x00abc", [], "not a record message"),
        (b"hello", [], "not a record message"),
        (b"\x02\x55\x00\x02\x00ab", [(RawHeader.MESSAGE_TYPE.value, b"0")], "not a HELLO"),
        (
            encode(MessageType.DATA_RECORDS, b"".join(record_bytes(tracker().pending))),
            [],
            "a message of 5 records",
        ),
        (_raw()[1][0], [(RawHeader.HELLO.value, b"zz")], "fg-hello is not hex"),
        (_raw()[1][0], [(RawHeader.HELLO.value, b"0255")], "not a HELLO"),
    ],
)  # fmt: skip
def test_what_cannot_be_forwarded_says_why(
    value: bytes | None, headers: list[tuple[str, bytes]], why: str
) -> None:
    with pytest.raises(Unusable, match=why):
        read_item(IMEI.encode(), value, headers, "t/0/0", {})


def test_runs_keep_each_device_in_order_and_split_where_the_hello_changes() -> None:
    hello_a, records_a = _raw(IMEI, 3)
    hello_b, records_b = _raw("352093089999999", 2)
    new_hello = hello_a[:-1] + b"\x01"  # the same device after a firmware update
    stream = [
        (IMEI, records_a[0], hello_a),
        ("352093089999999", records_b[0], hello_b),
        (IMEI, records_a[1], hello_a),
        (IMEI, records_a[2], new_hello),
        ("352093089999999", records_b[1], hello_b),
    ]
    items: list[Item] = []
    for offset, (imei, message, hello) in enumerate(stream):
        item = read_item(imei.encode(), message, _headers(b"4", hello), f"t/0/{offset}", {})
        assert item is not None
        items.append(item)
    by_device = runs(items)
    assert list(by_device) == [IMEI, "352093089999999"]
    a_runs = by_device[IMEI]
    assert [r.hello for r in a_runs] == [hello_a, new_hello]
    assert [[i.message for i in r.items] for r in a_runs] == [records_a[:2], records_a[2:]]
    (b_run,) = by_device["352093089999999"]
    assert [i.message for i in b_run.items] == records_b


def test_the_device_core_sends_a_given_hello_message_verbatim() -> None:
    device = tracker(records=0)
    own = bytearray(encode_hello(device.hello))
    own[-5] = 0x5A  # a byte no re-encoding would give
    device.hello_message = bytes(own)
    assert device.connect().data_to_send() == bytes(own)
    assert DmtDevice(device.hello).connect().data_to_send() == encode_hello(device.hello)


# --- one connection against servers that misbehave ---------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, Target]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, Target("127.0.0.1", server.sockets[0].getsockname()[1])


def _dm_server(
    on_commit: Callable[[int, ServerConnection], bytes | None],
) -> tuple[Handler, list[int]]:
    """A dmtproto server whose answer to the n-th commit request ``on_commit`` decides: bytes
    to send instead of the commit (b"" commits normally), or None to hang up."""
    records: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConnection(now=time.monotonic(), unix_time=time.time())
        commits = 0
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data, time.monotonic()):
                    if isinstance(event, RecordReceived):
                        records.append(event.record.sequence)
                    elif isinstance(event, CommitRequested):
                        commits += 1
                        answer = on_commit(commits, conn)
                        if answer is None:
                            return
                        if answer:
                            conn.data_to_send()
                            writer.write(answer)
                            continue
                        conn.commit()
                    elif isinstance(event, HelloReceived):
                        pass
                writer.write(conn.data_to_send())
                await writer.drain()
        finally:
            writer.close()

    return handler, records


@pytest.mark.parametrize(
    ("on_commit", "committed", "error"),
    [
        (lambda n, c: b"", 5, None),
        (lambda n, c: encode(MessageType.COMMIT_RESPONSE, b"\x00"), 0, "with status 0"),
        (lambda n, c: b"" if n == 1 else None, 2, "closed the connection (waiting for a commit"),
        (lambda n, c: b"\x02\x55\x7f\x00\x00", 0, "protocol error from the server"),
        (lambda n, c: b"\x99", 0, "sync bytes"),
        (lambda n, c: b"" if n < 3 else b"\x02", 4, "no answer within 0.3 s"),
    ],
)  # fmt: skip
async def test_one_connection_reports_how_far_the_server_got(
    on_commit: Callable[[int, ServerConnection], bytes | None], committed: int, error: str | None
) -> None:
    handler, received = _dm_server(on_commit)
    server, target = await _serve(handler)
    device = tracker(records=5)
    try:
        outcome = await forward(
            target, device, wait_seconds=0.3, allow_private=True, records_per_commit=2
        )
    finally:
        server.close()
        await server.wait_closed()
    assert outcome.committed == committed and len(device.pending) == 5 - committed
    assert outcome.error is None if error is None else error in (outcome.error or "")
    assert outcome.ok is (error is None) and outcome.alive is (error is None)
    assert outcome.sent_bytes > 0 and received == list(range(1, len(received) + 1))


async def test_a_server_that_never_answers_the_hello() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):  # never answers; closes when the client does
            pass
        writer.close()

    server, target = await _serve(mute)
    try:
        outcome = await forward(target, tracker(records=1), wait_seconds=0.2, allow_private=True)
    finally:
        server.close()
        await server.wait_closed()
    assert outcome.error == "no answer within 0.2 s (waiting for the hello response)"


async def test_nobody_listening_and_a_private_destination() -> None:
    server, target = await _serve(_dm_server(lambda n, c: b"")[0])
    server.close()
    await server.wait_closed()
    down = await forward(target, tracker(records=1), wait_seconds=1, allow_private=True)
    assert down.error is not None and "ConnectionRefusedError" in down.error
    assert down.alive is False and not down.refused
    refused = await forward(target, tracker(records=1), wait_seconds=1)
    assert refused.refused and refused.alive is None and refused.sent_bytes == 0
    assert refused.error is not None and "127.0.0.1 is a loopback address" in refused.error


def test_offsets_commit_up_to_the_oldest_unfinished_record() -> None:
    offsets = Offsets()
    assert offsets.committable is None
    offsets.add(range(10, 16))
    offsets.finish([10])  # a HELLO: nothing to send
    assert offsets.committable == 11 and offsets.open == 5
    offsets.finish([13, 14, 15])  # another device's records, done first
    assert offsets.committable == 11 and len(offsets) == 5
    offsets.finish([12])
    assert offsets.committable == 11
    offsets.finish([11])  # the stuck device's record: everything behind it goes too
    assert offsets.committable == 16 and len(offsets) == 0 and offsets.open == 0
    offsets.add([16, 17])
    offsets.finish([17])
    assert offsets.committable == 16 and len(offsets) == 2


def test_the_lag_of_a_forwarding_endpoint_is_on_the_raw_topic() -> None:
    config = parse_config(
        "endpoints:\n"
        "  - {name: fwd-lag, url: 'tcp://dmt.example.com:5000', format: dmt}\n"
        "  - {name: hook-lag, url: 'https://x.example.com/'}\n"
    )
    monitors = lag_monitors(ConnectorSettings(kafka_bootstrap="127.0.0.1:1"), config)
    by_group = {m.group: m.topics for m in monitors}
    assert by_group["fleetgate-connector-fwd-lag"] == [str(Topic.DMT_RAW)]
    assert str(Topic.FILES) in by_group["fleetgate-connector-hook-lag"]


async def test_fixed_records_go_as_their_own_messages_too() -> None:
    """Legacy 64-byte records (0x10) between data records: each the raw topic's message."""
    device = tracker(records=2)
    (fixed,) = decode_fixed_records(FIXED)
    device.pending.insert(1, fixed)
    messages = [
        encode(MessageType.DATA_RECORDS, record_bytes([device.pending[0]])[0]),
        encode(MessageType.FIXED_RECORDS, FIXED),
        encode(MessageType.DATA_RECORDS, record_bytes([device.pending[2]])[0]),
    ]
    hello = encode_hello(device.hello)
    item = read_item(IMEI.encode(), messages[1], _headers(b"16", hello), "t/0/2", {})
    assert item is not None and isinstance(item.record, FixedRecord) and item.record.raw == FIXED
    server = await DmServer().start()
    try:
        outcome = await forward(
            Target("127.0.0.1", server.port), device, wait_seconds=5, allow_private=True
        )
        await wait_for(lambda: server.open == 0, "the connection closed at the server")
    finally:
        await server.stop()
    assert outcome.ok and outcome.committed == 3 and not device.pending
    (stream,) = server.devices[IMEI].streams
    assert stream == hello + b"".join(messages) + encode(MessageType.COMMIT_REQUEST)

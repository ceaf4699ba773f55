"""Device role, and device<->server round trips in memory: records go up, commits come back,
and only committed records leave the device."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from dmtproto import (
    AsyncSessionCompleted,
    CommitAcknowledged,
    CommitRequested,
    DeviceState,
    DmtDevice,
    FixedRecord,
    HelloAcknowledged,
    LocalProtocolError,
    MessageType,
    RawField,
    Record,
    RecordReceived,
    RemoteProtocolError,
    SessionClosed,
    TimeReceived,
    VersionDataAcknowledged,
    decode_fixed_records,
    encode,
    encode_hello,
)
from tests.dmtproto.dmtproto_helpers import (
    ASYNC_COMPLETE,
    COMMIT,
    COMMIT_REPLY,
    DM_NOW,
    FIXED,
    HELLO,
    VERSION_REPLY,
    DevicePair,
    bytewise,
    h,
    hello_reply,
    kinds,
    random_cuts,
    sample_device,
)

M = MessageType


def received(pair: DevicePair) -> list[Record | FixedRecord]:
    return [e.record for e in pair.events_of(RecordReceived)]


def test_connect_queues_hello() -> None:
    device = DmtDevice(HELLO)
    conn = device.connect()
    assert conn.data_to_send() == encode_hello(HELLO)
    assert conn.data_to_send() == b""
    assert conn.state is DeviceState.AWAIT_HELLO_RESPONSE and not conn.finished


def test_hello_then_batch_then_commit() -> None:
    device = sample_device(3)
    conn = device.connect(records_per_message=2)
    conn.data_to_send()
    assert conn.receive_data(hello_reply(DM_NOW, 1)) == [HelloAcknowledged(time=DM_NOW, flags=1)]
    assert conn.server_time == DM_NOW
    assert HelloAcknowledged(time=DM_NOW, flags=0).server_time == datetime(2026, 11, 30, tzinfo=UTC)
    out = conn.data_to_send()
    assert out.endswith(COMMIT)
    assert out.count(h("025504")) == 2  # 2 records, then 1
    assert conn.state is DeviceState.AWAIT_COMMIT_RESPONSE and conn.in_flight == 3
    assert conn.receive_data(COMMIT_REPLY) == [CommitAcknowledged(status=1, records=3)]
    assert device.pending == [] and device.committed == 3
    assert conn.finished and conn.data_to_send() == b""


def test_traccar_short_hello_response_is_accepted() -> None:
    conn = DmtDevice(HELLO).connect()
    assert conn.receive_data(h("0255010500") + bytes(5)) == [HelloAcknowledged(time=0, flags=0)]


def test_failed_commit_keeps_the_records() -> None:
    device = sample_device(2)
    conn = device.connect()
    conn.receive_data(hello_reply())
    conn.data_to_send()
    (ack,) = conn.receive_data(encode(M.COMMIT_RESPONSE, b"\x00"))
    assert ack == CommitAcknowledged(status=0, records=2) and not ack.ok
    assert len(device.pending) == 2 and device.committed == 0
    assert conn.state is DeviceState.IDLE and conn.data_to_send() == b""  # no automatic retry
    assert conn.upload() == 2


def test_manual_upload_and_other_messages() -> None:
    device = sample_device(1)
    conn = device.connect(auto_upload=False)
    conn.receive_data(hello_reply())
    conn.data_to_send()
    assert conn.data_to_send() == b""
    conn.send(M.VERSION_DATA, bytes(9))
    conn.send(M.ASYNC_SESSION_REQUEST)
    conn.send(M.TIME_REQUEST)
    assert conn.data_to_send() == encode(0x14, bytes(9)) + h("0255220000") + h("0255300000")
    events = conn.receive_data(
        VERSION_REPLY + ASYNC_COMPLETE + encode(0x31, DM_NOW.to_bytes(4, "little"))
    )
    assert events == [VersionDataAcknowledged(), AsyncSessionCompleted(), TimeReceived(time=DM_NOW)]
    assert conn.upload() == 1
    with pytest.raises(LocalProtocolError, match="cannot upload in state AWAIT_COMMIT_RESPONSE"):
        conn.upload()
    conn.receive_data(COMMIT_REPLY)
    assert conn.upload() == 0 and conn.finished


@pytest.mark.parametrize(
    ("state_bytes", "reply", "message"),
    [
        (
            b"",
            COMMIT_REPLY,
            "server sent COMMIT_RESPONSE(0x06) of 1 bytes in state AWAIT_HELLO_RESPONSE",
        ),
        (
            hello_reply(),
            hello_reply(),
            "server sent HELLO_RESPONSE(0x01) of 8 bytes in state AWAIT_COMMIT_RESPONSE",
        ),
        (b"", encode(0x01, bytes(6)), "HELLO_RESPONSE(0x01) of 6 bytes"),
        (hello_reply(), encode(0x06, b"\x01\x01"), "COMMIT_RESPONSE(0x06) of 2 bytes"),
        (b"", encode(0x31, bytes(3)), "TIME_RESPONSE(0x31) of 3 bytes"),
        (b"", encode(0x77), "server sent 0x77 of 0 bytes"),
        (b"", b"\x03", "sync bytes 02 55"),
    ],
)
def test_server_misbehaving(state_bytes: bytes, reply: bytes, message: str) -> None:
    conn = sample_device(1).connect()
    conn.receive_data(state_bytes)
    with pytest.raises(RemoteProtocolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        conn.receive_data(reply)
    assert conn.closed and conn.receive_data(COMMIT_REPLY) == []


def test_close_and_arguments() -> None:
    conn = DmtDevice(HELLO).connect()
    conn.close()
    with pytest.raises(LocalProtocolError, match="already closed"):
        conn.close()
    with pytest.raises(LocalProtocolError, match="connection closed"):
        conn.send(M.TIME_REQUEST)
    with pytest.raises(LocalProtocolError, match="at least 1"):
        DmtDevice(HELLO).connect(records_per_message=0)


def test_log_numbers_records_and_wraps() -> None:
    device = DmtDevice(HELLO, next_sequence=0xFFFFFFFF)
    first = device.log(time=1, log_reason=11)
    second = device.log(time=2, log_reason=11, fields=[RawField(field_id=200, data=b"x")])
    assert (first.sequence, second.sequence) == (0xFFFFFFFF, 0)
    assert second.fields == (RawField(field_id=200, data=b"x"),)
    assert device.pending == [first, second]


# --- the pair ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["whole", "bytewise", "random"])
def test_round_trip_everything_committed(cut: str) -> None:
    device = sample_device(100)
    sent = list(device.pending)
    transform = {"whole": None, "bytewise": bytewise, "random": random_cuts(random.Random(7))}[cut]
    pair = DevicePair(device, records_per_message=7, records_per_commit=30)
    if transform is not None:
        pair.up = pair.down = transform
    pair.run()
    assert received(pair) == sent
    assert [e.new_records for e in pair.events_of(CommitRequested)] == [30, 30, 30, 10]
    assert device.pending == [] and device.committed == 100
    assert pair.conn.finished
    assert kinds(pair.device_events) == ["HelloAcknowledged", *["CommitAcknowledged"] * 4]
    assert pair.server.committed == 100 and pair.server.uncommitted == 0
    (closed,) = pair.disconnect()
    assert isinstance(closed, SessionClosed) and closed.clean


def test_disconnect_before_the_commit_response_resends_on_the_next_connection() -> None:
    device = sample_device(10)
    first = DevicePair(device, auto_commit=False, records_per_commit=6)
    first.run()
    assert len(received(first)) == 6 and first.server.state.name == "COMMITTING"
    # Kafka never acknowledged: no commit, the connection drops.
    (closed,) = first.disconnect()
    assert isinstance(closed, SessionClosed)
    assert not closed.clean and closed.uncommitted == 6
    assert len(device.pending) == 10 and device.committed == 0

    second = DevicePair(device, records_per_commit=6)
    second.run()
    got = received(second)
    assert [r.sequence for r in got] == list(range(1, 11))  # the first 6 again, same numbers
    assert got[:6] == received(first)  # byte for byte the same records
    assert device.pending == [] and device.committed == 10


def test_fixed_records_round_trip() -> None:
    device = DmtDevice(HELLO)
    fixed = decode_fixed_records(FIXED * 3)
    device.pending.extend([fixed[0], *sample_device(2).pending, fixed[1], fixed[2]])
    sent = list(device.pending)
    pair = DevicePair(device, records_per_message=2).run()
    got = received(pair)
    assert got == sent and device.committed == 5 and device.pending == []
    assert [type(r).__name__ for r in got] == [
        "FixedRecord",
        "Record",
        "Record",
        "FixedRecord",
        "FixedRecord",
    ]
    assert [e.message_type for e in pair.events_of(RecordReceived)] == [
        M.FIXED_RECORDS, M.DATA_RECORDS, M.DATA_RECORDS, M.FIXED_RECORDS, M.FIXED_RECORDS,
    ]  # fmt: skip


def test_records_built_in_code_round_trip_byte_for_byte() -> None:
    device = sample_device(5)
    built = list(device.pending)
    pair = DevicePair(device).run()
    for sent, event in zip(built, pair.events_of(RecordReceived), strict=True):
        assert event.record == sent
        assert isinstance(event.record, Record)
        assert event.record.raw  # the server kept the bytes as received

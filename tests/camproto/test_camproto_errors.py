"""What a failed connection leaves behind: no deadlines, events before the error, a cap on
CRC retries, and a device connection that refuses further input."""

from __future__ import annotations

import pytest

from camproto import (
    CameraDevice,
    ChunkReceived,
    CrcMismatch,
    DualCamSlot,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
    ServerState,
    SessionClosed,
)
from tests.camproto.camproto_helpers import (
    data_frame,
    init_bytes,
    payload_bytes,
    server_in,
    slot_file,
    start_frame,
    sync_frame,
)


def test_no_deadline_after_a_protocol_error() -> None:
    server = server_in(ServerState.AWAIT_SYNC)
    assert server.next_deadline() is not None
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"\xff\xff\x00\x00", 1.0)
    assert server.next_deadline() is None
    assert server.handle_timeout(100.0) == []


def test_events_before_the_error_ride_on_the_exception() -> None:
    data = payload_bytes(3000)
    server = server_in(ServerState.RECEIVING, size=3000)
    good = data_frame(data[:1024])
    with pytest.raises(RemoteProtocolError, match="unknown command id 0xFFFF") as info:
        server.receive_data(good + b"\xff\xff\x00\x00", 0.0)
    chunks = [e for e in info.value.events if isinstance(e, ChunkReceived)]
    assert [(c.offset, c.data) for c in chunks] == [(0, data[:1024])]


def test_repeated_crc_mismatches_at_one_offset_close_the_session() -> None:
    server = ServerConnection(config=ServerConfig(max_resume_attempts=3))
    data = payload_bytes(2048)
    server.receive_data(init_bytes(settings=1 << DualCamSlot.PHOTO_FRONT), 0.0)
    events = []
    # metadata is requested by default: answer it, then START and SYNC
    events += server.receive_data(b"\x00\x0b\x00\x20" + bytes(32), 0.0)
    events += server.receive_data(start_frame(2) + sync_frame(1), 0.0)
    bad = data_frame(data[:1024], init=0x1234)  # a CRC chained from nowhere
    for attempt in range(3):
        events += server.receive_data(bad, float(attempt))
        if server.state is ServerState.AWAIT_SYNC:
            events += server.receive_data(sync_frame(1), float(attempt))
    assert len([e for e in events if isinstance(e, CrcMismatch)]) == 3
    closed = [e for e in events if isinstance(e, SessionClosed)]
    assert closed and closed[0].reason == "3 CRC mismatches in a row at byte 0"
    assert server.state is ServerState.CLOSED
    assert server.data_to_send().endswith(b"\x00\x00\x00\x00")


def test_a_good_chunk_resets_the_crc_failure_count() -> None:
    server = ServerConnection(config=ServerConfig(max_resume_attempts=2))
    data = payload_bytes(3072)
    server.receive_data(init_bytes(settings=1 << DualCamSlot.PHOTO_FRONT), 0.0)
    server.receive_data(b"\x00\x0b\x00\x20" + bytes(32) + start_frame(3) + sync_frame(1), 0.0)
    events = server.receive_data(data_frame(data[:1024], init=0x1234) + sync_frame(1), 0.0)
    events += server.receive_data(data_frame(data[:1024]), 0.0)
    chained = data_frame(data[1024:2048], init=int.from_bytes(data_frame(data[:1024])[-2:]))
    events += server.receive_data(chained[:-2] + b"\x00\x00" + sync_frame(2), 0.0)
    assert server.state is ServerState.RECEIVING  # one failure since the last good chunk
    assert len([e for e in events if isinstance(e, CrcMismatch)]) == 2


def test_device_refuses_input_after_a_server_error() -> None:
    device = CameraDevice(imei=1, files=[slot_file(DualCamSlot.PHOTO_FRONT, b"x" * 10)])
    conn = device.connect()
    with pytest.raises(RemoteProtocolError, match="RESUME with no file requested"):
        conn.receive_data(b"\x00\x02\x00\x04\x00\x00\x00\x01")
    assert conn.closed
    assert conn.receive_data(b"\x00\x00\x00\x00") == []

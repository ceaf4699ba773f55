"""Faults: bad CRCs, unanswered RESUMEs, disconnects and resumption, unconfirmed files."""

from __future__ import annotations

import random

import pytest

from camproto import (
    CameraDevice,
    ChunkReceived,
    CommandId,
    CrcMismatch,
    DeviceFile,
    DualCamSlot,
    FileAccepted,
    ResumeRequested,
    ServerConfig,
    ServerConnection,
    ServerState,
    SessionClosed,
    TransferComplete,
    TransferStarted,
    crc16,
)
from camproto._wire import ServerFrameReader
from tests.camproto.camproto_helpers import (
    DSM_PATH,
    DevicePair,
    Store,
    StorePolicy,
    path_file,
    payload_bytes,
    random_cuts,
    slot_file,
    whole,
)

h = bytes.fromhex
SIZE = 10 * 1024 - 100  # 10 packets, the last one short


def make_item(kind: str, data: bytes) -> DeviceFile:
    if kind == "dualcam":
        return slot_file(DualCamSlot.VIDEO_REAR, data)
    return path_file(DSM_PATH, data)


def resume_wire(kind: str, offset: int, first: int = 1) -> bytes:
    """RESUME as the server sends it: DualCam 1-based packet index, path files bytes."""
    if kind != "dualcam":
        return h("00020004") + offset.to_bytes(4, "big")
    wire = first if offset == 0 else offset // 1024 + 1
    return h("00020004") + wire.to_bytes(4, "big")


def resume_index(kind: str) -> int:
    """Index of the first RESUME among the server's writes (DSM starts with a PATH REQUEST)."""
    return 2 if kind == "dualcam" else 3


def data_frames_sent(pair: DevicePair) -> int:
    reader = ServerFrameReader()
    reader.feed(bytes(pair.sent_up))
    count = 0
    while (got := reader.next_frame()) is not None:
        count += got.command is CommandId.DATA
    return count


# --- bad CRC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("restart", [True, False], ids=["restart-crc", "continue-crc"])
@pytest.mark.parametrize("kind", ["dualcam", "dsm"])
@pytest.mark.parametrize("k", [1, 6, 10])
def test_bad_crc_at_packet_k(kind: str, restart: bool, k: int) -> None:
    data = payload_bytes(SIZE, seed=k)
    item = make_item(kind, data)
    device = CameraDevice(
        imei=1, files=[item], bad_crc_packets={k}, restart_crc_after_resume=restart
    )
    pair = DevicePair(device).run()  # whole writes: all 10 packets go out before the RESUME

    assert pair.store.completed == [(item.file, data)]
    offset = (k - 1) * 1024
    good = crc16(data[: k * 1024])
    assert pair.events_of(CrcMismatch) == [
        CrcMismatch(file=item.file, offset=offset, expected=good, received=good ^ 0xFFFF)
    ]
    i = resume_index(kind)
    assert pair.sent_down[i : i + 2] == [resume_wire(kind, 0), resume_wire(kind, offset)]
    assert ResumeRequested(file=item.file, offset=offset) in pair.device_events
    # DATA after the bad packet was dropped until the SYNC, then sent again.
    chunks = pair.events_of(ChunkReceived)
    assert [c.offset for c in chunks] == list(range(0, SIZE, 1024))
    assert data_frames_sent(pair) == 10 + (10 - k + 1)
    resent = chunks[k - 1]
    assert resent.crc_init == (0 if restart else crc16(data[:offset]))
    assert resent.file_crc == good
    assert pair.events_of(TransferComplete)[0].file_crc == crc16(data)
    assert pair.closed_event().clean


@pytest.mark.parametrize("restart", [True, False], ids=["restart-crc", "continue-crc"])
@pytest.mark.parametrize("kind", ["dualcam", "dsm"])
def test_two_bad_crcs_with_split_writes(kind: str, restart: bool) -> None:
    data = payload_bytes(SIZE, seed=99)
    item = make_item(kind, data)
    device = CameraDevice(
        imei=1, files=[item], bad_crc_packets={3, 7}, restart_crc_after_resume=restart
    )
    pair = DevicePair(
        device,
        up=random_cuts(random.Random(3), 500),
        down=random_cuts(random.Random(4), 3),
        write_limit=2500,
    ).run()
    assert pair.store.completed == [(item.file, data)]
    assert [e.offset for e in pair.events_of(CrcMismatch)] == [2048, 6144]
    chunks = pair.events_of(ChunkReceived)
    inits = {c.offset: c.crc_init for c in chunks}
    if restart:
        assert inits[2048] == inits[6144] == 0
    else:
        assert inits[2048] == crc16(data[:2048]) and inits[6144] == crc16(data[:6144])


@pytest.mark.parametrize("first", [0, 1])
def test_bad_crc_on_first_packet_dualcam_conventions(first: int) -> None:
    data = payload_bytes(3000)
    item = make_item("dualcam", data)
    device = CameraDevice(imei=1, files=[item], bad_crc_packets={1})
    server = ServerConnection(config=ServerConfig(dualcam_first_resume=first))
    pair = DevicePair(device, server).run()
    assert pair.sent_down[2:4] == [resume_wire("dualcam", 0, first)] * 2
    assert pair.store.completed == [(item.file, data)]


# --- unanswered RESUME --------------------------------------------------------------------------


def _pair_with_lost_resume() -> DevicePair:
    """A pair whose server->device link dies once the server has seen a bad CRC."""
    data = payload_bytes(SIZE)
    device = CameraDevice(imei=1, files=[make_item("dsm", data)], bad_crc_packets={4})
    pair = DevicePair(device, now=50.0)

    def down(writes: list[bytes]) -> list[bytes]:
        return [] if pair.events_of(CrcMismatch) else list(writes)

    pair.down = down
    return pair.run()


def test_unanswered_resume_resent_every_two_seconds_then_closed() -> None:
    pair = _pair_with_lost_resume()
    server = pair.server
    assert server.state is ServerState.AWAIT_SYNC
    assert pair.sent_down[-1] == resume_wire("dsm", 3072)
    resumes = 1
    while True:
        deadline = server.next_deadline()
        assert deadline == pair.now + 2.0
        pair.now = deadline
        events = server.handle_timeout(pair.now)
        sent = server.data_to_send()
        if events:
            break
        assert sent == resume_wire("dsm", 3072)
        resumes += 1
    assert resumes == 10
    assert events == [SessionClosed(reason="no SYNC after 10 RESUMEs", clean=False)]
    assert sent == h("00000000")
    assert server.next_deadline() is None
    assert pair.store.completed == []
    assert len(pair.store.partial[DSM_PATH]) == 3072


def test_resent_resume_that_gets_through_recovers() -> None:
    pair = _pair_with_lost_resume()
    server = pair.server
    for _ in range(2):
        pair.now = server.next_deadline() or 0.0
        assert server.handle_timeout(pair.now) == []
        server.data_to_send()  # lost as well
    pair.down = whole
    pair.now = server.next_deadline() or 0.0
    server.handle_timeout(pair.now)
    pair.run()
    assert pair.store.completed == [(pair.device.uploaded[0].file, pair.device.uploaded[0].data)]
    assert server.next_deadline() is None
    assert pair.closed_event().clean


# --- disconnect and resume on a new connection ------------------------------------------------


@pytest.mark.parametrize("restart", [True, False], ids=["restart-crc", "continue-crc"])
@pytest.mark.parametrize("kind", ["dualcam", "dsm"])
@pytest.mark.parametrize("k", [0, 1, 5, 9])
def test_disconnect_at_packet_k_then_resume(kind: str, restart: bool, k: int) -> None:
    data = payload_bytes(SIZE, seed=k)
    item = make_item(kind, data)
    device = CameraDevice(imei=1, files=[item], restart_crc_after_resume=restart)
    store = Store()

    first = DevicePair(device, ServerConnection(StorePolicy(store)), store, max_packets=k).run()
    total = "10 packets" if kind == "dualcam" else f"{SIZE} bytes"
    assert first.disconnect() == [
        SessionClosed(
            reason=f"device closed the connection mid-transfer: {item.file} at byte {k * 1024} "
            f"of {total}",
            clean=False,
        )
    ]
    assert len(store.partial.get(item.file.identifier, b"")) == k * 1024
    assert device.files == [item]

    policy = StorePolicy(store)
    second = DevicePair(device, ServerConnection(policy), store).run()
    assert second.events_of(TransferStarted)[0].resume_offset == k * 1024
    assert policy.asked[0].file == item.file
    assert second.sent_down[resume_index(kind)] == resume_wire(kind, k * 1024)
    assert ResumeRequested(file=item.file, offset=k * 1024) in second.device_events
    chunks = second.events_of(ChunkReceived)
    assert chunks[0].offset == k * 1024
    assert chunks[0].crc_init == (0 if restart else crc16(data[: k * 1024]))
    assert second.conn.packets_sent == 10 - k  # the device resumed: nothing sent twice
    assert store.completed == [(item.file, data)]
    assert device.uploaded == [item]
    assert second.closed_event().clean


@pytest.mark.parametrize(
    ("kind", "kept"),
    [
        ("dualcam", b"g" * 1000),  # not on a packet boundary
        ("dualcam", b"g" * 10 * 1024),  # as long as all 10 packets
        ("dsm", b"g" * SIZE),  # the whole file: nothing left to resume
    ],
    ids=["dualcam-unaligned", "dualcam-too-long", "dsm-whole"],
)
def test_invalid_resume_point_restarts_from_zero(kind: str, kept: bytes) -> None:
    data = payload_bytes(SIZE)
    item = make_item(kind, data)
    store = Store(partial={item.file.identifier: bytearray(kept)})
    pair = DevicePair(
        CameraDevice(imei=1, files=[item]), ServerConnection(StorePolicy(store)), store
    )
    pair.run()
    assert pair.events_of(TransferStarted)[0].resume_offset == 0
    assert pair.sent_down[resume_index(kind)] == resume_wire(kind, 0)
    assert store.completed == [(item.file, data)]


def test_disconnect_before_confirm_uploads_again() -> None:
    data = payload_bytes(SIZE)
    item = make_item("dualcam", data)
    device = CameraDevice(imei=1, files=[item])
    store = Store()
    first = DevicePair(device, ServerConnection(StorePolicy(store)), store, auto_confirm=False)
    first.run()
    assert first.disconnect() == [
        SessionClosed(
            reason="device closed the connection before %videor was confirmed", clean=False
        )
    ]
    assert device.files == [item]  # never confirmed: the device keeps it
    second = DevicePair(device, ServerConnection(StorePolicy(store)), store).run()
    assert second.events_of(TransferStarted)[0].resume_offset == 0
    assert store.completed == [(item.file, data), (item.file, data)]
    assert device.files == []


# --- confirm_file -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dualcam", "dsm"])
def test_nothing_sent_after_transfer_complete_until_confirm(kind: str) -> None:
    data = payload_bytes(SIZE)
    item = make_item(kind, data)
    device = CameraDevice(imei=1, files=[item])
    pair = DevicePair(device, auto_confirm=False).run()
    assert pair.server.state is ServerState.AWAIT_CONFIRM
    assert isinstance(pair.server_events[-1], TransferComplete)
    assert pair.sent_down[-1] == resume_wire(kind, 0)  # the last thing sent was the RESUME
    assert pair.server.data_to_send() == b""
    assert FileAccepted(file=item.file) not in pair.device_events
    assert device.files == [item]

    pair.server.confirm_file()
    pair.run()
    assert pair.sent_down[-2:] == [h("0009"), h("00000000")]
    assert FileAccepted(file=item.file) in pair.device_events
    assert device.uploaded == [item]
    assert pair.closed_event().clean

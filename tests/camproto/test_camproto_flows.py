"""Whole sessions with a device and a server in memory, writes whole, merged, split, bytewise."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest

from camproto import (
    AdasMetadata,
    CameraDevice,
    CameraFile,
    ChunkReceived,
    CloseRequested,
    DefaultPolicy,
    DeviceFile,
    DualCamSlot,
    FileAccepted,
    FileEmpty,
    JsonMetadata,
    MetadataReceived,
    ServerConfig,
    ServerConnection,
    SessionClosed,
    SessionStarted,
    TransferComplete,
    TransferStarted,
    crc16,
)
from tests.camproto.camproto_helpers import (
    ADAS_PATH,
    DSM_META,
    DSM_PATH,
    DUALCAM_META,
    DevicePair,
    Transform,
    bytewise,
    data_frame,
    frame,
    init_bytes,
    merged,
    path_file,
    payload_bytes,
    random_cuts,
    server_kinds,
    slot_file,
    u32,
    whole,
)

h = bytes.fromhex

#: name -> (device->server transform, server->device transform, write_limit, writes_per_step).
WIRES: dict[str, Callable[[], tuple[Transform, Transform, int, int]]] = {
    "whole": lambda: (whole, whole, 64 * 1024, 1),
    # One command or packet per device write, 16 writes per read.
    "merged": lambda: (merged, merged, 1, 16),
    "bytewise": lambda: (bytewise, bytewise, 64 * 1024, 1),
    "random": lambda: (
        random_cuts(random.Random(1), 700),
        random_cuts(random.Random(2), 5),
        4000,
        3,
    ),
}


def make_pair(device: CameraDevice, server: ServerConnection, wire: str) -> DevicePair:
    up, down, limit, per_step = WIRES[wire]()
    return DevicePair(device, server, up=up, down=down, write_limit=limit, writes_per_step=per_step)


def assert_clean_end(pair: DevicePair) -> None:
    assert pair.closed_event() == SessionClosed(reason="no more files", clean=True)
    assert pair.device_events[-1] == CloseRequested()
    assert pair.conn.closed  # no EOF needed: the CLOSE after a bare 0009 is seen whole
    assert pair.device.files == []


# --- DualCam ------------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", list(WIRES))
@pytest.mark.parametrize(
    ("slot", "size"),
    [(DualCamSlot.PHOTO_FRONT, 3 * 1024 + 17), (DualCamSlot.VIDEO_REAR, 6 * 1024)],
    ids=["photo-front", "video-rear"],
)
@pytest.mark.parametrize("first_resume", [0, 1])
def test_dualcam_with_metadata(wire: str, slot: DualCamSlot, size: int, first_resume: int) -> None:
    data = payload_bytes(size, seed=size)
    item = slot_file(slot, data)
    device = CameraDevice(imei=352094082736916, files=[item])
    server = ServerConnection(config=ServerConfig(dualcam_first_resume=first_resume))
    pair = make_pair(device, server, wire).run()

    assert pair.store.completed == [(item.file, data)]
    assert device.uploaded == [item]
    assert_clean_end(pair)
    identifier = slot.identifier
    assert b"".join(pair.sent_down) == (
        h("000a0007") + identifier
        + h("00080007") + identifier
        + h("00020004") + first_resume.to_bytes(4, "big")
        + h("0009")
        + h("00000000")
    )  # fmt: skip
    packets = -(-size // 1024)
    kinds = server_kinds(pair.server_events)
    assert kinds == [
        "SessionStarted",
        "FileOffered",
        "MetadataReceived",
        "TransferStarted",
        *["ChunkReceived"] * packets,
        "TransferComplete",
        "SessionClosed",
    ]
    started = pair.events_of(TransferStarted)[0]
    assert started == TransferStarted(
        file=item.file, size=None, packets=packets, device_crc=None, resume_offset=0
    )
    assert pair.events_of(MetadataReceived)[0].metadata == DUALCAM_META
    complete = pair.events_of(TransferComplete)[0]
    assert complete == TransferComplete(
        file=item.file, size=size, file_crc=crc16(data), device_crc_ok=None
    )
    chunks = pair.events_of(ChunkReceived)
    assert [c.offset for c in chunks] == list(range(0, size, 1024))
    assert all(c.crc_init == (chunks[i - 1].crc if i else 0) for i, c in enumerate(chunks))
    assert [type(e) for e in pair.device_events].count(FileAccepted) == 1


@pytest.mark.parametrize("wire", ["whole", "random"])
def test_dualcam_without_metadata(wire: str) -> None:
    data = payload_bytes(2500)
    item = slot_file(DualCamSlot.VIDEO_FRONT, data)
    device = CameraDevice(imei=1, files=[item])
    pair = make_pair(device, ServerConnection(DefaultPolicy(metadata=False)), wire).run()
    assert pair.store.completed == [(item.file, data)]
    assert b"".join(pair.sent_down) == (
        h("0008000725766964656f66") + h("0002000400000001") + h("0009") + h("00000000")
    )
    assert not pair.events_of(MetadataReceived)
    assert_clean_end(pair)


def test_dualcam_40_byte_metadata() -> None:
    meta = dataclasses.replace(DUALCAM_META, trigger_timestamp_ms=1_700_000_000_999)
    assert len(meta.encode()) == 40
    item = slot_file(DualCamSlot.PHOTO_REAR, b"x" * 100, meta.encode())
    pair = DevicePair(CameraDevice(imei=1, files=[item])).run()
    assert pair.events_of(MetadataReceived)[0].metadata == meta


# --- DSM / ADAS path files ----------------------------------------------------------------------


@pytest.mark.parametrize("wire", list(WIRES))
def test_dsm_path_flow(wire: str) -> None:
    data = payload_bytes(5 * 1024 + 300, seed=9)
    item = path_file(DSM_PATH, data)
    device = CameraDevice(imei=1, files=[item])
    pair = make_pair(device, ServerConnection(), wire).run()
    assert pair.store.completed == [(item.file, data)]
    assert b"".join(pair.sent_down) == (
        h("000c00020000")
        + h("000a0000")
        + h("0008001e64736d2f706963747572652f3233313032302f3233313435322e6a706700")
        + h("0002000400000000")
        + h("0009")
        + h("00000000")
    )
    assert pair.events_of(TransferStarted)[0] == TransferStarted(
        file=item.file, size=len(data), packets=None, device_crc=crc16(data), resume_offset=0
    )
    assert pair.events_of(TransferComplete)[0] == TransferComplete(
        file=item.file, size=len(data), file_crc=crc16(data), device_crc_ok=True
    )
    assert pair.events_of(MetadataReceived)[0].metadata == DSM_META
    session = pair.events_of(SessionStarted)[0]
    assert session.path_file_ready and session.offered == ()
    assert_clean_end(pair)


def test_adas_path_flow() -> None:
    meta = AdasMetadata(
        timestamp_ms=1_700_000_000_000,
        file_type=0,
        trigger=5,
        latitude=54.1,
        longitude=25.2,
        duration_s=10,
    )
    data = payload_bytes(4096, seed=4)
    item = path_file(ADAS_PATH, data, meta.encode())
    pair = DevicePair(CameraDevice(imei=1, files=[item])).run()
    assert pair.events_of(MetadataReceived)[0].metadata == meta
    assert pair.store.completed == [(item.file, data)]
    assert pair.events_of(TransferComplete)[0].device_crc_ok is True
    assert_clean_end(pair)


def test_device_crc_mismatch_is_reported() -> None:
    # A START whose file CRC does not match the data: the transfer completes, flagged.
    data = payload_bytes(2000)
    server = ServerConnection(DefaultPolicy(metadata=False))
    server.receive_data(init_bytes(settings=1 << 25) + frame(0x000D, DSM_PATH), 0.0)
    server.receive_data(frame(0x0001, u32(len(data)) + h("0000")), 0.0)
    server.receive_data(frame(0x0003, u32(0)), 0.0)
    events = server.receive_data(
        data_frame(data[:1024]) + data_frame(data[1024:], crc16(data[:1024])), 0.0
    )
    assert events[-1] == TransferComplete(
        file=CameraFile.for_path(DSM_PATH), size=2000, file_crc=crc16(data), device_crc_ok=False
    )


def test_protocol_6_json_metadata() -> None:
    meta = b'{"version":1,"file":{"file_type":1,"file_timestamp":1700000000},"driver_name":"A"}'
    data = payload_bytes(1500)
    item = DeviceFile(CameraFile.for_path(b"dualcam_front/video/1.h265"), data, meta)
    device = CameraDevice(imei=1, files=[item], protocol=6)
    pair = DevicePair(device).run()
    got = pair.events_of(MetadataReceived)[0].metadata
    assert isinstance(got, JsonMetadata)
    assert got.fields["file"]["file_timestamp"] == 1700000000
    assert pair.events_of(SessionStarted)[0].protocol == 6
    assert pair.store.completed == [(item.file, data)]


# --- several files, empty files, nothing ------------------------------------------------------


def all_files() -> list[DeviceFile]:
    return [
        slot_file(DualCamSlot.PHOTO_FRONT, payload_bytes(1500, 1)),
        slot_file(DualCamSlot.PHOTO_REAR, payload_bytes(2100, 2)),
        path_file(DSM_PATH, payload_bytes(3000, 3)),
        slot_file(DualCamSlot.VIDEO_FRONT, payload_bytes(5000, 4)),
        slot_file(DualCamSlot.VIDEO_REAR, payload_bytes(4096, 5)),
        path_file(ADAS_PATH, payload_bytes(900, 6)),
    ]


@pytest.mark.parametrize("wire", ["whole", "merged", "random"])
def test_several_files_in_policy_order(wire: str) -> None:
    files = all_files()
    device = CameraDevice(imei=1, files=list(files))
    pair = make_pair(device, ServerConnection(), wire).run()
    order = [DSM_PATH, ADAS_PATH, b"%videor", b"%videof", b"%photor", b"%photof"]
    assert [f.identifier for f, _ in pair.store.completed] == order
    by_id = {item.file.identifier: item.data for item in files}
    assert all(data == by_id[f.identifier] for f, data in pair.store.completed)
    assert len(pair.events_of(SessionStarted)) == 1
    assert_clean_end(pair)


def test_custom_slot_order() -> None:
    files = [f for f in all_files() if f.file.slot is not None]
    device = CameraDevice(imei=1, files=list(files))
    order = (
        DualCamSlot.PHOTO_FRONT,
        DualCamSlot.PHOTO_REAR,
        DualCamSlot.VIDEO_FRONT,
        DualCamSlot.VIDEO_REAR,
    )
    pair = DevicePair(device, ServerConnection(DefaultPolicy(order=order))).run()
    assert [f.slot for f, _ in pair.store.completed] == list(order)


def test_policy_order_can_leave_slots_behind() -> None:
    files = [f for f in all_files() if f.file.slot is not None]
    device = CameraDevice(imei=1, files=list(files))
    policy = DefaultPolicy(order=(DualCamSlot.PHOTO_REAR,))
    pair = DevicePair(device, ServerConnection(policy)).run()
    assert [f.slot for f, _ in pair.store.completed] == [DualCamSlot.PHOTO_REAR]
    assert pair.closed_event() == SessionClosed(reason="policy declined", clean=True)
    assert len(device.files) == 3


@pytest.mark.parametrize(
    "item",
    [slot_file(DualCamSlot.PHOTO_FRONT, b""), path_file(DSM_PATH, b"")],
    ids=["dualcam", "dsm"],
)
def test_empty_file(item: DeviceFile) -> None:
    device = CameraDevice(imei=1, files=[item])
    pair = DevicePair(device).run()
    assert pair.events_of(FileEmpty) == [FileEmpty(file=item.file)]
    assert not pair.events_of(TransferStarted)
    assert b"".join(pair.sent_down).endswith(h("0009") + h("00000000"))
    assert FileAccepted(file=item.file) in pair.device_events
    assert pair.store.completed == []
    assert_clean_end(pair)


@pytest.mark.parametrize("wire", list(WIRES))
def test_no_files(wire: str) -> None:
    device = CameraDevice(imei=1, files=[])
    pair = make_pair(device, ServerConnection(), wire).run()
    assert bytes(pair.sent_up) == h("00000005000000000000000140000400")
    assert pair.sent_down == [h("00000000")]
    assert pair.server_events[-1] == SessionClosed(reason="no more files", clean=True)
    assert server_kinds(pair.server_events) == ["SessionStarted", "SessionClosed"]
    assert pair.device_events == [CloseRequested()]
    assert pair.conn.closed

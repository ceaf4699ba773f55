"""Real captures (tests/camproto/vectors/, copied from the research notes): bytes in, events out.

Device->server captures go into a ServerConnection, server->device captures into a
DeviceConnection, and where our server's flow coincides with Teltonika's reference server it
must emit the very same bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from camproto import (
    CameraDevice,
    CameraFile,
    CloseRequested,
    CommandId,
    CrcMismatch,
    DefaultPolicy,
    DualCamSlot,
    FileOffered,
    FileRequested,
    MetadataReceived,
    MetadataRequested,
    PathRequested,
    RemoteProtocolError,
    ResumeRequested,
    ServerConfig,
    ServerConnection,
    ServerState,
    SessionClosed,
    SessionStarted,
    StatusReceived,
    TransferStarted,
    crc16,
)
from camproto._wire import Frame, ServerFrameReader
from tests.camproto.camproto_helpers import (
    COMMUNITY_IMEI,
    DSM_PATH,
    DevicePair,
    data_frame,
    frame,
    init_bytes,
    path_file,
    payload_bytes,
    slot_file,
    u32,
)

h = bytes.fromhex
VECTORS = Path(__file__).parent / "vectors"
NO_META = DefaultPolicy(metadata=False)
PHOTOF = CameraFile.for_slot(DualCamSlot.PHOTO_FRONT)

# --- teltonika_camera_community.txt -----------------------------------------------------------

COMMUNITY_INIT = h("0000000500013ee13c00198144000400")
COMMUNITY_FILE_REQUEST = h("000800072570686F746F66")
COMMUNITY_INIT_START = h("0000000500013ee13c0019814400040000010006000000200000")
COMMUNITY_INIT_START_START = h(
    "0000000500013ee13c001981440004000001000600000020000000010006000000200000"
)

# --- teltonika_camera_server_tx.txt -----------------------------------------------------------

TX_CLOSE = h("00000000")
TX_PATH_REQUEST = h("000c00020000")
TX_METADATA_REQUEST_VIDEOR = h("000a000725766964656f72")
TX_METADATA_REQUEST_EMPTY = h("000a0000")
TX_FILE_REQUEST = {
    DualCamSlot.PHOTO_FRONT: h("000800072570686f746f66"),
    DualCamSlot.PHOTO_REAR: h("000800072570686f746f72"),
    DualCamSlot.VIDEO_FRONT: h("0008000725766964656f66"),
    DualCamSlot.VIDEO_REAR: h("0008000725766964656f72"),
}
TX_FILE_REQUEST_DSM = h("0008001e64736d2f706963747572652f3233313032302f3233313435322e6a706700")
TX_RESUME_0 = h("0002000400000000")
TX_RESUME_DUALCAM_6 = h("0002000400000006")
TX_RESUME_DSM_5120 = h("0002000400001400")
TX_REPEAT_INIT = h("0009")
TX_STATUS_0 = h("0005000400000000")

ALL_VECTORS = {
    COMMUNITY_INIT,
    COMMUNITY_FILE_REQUEST,
    COMMUNITY_INIT_START,
    COMMUNITY_INIT_START_START,
    TX_CLOSE,
    TX_PATH_REQUEST,
    TX_METADATA_REQUEST_VIDEOR,
    TX_METADATA_REQUEST_EMPTY,
    *TX_FILE_REQUEST.values(),
    TX_FILE_REQUEST_DSM,
    TX_RESUME_0,
    TX_RESUME_DUALCAM_6,
    TX_RESUME_DSM_5120,
    TX_REPEAT_INIT,
    TX_STATUS_0,
}


@pytest.mark.parametrize(
    "name", ["teltonika_camera_community.txt", "teltonika_camera_server_tx.txt"]
)
def test_every_vector_is_tested(name: str) -> None:
    # Every command line of the capture files, and every hex example of 16+ digits in their
    # comments, is one of the vectors this module feeds or compares (or lies inside one).
    text = (VECTORS / name).read_text()
    found = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            found.append(line.strip().removeprefix("0x"))
        found += re.findall(r"\b[0-9a-fA-F]{16,}\b", line.split("#", 1)[-1])
    assert found
    for token in found:
        vector = h(token)
        assert vector in ALL_VECTORS or any(vector in known for known in ALL_VECTORS), token


# --- device -> server -------------------------------------------------------------------------


def test_community_init() -> None:
    server = ServerConnection()
    events = server.receive_data(COMMUNITY_INIT, 0.0)
    assert events == [
        SessionStarted(
            imei=350612071913857,
            protocol=5,
            settings=0x44000400,
            offered=(PHOTOF,),  # 0x44 in the MSB byte: bit 26, photo front (and unknown bit 30)
            path_file_ready=False,
        ),
        FileOffered(file=PHOTOF),
    ]
    # With metadata on, our server asks for the photo's metadata first, like T2 --meta 1.
    assert server.data_to_send() == h("000a00072570686f746f66")
    assert server.session is not None and server.session.imei == COMMUNITY_IMEI


def test_community_init_without_metadata_sends_the_captured_file_request() -> None:
    server = ServerConnection(NO_META)
    server.receive_data(COMMUNITY_INIT, 0.0)
    assert server.data_to_send() == COMMUNITY_FILE_REQUEST
    assert server.state is ServerState.AWAIT_START


def test_community_init_one_byte_at_a_time() -> None:
    server = ServerConnection(NO_META)
    events = []
    for i, byte in enumerate(COMMUNITY_INIT):
        got = server.receive_data(bytes([byte]), 0.0)
        assert got == [] or i == len(COMMUNITY_INIT) - 1
        events += got
    assert [type(e) for e in events] == [SessionStarted, FileOffered]
    assert server.data_to_send() == COMMUNITY_FILE_REQUEST


@pytest.mark.parametrize(("first_resume", "resume"), [(1, h("0002000400000001")), (0, TX_RESUME_0)])
def test_community_init_and_start(first_resume: int, resume: bytes) -> None:
    server = ServerConnection(NO_META, ServerConfig(dualcam_first_resume=first_resume))
    events = server.receive_data(COMMUNITY_INIT_START, 0.0)
    assert events[2:] == [
        TransferStarted(file=PHOTOF, size=None, packets=32, device_crc=None, resume_offset=0)
    ]
    # The capture's device re-sent INIT+START because its server never answered START with
    # RESUME; ours does.
    assert server.data_to_send() == COMMUNITY_FILE_REQUEST + resume
    assert server.state is ServerState.AWAIT_SYNC


def test_community_repeated_start() -> None:
    reader = ServerFrameReader()
    reader.feed(COMMUNITY_INIT_START_START)
    start = Frame(CommandId.START, h("000000200000"))
    assert [reader.next_frame() for _ in range(4)] == [
        Frame(CommandId.INIT, COMMUNITY_INIT[2:]),
        start,
        start,
        None,
    ]
    # A second START while our server waits for SYNC is a protocol error naming both.
    server = ServerConnection(NO_META)
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(COMMUNITY_INIT_START_START, 0.0)
    assert str(info.value) == (
        "device sent START(0x0001) in state AWAIT_SYNC; expected DATA(0x0004), "
        "ENHANCED_DATA(0x000E), STATUS(0x0005), SYNC(0x0003)"
    )
    assert server.state is ServerState.ERROR


def test_our_device_sends_the_community_bytes() -> None:
    # A 32-packet front photo on a device with the capture's IMEI: same INIT, same START.
    device = CameraDevice(
        imei=COMMUNITY_IMEI,
        files=[slot_file(DualCamSlot.PHOTO_FRONT, payload_bytes(31 * 1024 + 100))],
    )
    assert device.init_packet() == COMMUNITY_INIT
    pair = DevicePair(device, ServerConnection(NO_META))
    pair.run()
    assert bytes(pair.sent_up).startswith(COMMUNITY_INIT_START)
    assert pair.sent_down[0] == COMMUNITY_FILE_REQUEST


# --- server -> device -------------------------------------------------------------------------


def test_community_file_request_to_device() -> None:
    data = payload_bytes(32 * 1024)
    device = CameraDevice(imei=COMMUNITY_IMEI, files=[slot_file(DualCamSlot.PHOTO_FRONT, data)])
    conn = device.connect()
    assert conn.data_to_send() == COMMUNITY_INIT
    assert conn.receive_data(COMMUNITY_FILE_REQUEST) == [FileRequested(file=PHOTOF)]
    assert conn.data_to_send() == h("00010006000000200000")


@pytest.mark.parametrize("slot", list(DualCamSlot))
def test_file_requests_for_each_slot(slot: DualCamSlot) -> None:
    # Server emits the reference bytes (metadata off), the device reads them back.
    server = ServerConnection(NO_META)
    server.receive_data(init_bytes(settings=1 << 30 | 1 << slot.value), 0.0)
    wire = server.data_to_send()
    assert wire == TX_FILE_REQUEST[slot]
    device = CameraDevice(imei=COMMUNITY_IMEI, files=[slot_file(slot, b"x" * 2000)])
    conn = device.connect()
    assert conn.receive_data(wire) == [FileRequested(file=CameraFile.for_slot(slot))]
    assert conn.data_to_send()[16:] == h("00010006000000020000")


def test_metadata_request_videor() -> None:
    server = ServerConnection()
    server.receive_data(init_bytes(settings=0x60000400), 0.0)
    assert server.data_to_send() == TX_METADATA_REQUEST_VIDEOR
    device = CameraDevice(imei=1, files=[slot_file(DualCamSlot.VIDEO_REAR, b"v" * 10)])
    conn = device.connect()
    videor = CameraFile.for_slot(DualCamSlot.VIDEO_REAR)
    assert conn.receive_data(TX_METADATA_REQUEST_VIDEOR) == [MetadataRequested(file=videor)]
    meta = device.files[0].metadata
    assert conn.data_to_send()[16:] == frame(0x000B, meta)


def test_close_when_nothing_offered() -> None:
    server = ServerConnection()
    events = server.receive_data(init_bytes(settings=0x40000400), 0.0)
    assert events[-1] == SessionClosed(reason="no more files", clean=True)
    assert server.data_to_send() == TX_CLOSE
    assert server.state is ServerState.CLOSED
    conn = CameraDevice(imei=1, files=[]).connect()
    assert conn.receive_data(TX_CLOSE) == [CloseRequested()]
    assert conn.closed


def test_dsm_path_flow_bytes() -> None:
    # INIT with bit 25 -> 000C 0002 0000; PATH -> 000A 0000; METADATA -> 0008 echo with NUL;
    # START in bytes -> RESUME 0.
    server = ServerConnection()
    server.receive_data(init_bytes(settings=1 << 25), 0.0)
    assert server.data_to_send() == TX_PATH_REQUEST
    events = server.receive_data(frame(0x000D, DSM_PATH), 0.0)
    assert events == [FileOffered(file=CameraFile.for_path(DSM_PATH))]
    assert server.data_to_send() == TX_METADATA_REQUEST_EMPTY
    events = server.receive_data(frame(0x000B, bytes(26)), 0.0)
    assert isinstance(events[0], MetadataReceived)
    assert server.data_to_send() == TX_FILE_REQUEST_DSM
    server.receive_data(frame(0x0001, u32(6000) + h("1234")), 0.0)
    assert server.data_to_send() == TX_RESUME_0


def test_dsm_path_vectors_to_device() -> None:
    item = path_file(DSM_PATH, b"d" * 3000)
    device = CameraDevice(imei=1, files=[item])
    conn = device.connect()
    conn.data_to_send()
    assert conn.receive_data(TX_PATH_REQUEST) == [PathRequested()]
    assert conn.data_to_send() == h("000d001e") + DSM_PATH
    assert conn.receive_data(TX_METADATA_REQUEST_EMPTY) == [MetadataRequested(file=item.file)]
    assert conn.data_to_send() == frame(0x000B, item.metadata)
    assert conn.receive_data(TX_FILE_REQUEST_DSM) == [FileRequested(file=item.file)]
    assert conn.data_to_send() == frame(0x0001, u32(3000) + crc16(item.data).to_bytes(2, "big"))
    assert conn.receive_data(TX_RESUME_0) == [ResumeRequested(file=item.file, offset=0)]
    assert conn.data_to_send(limit=1)[:8] == h("0003000400000000")


def _dualcam_receiving(first_resume: int = 1) -> tuple[ServerConnection, bytes]:
    data = payload_bytes(10 * 1024, seed=6)
    server = ServerConnection(NO_META, ServerConfig(dualcam_first_resume=first_resume))
    server.receive_data(init_bytes() + frame(0x0001, u32(10) + h("0000")), 0.0)
    server.receive_data(frame(0x0003, u32(first_resume)), 0.0)
    server.data_to_send()
    return server, data


@pytest.mark.parametrize("first_resume", [0, 1])
def test_resume_after_crc_error_dualcam(first_resume: int) -> None:
    server, data = _dualcam_receiving(first_resume)
    chain = 0
    for k in range(5):
        chunk = data[k * 1024 : (k + 1) * 1024]
        server.receive_data(data_frame(chunk, chain), 0.0)
        chain = crc16(chunk, chain)
    assert server.data_to_send() == b""
    events = server.receive_data(data_frame(data[5120:6144], 0x1234), 0.0)
    assert isinstance(events[0], CrcMismatch) and events[0].offset == 5120
    assert server.data_to_send() == TX_RESUME_DUALCAM_6  # packets_received + 1, either convention


def test_resume_after_crc_error_dsm() -> None:
    data = payload_bytes(10_000, seed=7)
    server = ServerConnection(DefaultPolicy(metadata=False))
    server.receive_data(init_bytes(settings=1 << 25) + frame(0x000D, DSM_PATH), 0.0)
    server.receive_data(frame(0x0001, u32(len(data)) + crc16(data).to_bytes(2, "big")), 0.0)
    server.receive_data(frame(0x0003, u32(0)), 0.0)
    server.data_to_send()
    chain = 0
    for k in range(5):
        chunk = data[k * 1024 : (k + 1) * 1024]
        server.receive_data(data_frame(chunk, chain), 0.0)
        chain = crc16(chunk, chain)
    events = server.receive_data(data_frame(data[5120:6144], chain ^ 1), 0.0)
    assert events == [
        CrcMismatch(
            file=CameraFile.for_path(DSM_PATH),
            offset=5120,
            expected=crc16(data[:6144]),
            received=crc16(data[5120:6144], chain ^ 1),
        )
    ]
    assert server.data_to_send() == TX_RESUME_DSM_5120


def test_repeat_init_after_confirm() -> None:
    server = ServerConnection(NO_META)
    server.receive_data(init_bytes() + frame(0x0001, u32(1) + h("0000")), 0.0)
    server.receive_data(frame(0x0003, u32(1)) + data_frame(b"tiny"), 0.0)
    assert server.data_to_send() == TX_FILE_REQUEST[DualCamSlot.PHOTO_FRONT] + h("0002000400000001")
    server.confirm_file()
    assert server.data_to_send() == TX_REPEAT_INIT


def test_status_vector() -> None:
    server = ServerConnection()
    server.send_status(0)
    assert server.data_to_send() == TX_STATUS_0
    conn = CameraDevice(imei=1, files=[]).connect()
    assert conn.receive_data(TX_STATUS_0) == [StatusReceived(status=0)]

"""The device role (DeviceConnection, CameraDevice) and the file model (CameraFile, slots)."""

from __future__ import annotations

import pytest

from camproto import (
    Camera,
    CameraDevice,
    CameraFile,
    CloseRequested,
    DeviceFile,
    DeviceState,
    DualCamSlot,
    FileAccepted,
    FileRequested,
    LocalProtocolError,
    Media,
    MetadataRequested,
    PathRequested,
    RemoteProtocolError,
    ResumeRequested,
    StatusReceived,
    crc16,
)
from camproto.device import OBSERVED_EXTRA_SETTINGS
from camproto.files import offered_slots
from tests.camproto.camproto_helpers import DSM_PATH, frame, path_file, payload_bytes, slot_file

h = bytes.fromhex
PHOTOF = CameraFile.for_slot(DualCamSlot.PHOTO_FRONT)


def photo_device(size: int = 3000) -> CameraDevice:
    return CameraDevice(imei=1, files=[slot_file(DualCamSlot.PHOTO_FRONT, payload_bytes(size))])


# --- CameraDevice ---------------------------------------------------------------------------------


def test_settings_and_init_packet() -> None:
    device = CameraDevice(
        imei=352094082736916,
        files=[
            slot_file(DualCamSlot.PHOTO_FRONT, b"a"),
            slot_file(DualCamSlot.VIDEO_REAR, b"b"),
            path_file(DSM_PATH, b"c"),
        ],
    )
    assert device.settings() == OBSERVED_EXTRA_SETTINGS | 1 << 26 | 1 << 29 | 1 << 25
    assert device.init_packet() == h("000000050001403a4abaa314") + device.settings().to_bytes(
        4, "big"
    )
    assert CameraDevice(imei=1, files=[], extra_settings=0).settings() == 0
    assert CameraDevice(imei=1, files=[], protocol=6).init_packet()[:4] == h("00000006")


def test_find() -> None:
    device = photo_device()
    assert device.find(b"%photof") is device.files[0]
    assert device.find(b"%photor") is None


@pytest.mark.parametrize(("size", "packets"), [(0, 0), (1, 1), (1024, 1), (1025, 2), (3072, 3)])
def test_packets(size: int, packets: int) -> None:
    assert DeviceFile(PHOTOF, bytes(size), b"").packets == packets


# --- DeviceConnection -----------------------------------------------------------------------------


def test_connect_queues_init_once() -> None:
    device = photo_device()
    conn = device.connect()
    assert conn.state is DeviceState.IDLE
    assert conn.data_to_send() == device.init_packet()
    assert conn.data_to_send() == b""
    assert conn.current is None and not conn.all_sent


def test_upload_by_hand() -> None:
    data = payload_bytes(2500)
    device = CameraDevice(imei=1, files=[slot_file(DualCamSlot.PHOTO_FRONT, data)])
    conn = device.connect()
    conn.data_to_send()
    assert conn.receive_data(h("000800072570686f746f66")) == [FileRequested(file=PHOTOF)]
    assert conn.current is device.files[0]
    assert conn.data_to_send() == h("00010006000000030000")
    assert conn.receive_data(h("0002000400000001")) == [ResumeRequested(file=PHOTOF, offset=0)]
    assert conn.state is DeviceState.SENDING
    # limit=1: queued commands alone fill a write; then one packet per call.
    assert conn.data_to_send(limit=1) == h("0003000400000001")
    first = conn.data_to_send(limit=1)
    assert first == frame(0x0004, data[:1024] + crc16(data[:1024]).to_bytes(2, "big"))
    assert conn.packets_sent == 1
    assert conn.data_to_send(max_packets=2) == frame(
        0x0004, data[1024:2048] + crc16(data[:2048]).to_bytes(2, "big")
    )
    assert conn.data_to_send(max_packets=2) == b""  # capped: a disconnect fault
    assert (conn.all_sent, conn.packets_sent) == (False, 2)
    rest = conn.data_to_send()
    assert rest == frame(0x0004, data[2048:] + crc16(data).to_bytes(2, "big"))
    assert (conn.all_sent, conn.packets_sent) == (True, 3)
    assert conn.data_to_send() == b""
    assert conn.receive_data(h("0009")) == [FileAccepted(file=PHOTOF)]
    assert device.files == [] and device.uploaded[0].data == data
    assert conn.data_to_send() == device.init_packet()


def test_repeat_init_before_everything_sent_keeps_the_file() -> None:
    device = photo_device()
    conn = device.connect()
    conn.receive_data(h("000800072570686f746f66") + h("0002000400000001"))
    conn.data_to_send(max_packets=1)
    assert conn.receive_data(h("00090000")) == []
    assert len(device.files) == 1
    assert conn.state is DeviceState.IDLE and conn.current is None
    assert conn.data_to_send() == device.init_packet()


def test_repeat_init_right_after_a_file_request_keeps_that_file() -> None:
    # After a 3000-byte upload, a FILE REQUEST for a shorter file must not count as all sent:
    # a REPEAT INIT before any of its data went out does not mean the server has it.
    first = slot_file(DualCamSlot.VIDEO_REAR, b"a" * 3000)
    second = slot_file(DualCamSlot.PHOTO_FRONT, b"b" * 1000)
    device = CameraDevice(imei=1, files=[first, second])
    conn = device.connect()
    conn.receive_data(h("0008000725766964656f72") + h("0002000400000001"))
    conn.data_to_send()
    assert conn.receive_data(h("0009")) == [FileAccepted(file=first.file)]
    assert conn.receive_data(h("000800072570686f746f66")) == [FileRequested(file=PHOTOF)]
    assert not conn.all_sent
    assert conn.receive_data(h("0009")) == []
    assert device.files == [second]
    assert device.uploaded == [first]


def test_repeat_init_with_nothing_requested() -> None:
    device = photo_device()
    conn = device.connect()
    conn.data_to_send()
    assert conn.receive_data(h("0009")) == []
    assert conn.data_to_send() == device.init_packet()


def test_resume_mid_file_and_crc_chain() -> None:
    data = payload_bytes(5000)
    for restart, init in ((True, 0), (False, crc16(data[:2048]))):
        device = CameraDevice(
            imei=1, files=[path_file(DSM_PATH, data)], restart_crc_after_resume=restart
        )
        conn = device.connect()
        conn.receive_data(h("0008001e") + DSM_PATH)
        conn.data_to_send()
        item = device.files[0]
        assert conn.receive_data(h("0002000400000800")) == [
            ResumeRequested(file=item.file, offset=2048)
        ]
        assert conn.data_to_send(limit=1) == h("0003000400000800")
        assert conn.data_to_send(limit=1) == frame(
            0x0004, data[2048:3072] + crc16(data[2048:3072], init).to_bytes(2, "big")
        )


def test_bad_crc_packets_are_sent_wrong_once() -> None:
    data = payload_bytes(2048)
    device = CameraDevice(
        imei=1, files=[slot_file(DualCamSlot.PHOTO_FRONT, data)], bad_crc_packets={2}
    )
    conn = device.connect()
    conn.receive_data(h("000800072570686f746f66") + h("0002000400000001"))
    out = conn.data_to_send()
    assert out[-2:] == (crc16(data) ^ 0xFFFF).to_bytes(2, "big")
    assert device.bad_crc_packets == set()
    conn.receive_data(h("0002000400000002"))
    assert conn.data_to_send()[-2:] == crc16(data[1024:]).to_bytes(2, "big")


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (h("000a0000"), "server asked metadata with no file named or offered"),
        (h("0002000400000001"), "server sent RESUME with no file requested"),
        (
            h("000800072570686f746f66") + h("0002000400000004"),
            "RESUME offset 3072 past the end of %photof",
        ),
    ],
)
def test_server_misbehaving(wire: bytes, message: str) -> None:
    conn = photo_device().connect()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(wire)
    assert str(info.value) == message


def test_resume_past_the_end_of_a_path_file() -> None:
    device = CameraDevice(imei=1, files=[path_file(DSM_PATH, b"x" * 100)])
    conn = device.connect()
    conn.receive_data(h("0008001e") + DSM_PATH)
    with pytest.raises(RemoteProtocolError, match="RESUME offset 101 past the end of dsm/"):
        conn.receive_data(h("0002000400000065"))
    assert conn.closed  # a misbehaving server ends the connection
    conn = device.connect()
    conn.receive_data(h("0008001e") + DSM_PATH)
    assert conn.receive_data(h("0002000400000064")) == [
        ResumeRequested(file=device.files[0].file, offset=100)
    ]


def test_file_request_for_a_file_the_device_lacks() -> None:
    conn = photo_device().connect()
    conn.data_to_send()
    videor = CameraFile.for_slot(DualCamSlot.VIDEO_REAR)
    assert conn.receive_data(h("0008000725766964656f72")) == [FileRequested(file=videor)]
    assert conn.data_to_send() == h("0005000400000011")  # STATUS 0x11: file not available
    with pytest.raises(RemoteProtocolError, match="RESUME with no file requested"):
        conn.receive_data(h("0002000400000001"))
    assert conn.closed
    conn = photo_device().connect()
    other = b"dsm/gone.jpg"
    assert conn.receive_data(h("0008000c") + other) == [
        FileRequested(file=CameraFile.for_path(other))
    ]


def test_path_request_with_no_file_is_answered_with_a_bare_nul() -> None:
    conn = photo_device().connect()
    conn.data_to_send()
    assert conn.receive_data(h("000c00020000")) == [PathRequested()]
    assert conn.data_to_send() == h("000d000100")


def test_empty_paths_are_answered_before_the_real_path() -> None:
    item = path_file(DSM_PATH, b"x")
    device = CameraDevice(imei=1, files=[item], empty_paths=1, extra_settings=0)
    assert device.settings() == 1 << 25
    conn = device.connect()
    conn.data_to_send()
    conn.receive_data(h("000c00020000"))
    assert conn.data_to_send() == h("000d000100")
    conn.receive_data(h("000c00020000"))
    assert conn.data_to_send() == h("000d001e") + DSM_PATH
    assert CameraDevice(imei=1, files=[], empty_paths=1, extra_settings=0).settings() == 1 << 25


def test_metadata_request_for_a_file_it_lacks_or_fails() -> None:
    conn = photo_device().connect()
    conn.data_to_send()
    videor = CameraFile.for_slot(DualCamSlot.VIDEO_REAR)
    assert conn.receive_data(h("000a000725766964656f72")) == [MetadataRequested(file=videor)]
    assert conn.data_to_send() == h("0005000400000011")
    device = photo_device()
    device.metadata_status[b"%photof"] = 2
    conn = device.connect()
    conn.data_to_send()
    conn.receive_data(h("000a00072570686f746f66"))
    assert conn.data_to_send() == h("0005000400000002")


def test_gone_empty_and_failing_files() -> None:
    device = photo_device()
    assert device.pending == device.files
    device.gone.add(b"%photof")
    assert device.pending == []
    conn = device.connect()
    conn.data_to_send()
    conn.receive_data(h("000800072570686f746f66"))
    assert conn.data_to_send() == h("0005000400000011")
    device = photo_device()
    device.request_status[b"%photof"] = 3
    conn = device.connect()
    conn.data_to_send()
    conn.receive_data(h("000800072570686f746f66"))
    assert conn.data_to_send() == h("0005000400000003")
    stuck = photo_device()
    stuck.stuck.add(b"%photof")
    assert stuck.pending == []
    conn = stuck.connect()
    conn.data_to_send()
    conn.receive_data(h("000800072570686f746f66"))
    assert conn.data_to_send() == h("00010006000000000000")  # START 0: nothing to send
    conn.receive_data(h("0009"))
    assert [f.file.identifier for f in stuck.files] == [b"%photof"]  # still offered


def test_status_zero_from_the_server_hangs_up() -> None:
    conn = photo_device().connect()
    assert conn.receive_data(h("0005000400000000")) == [StatusReceived(status=0)]
    assert conn.closed


def test_metadata_request_for_the_path_sent() -> None:
    item = path_file(DSM_PATH, b"x")
    device = CameraDevice(imei=1, files=[item])
    conn = device.connect()
    conn.receive_data(h("000c00020000"))
    assert conn.receive_data(h("000a0000")) == [MetadataRequested(file=item.file)]


def test_status_and_close() -> None:
    conn = photo_device().connect()
    assert conn.receive_data(h("0005000400000009")) == [StatusReceived(status=9)]
    assert conn.receive_data(h("00000000") + h("0005000400000009")) == [CloseRequested()]
    assert conn.closed and conn.state is DeviceState.CLOSED
    assert conn.receive_data(h("0005000400000009")) == []
    with pytest.raises(LocalProtocolError, match="connection already closed"):
        conn.close()


def test_bare_close_needs_eof() -> None:
    conn = photo_device().connect()
    assert conn.receive_data(h("0000")) == []
    assert conn.receive_data(b"", eof=True) == [CloseRequested()]


def test_local_close() -> None:
    conn = photo_device().connect()
    conn.close()
    assert conn.closed


def test_framing_error_closes() -> None:
    conn = photo_device().connect()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(h("0003000400000001"))
    assert str(info.value) == "SYNC(0x0003) is not a command the server sends"
    assert conn.closed
    assert conn.receive_data(h("0005000400000009")) == []


def test_data_only_while_sending() -> None:
    conn = photo_device().connect()
    conn.receive_data(h("000800072570686f746f66"))
    conn.data_to_send()
    assert conn.data_to_send() == b""  # requested, but no RESUME yet


# --- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slot", "identifier", "metadata_type", "media"),
    [
        (DualCamSlot.PHOTO_FRONT, b"%photof", 4, Media.PHOTO),
        (DualCamSlot.PHOTO_REAR, b"%photor", 8, Media.PHOTO),
        (DualCamSlot.VIDEO_FRONT, b"%videof", 16, Media.VIDEO),
        (DualCamSlot.VIDEO_REAR, b"%videor", 32, Media.VIDEO),
    ],
)
def test_slots(slot: DualCamSlot, identifier: bytes, metadata_type: int, media: Media) -> None:
    file = CameraFile.for_slot(slot)
    assert file.identifier == slot.identifier == identifier
    assert slot.metadata_type == metadata_type
    assert CameraFile.from_identifier(identifier) == file
    assert not file.by_path
    assert file.camera is Camera.DUALCAM
    assert file.media is media
    assert str(file) == identifier.decode()


def test_offered_slots() -> None:
    assert offered_slots(0x44000400) == (DualCamSlot.PHOTO_FRONT,)
    assert offered_slots(0x3C000000) == tuple(DualCamSlot)
    assert offered_slots(1 << 25) == ()


@pytest.mark.parametrize(
    ("path", "camera", "media"),
    [
        (b"dsm/picture/231020/231452.jpg\0", Camera.DSM, Media.PHOTO),
        (b"dsm/video/231020/231452.mp4", Camera.DSM, Media.VIDEO),
        (b"mdas9/video/231020/1.mp4", Camera.ADAS, Media.VIDEO),
        (b"ADAS/snap.png", Camera.ADAS, Media.PHOTO),
        (b"dualcam_front/clip.h265", Camera.DUALCAM, Media.VIDEO),
        (b"dualcam_rear/x.h264", Camera.DUALCAM, Media.VIDEO),
        (b"dashcam/a.avi", Camera.DASHCAM, Media.VIDEO),
        (b"dashcam/photo_1", Camera.DASHCAM, Media.PHOTO),
        (b"cam/picture_1", Camera.UNKNOWN, Media.PHOTO),
        (b"x/a.jpeg", Camera.UNKNOWN, Media.PHOTO),
        (b"x/a.bin", Camera.UNKNOWN, Media.UNKNOWN),
    ],
)
def test_path_files(path: bytes, camera: Camera, media: Media) -> None:
    file = CameraFile.for_path(path)
    assert file.by_path
    assert file.slot is None
    assert CameraFile.from_identifier(path) == file
    assert file.camera is camera
    assert file.media is media


def test_path_text() -> None:
    assert CameraFile.for_path(DSM_PATH).path == "dsm/picture/231020/231452.jpg"
    assert str(CameraFile.for_path(b"dsm/\xff.jpg\0\0")) == "dsm/\\xff.jpg"

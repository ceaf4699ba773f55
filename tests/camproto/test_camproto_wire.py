"""Framing, both directions: bytes in -> frames out (whole, byte by byte, with trailing data)."""

from __future__ import annotations

import pytest

from camproto import CommandId, crc16
from camproto._wire import DeviceFrameReader, Frame, FrameError, ServerFrameReader, encode
from tests.camproto.camproto_helpers import DSM_PATH, data_frame, frame, tr_device, tr_server, u32

C = CommandId
h = bytes.fromhex

DUALCAM_META_32 = bytes(range(32))
DATA_SIZES = (1, 2, 513, 1023, 1024)

# Device -> server: (name, wire bytes, frame).
SERVER_CASES: list[tuple[str, bytes, Frame]] = [
    (
        "init-community",
        h("0000000500013ee13c00198144000400"),
        Frame(C.INIT, h("000500013ee13c00198144000400")),
    ),
    (
        "init-traccar",
        h("000000050001403a4abaa31444000400"),
        Frame(C.INIT, h("00050001403a4abaa31444000400")),
    ),
    ("start-dualcam-32-packets", h("00010006000000200000"), Frame(C.START, h("000000200000"))),
    ("start-dsm-bytes-crc", h("0001000600001400beef"), Frame(C.START, h("00001400beef"))),
    ("sync", h("0003000400000001"), Frame(C.SYNC, h("00000001"))),
    ("status-complete", h("0005000400000001"), Frame(C.STATUS, h("00000001"))),
    ("metadata-32", h("000b0020") + DUALCAM_META_32, Frame(C.METADATA, DUALCAM_META_32)),
    ("metadata-1", h("000b000100"), Frame(C.METADATA, b"\x00")),
    ("metadata-1024", h("000b0400") + b"m" * 1024, Frame(C.METADATA, b"m" * 1024)),
    ("path-with-nul", h("000d001e") + DSM_PATH, Frame(C.PATH, DSM_PATH)),
    ("path-512", h("000d0200") + b"p" * 512, Frame(C.PATH, b"p" * 512)),
    (
        "enhanced-data",
        h("000e000b") + u32(1024) + b"hello" + crc16(b"hello").to_bytes(2, "big"),
        Frame(C.ENHANCED_DATA, u32(1024) + b"hello" + crc16(b"hello").to_bytes(2, "big")),
    ),
    *(
        (
            f"data-{size}",
            data_frame(bytes([size % 251]) * size),
            Frame(
                C.DATA,
                bytes([size % 251]) * size + crc16(bytes([size % 251]) * size).to_bytes(2, "big"),
            ),
        )
        for size in DATA_SIZES
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in SERVER_CASES], ids=[c[0] for c in SERVER_CASES]
)
def test_server_reader(data: bytes, expected: Frame) -> None:
    tr_server(data, expected)


def test_data_frame_layout() -> None:
    # 1024 data bytes + 2 CRC bytes: the length field says 1026.
    wire = data_frame(b"\xff" * 1024)
    assert wire[:4] == h("00040402")
    assert wire[-2:] == crc16(b"\xff" * 1024).to_bytes(2, "big")


# Server -> device: (name, wire bytes, frame). All byte-exact reference-server output.
DEVICE_CASES: list[tuple[str, bytes, Frame]] = [
    ("close", h("00000000"), Frame(C.INIT, b"")),
    ("repeat-init-bare", h("0009"), Frame(C.REPEAT_INIT, b"")),
    ("resume-0", h("0002000400000000"), Frame(C.RESUME, u32(0))),
    ("resume-dualcam-6", h("0002000400000006"), Frame(C.RESUME, u32(6))),
    ("resume-dsm-5120", h("0002000400001400"), Frame(C.RESUME, u32(5120))),
    ("file-request-photof", h("000800072570686f746f66"), Frame(C.FILE_REQUEST, b"%photof")),
    ("file-request-photor", h("000800072570686f746f72"), Frame(C.FILE_REQUEST, b"%photor")),
    ("file-request-videof", h("0008000725766964656f66"), Frame(C.FILE_REQUEST, b"%videof")),
    ("file-request-videor", h("0008000725766964656f72"), Frame(C.FILE_REQUEST, b"%videor")),
    (
        "file-request-dsm-path",
        h("0008001e64736d2f706963747572652f3233313032302f3233313435322e6a706700"),
        Frame(C.FILE_REQUEST, DSM_PATH),
    ),
    ("file-request-512", h("00080200") + b"p" * 512, Frame(C.FILE_REQUEST, b"p" * 512)),
    ("metadata-request-empty", h("000a0000"), Frame(C.METADATA_REQUEST, b"")),
    ("metadata-request-videor", h("000a000725766964656f72"), Frame(C.METADATA_REQUEST, b"%videor")),
    ("path-request", h("000c00020000"), Frame(C.PATH_REQUEST, h("0000"))),
    ("status-0", h("0005000400000000"), Frame(C.STATUS, u32(0))),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in DEVICE_CASES], ids=[c[0] for c in DEVICE_CASES]
)
def test_device_reader(data: bytes, expected: Frame) -> None:
    tr_device(data, expected)


def test_repeat_init_with_length_whole() -> None:
    # ``0009 0000`` (T4) in one read: the 0009 at once; its 0000 waits for the next bytes,
    # which tell a length from the start of a CLOSE. At EOF it is the length.
    # Byte by byte it cannot follow the "nothing until the last byte" rule, because a bare
    # ``0009`` is a whole command too (see test_repeat_init_with_length_byte_by_byte).
    reader = DeviceFrameReader()
    reader.feed(h("00090000"))
    assert reader.next_frame() == Frame(C.REPEAT_INIT, b"")
    assert reader.next_frame() is None
    assert len(reader) == 2
    assert reader.next_frame(eof=True) is None
    assert len(reader) == 0


def test_bare_close_at_eof() -> None:
    tr_device(h("0000"), Frame(C.INIT, b""), eof=True)


def test_bare_close_waits_for_eof() -> None:
    reader = DeviceFrameReader()
    reader.feed(h("0000"))
    assert reader.next_frame() is None
    assert len(reader) == 2
    assert reader.next_frame(eof=True) == Frame(C.INIT, b"")


def test_bare_close_then_another_command() -> None:
    # A bare 0000 followed by something that is not a zero length: CLOSE, then that command.
    reader = DeviceFrameReader()
    reader.feed(h("0000") + h("0005000400000003"))
    assert reader.next_frame() == Frame(C.INIT, b"")
    assert reader.next_frame() == Frame(C.STATUS, u32(3))


def test_odd_byte_at_eof_waits() -> None:
    reader = DeviceFrameReader()
    reader.feed(b"\x00")
    assert reader.next_frame(eof=True) is None


def test_repeat_init_with_length_byte_by_byte() -> None:
    # 0009 is taken as soon as its two bytes are in; its 0000 length is then dropped once the
    # next command shows it was a length.
    reader = DeviceFrameReader()
    frames = []
    for byte in h("00090000"):
        reader.feed(bytes([byte]))
        frames.append(reader.next_frame())
    assert frames == [None, Frame(C.REPEAT_INIT, b""), None, None]
    reader.feed(h("000c00020000"))
    assert reader.next_frame() == Frame(C.PATH_REQUEST, h("0000"))
    assert len(reader) == 0


def test_repeat_init_with_length_and_trailing_data() -> None:
    reader = DeviceFrameReader()
    reader.feed(h("00090000") + h("0005000400000007"))
    assert reader.next_frame() == Frame(C.REPEAT_INIT, b"")
    assert reader.next_frame() == Frame(C.STATUS, u32(7))
    assert len(reader) == 0


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (h("000c00020000"), Frame(C.PATH_REQUEST, h("0000"))),
        (h("000a000725766964656f72"), Frame(C.METADATA_REQUEST, b"%videor")),
        (h("000800072570686f746f66"), Frame(C.FILE_REQUEST, b"%photof")),
        (h("00000000"), Frame(C.INIT, b"")),  # length, then a whole CLOSE
        (h("0000"), Frame(C.INIT, b"")),  # length, then a bare CLOSE
    ],
    ids=["path-request", "metadata-request", "file-request", "close", "bare-close"],
)
def test_repeat_init_split_from_its_length(after: bytes, expected: Frame) -> None:
    # 0009 in one read, its 0000 length in the next, then the next command in a third.
    reader = DeviceFrameReader()
    reader.feed(h("0009"))
    assert reader.next_frame() == Frame(C.REPEAT_INIT, b"")
    reader.feed(h("0000"))
    assert reader.next_frame() is None
    reader.feed(after)
    assert reader.next_frame() == expected


def test_bare_repeat_init_then_close() -> None:
    # What our own server sends at the end of a session: a bare 0009, and after the device's
    # INIT a whole CLOSE. The CLOSE must not lose its first half to the 0009.
    reader = DeviceFrameReader()
    reader.feed(h("0009"))
    assert reader.next_frame() == Frame(C.REPEAT_INIT, b"")
    reader.feed(h("00000000"))
    assert reader.next_frame() == Frame(C.INIT, b"")


def test_repeat_init_then_lone_zero_at_eof_is_its_length() -> None:
    # A lone 0000 after 0009, then EOF: read as ``0009 0000`` would be in one read, not as
    # CLOSE (Traccar's bare 0009 + bare 0000 is indistinguishable; the connection ends anyway).
    reader = DeviceFrameReader()
    reader.feed(h("0009"))
    assert reader.next_frame() == Frame(C.REPEAT_INIT, b"")
    reader.feed(h("0000"))
    assert reader.next_frame() is None
    assert reader.next_frame(eof=True) is None
    assert len(reader) == 0


def test_repeat_init_length_then_close() -> None:
    # T4 style, both commands with lengths, in one read.
    reader = DeviceFrameReader()
    reader.feed(h("00090000") + h("00000000"))
    assert reader.next_frame() == Frame(C.REPEAT_INIT, b"")
    assert reader.next_frame() == Frame(C.INIT, b"")


def test_repeated_repeat_init() -> None:
    reader = DeviceFrameReader()
    reader.feed(h("0009") + h("0009") + h("0005000400000001"))
    assert [reader.next_frame() for _ in range(4)] == [
        Frame(C.REPEAT_INIT, b""),
        Frame(C.REPEAT_INIT, b""),
        Frame(C.STATUS, u32(1)),
        None,
    ]


def test_bare_repeat_init_then_command_in_one_read() -> None:
    reader = DeviceFrameReader()
    reader.feed(h("0009") + h("000c00020000"))
    assert reader.next_frame() == Frame(C.REPEAT_INIT, b"")
    assert reader.next_frame() == Frame(C.PATH_REQUEST, h("0000"))


def test_bare_repeat_init_then_partial_zero() -> None:
    # Three bytes after a bare 0009: not enough to tell a length from a CLOSE yet.
    reader = DeviceFrameReader()
    reader.feed(h("0009"))
    assert reader.next_frame() == Frame(C.REPEAT_INIT, b"")
    reader.feed(h("000000"))
    assert reader.next_frame() is None
    reader.feed(h("00"))
    assert reader.next_frame() == Frame(C.INIT, b"")


def test_encode() -> None:
    assert encode(C.RESUME, u32(1)) == h("0002000400000001")
    assert encode(C.INIT) == h("00000000")
    assert encode(C.PATH_REQUEST, b"\0\0") == h("000c00020000")


def test_label() -> None:
    assert C.RESUME.label() == "RESUME(0x0002)"
    assert C.ENHANCED_DATA.label() == "ENHANCED_DATA(0x000E)"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (h("000f00000000"), "unknown command id 0x000F from the device"),
        (h("ffff00000000"), "unknown command id 0xFFFF from the device"),
        (h("0002000400000000"), "RESUME(0x0002) is not a command the device sends"),
        (h("0009"), None),  # fewer than 4 bytes: not yet a header
        (h("00040403") + b"x" * 1027, "DATA(0x0004) length 1027, allowed 3..1026"),
        (h("00040002") + b"xx", "DATA(0x0004) length 2, allowed 3..1026"),
        (h("000d0201") + b"p" * 513, "PATH(0x000D) length 513, allowed 1..512"),
        (h("000d0000"), "PATH(0x000D) length 0, allowed 1..512"),
        (h("000b0401") + b"m" * 1025, "METADATA(0x000B) length 1025, allowed 1..1024"),
        (h("00010005") + b"x" * 5, "START(0x0001) length 5, allowed exactly 6"),
        (h("00030005") + b"x" * 5, "SYNC(0x0003) length 5, allowed exactly 4"),
        (h("00050000"), "STATUS(0x0005) length 0, allowed exactly 4"),
        (h("000e0006") + b"x" * 6, "ENHANCED_DATA(0x000E) length 6, allowed 7..1030"),
    ],
)
def test_server_reader_errors(data: bytes, message: str | None) -> None:
    reader = ServerFrameReader()
    reader.feed(data)
    if message is None:
        assert reader.next_frame() is None
        return
    with pytest.raises(FrameError) as info:
        reader.next_frame()
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (h("000f0000"), "unknown command id 0x000F from the server"),
        (h("0003000400000001"), "SYNC(0x0003) is not a command the server sends"),
        (h("00040003") + b"abc", "DATA(0x0004) is not a command the server sends"),
        (h("000b0000"), "METADATA(0x000B) is not a command the server sends"),
        (h("000d0000"), "PATH(0x000D) is not a command the server sends"),
        (h("0001000600000000"), "START(0x0001) is not a command the server sends"),
        (h("00020003000000"), "RESUME(0x0002) length 3, allowed exactly 4"),
        (h("00080000"), "FILE_REQUEST(0x0008) length 0, allowed 1..512"),
        (h("00080201") + b"p" * 513, "FILE_REQUEST(0x0008) length 513, allowed 1..512"),
        (h("000a0201") + b"p" * 513, "METADATA_REQUEST(0x000A) length 513, allowed 0..512"),
        (h("000c0000"), "PATH_REQUEST(0x000C) length 0, allowed exactly 2"),
    ],
)
def test_device_reader_errors(data: bytes, message: str) -> None:
    reader = DeviceFrameReader()
    reader.feed(data)
    with pytest.raises(FrameError) as info:
        reader.next_frame()
    assert str(info.value) == message


def test_device_reader_waits_for_header_and_body() -> None:
    reader = DeviceFrameReader()
    reader.feed(h("000200"))
    assert reader.next_frame() is None
    reader.feed(h("04000000"))
    assert reader.next_frame() is None
    reader.feed(h("01"))
    assert reader.next_frame() == Frame(C.RESUME, u32(1))


def test_many_frames_through_one_reader() -> None:
    # Frames fed in uneven pieces come out in order (the buffer compacts as it goes).
    frames = [frame(0x0005, u32(i)) for i in range(200)]
    stream = b"".join(frames)
    reader = ServerFrameReader()
    out = []
    for i in range(0, len(stream), 13):
        reader.feed(stream[i : i + 13])
        while (got := reader.next_frame()) is not None:
            out.append(got)
    assert out == [Frame(C.STATUS, u32(i)) for i in range(200)]
    assert len(reader) == 0

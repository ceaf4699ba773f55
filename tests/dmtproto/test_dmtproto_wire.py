"""Framing and the fixed-layout messages: bytes in -> frames out (whole, byte by byte, with
trailing data); limits checked as soon as the header is in."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from dmtproto import (
    EPOCH_2013,
    Hello,
    MessageType,
    decode_hello,
    encode,
    encode_hello,
    from_dm_time,
    to_dm_time,
)
from dmtproto._wire import Frame, FrameError, FrameReader, type_label
from tests.dmtproto.dmtproto_helpers import (
    HELLO,
    VECTOR_ASYNC,
    VECTOR_DATA,
    VECTOR_HELLO,
    h,
    tr,
)

M = MessageType

CASES: list[tuple[str, bytes, Frame]] = [
    ("hello-49", VECTOR_HELLO, Frame(0x00, VECTOR_HELLO)),
    (
        "hello-51",
        encode(0x00, VECTOR_HELLO[5:] + b"\x01\x02"),
        Frame(0x00, encode(0x00, VECTOR_HELLO[5:] + b"\x01\x02")),
    ),
    ("data-2-records", VECTOR_DATA, Frame(0x04, VECTOR_DATA)),
    ("async-session", VECTOR_ASYNC, Frame(0x22, VECTOR_ASYNC)),
    ("commit-request", h("0255050000"), Frame(0x05, h("0255050000"))),
    ("commit-response", h("025506010001"), Frame(0x06, h("025506010001"))),
    (
        "version-data-response",
        h("0255150c00") + bytes(12),
        Frame(0x15, h("0255150c00") + bytes(12)),
    ),
    ("unknown-type", h("02557f0300abcdef"), Frame(0x7F, h("02557f0300abcdef"))),
    ("payload-255", encode(0x04, bytes(255)), Frame(0x04, encode(0x04, bytes(255)))),
    ("payload-65535", encode(0x04, b"\x01" * 0xFFFF), Frame(0x04, encode(0x04, b"\x01" * 0xFFFF))),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reader(data: bytes, expected: Frame) -> None:
    tr(data, expected)


def test_frame_payload_is_after_the_header() -> None:
    assert Frame(0x05, h("025505020001ff")).payload == h("01ff")


@pytest.mark.parametrize(
    ("data", "got"),
    [
        (h("03"), "03"),  # the first wrong byte is enough
        (h("0256"), "02 56"),
        (h("5502"), "55"),
        (h("474554202f20485454502f312e310d0a"), "47"),  # an HTTP request
        (h("0255050000") + h("00"), "00"),  # after a good message
    ],
)
def test_bad_sync_fails_on_the_first_wrong_byte(data: bytes, got: str) -> None:
    reader = FrameReader()
    reader.feed(data)
    if data.startswith(h("0255050000")):
        assert reader.next_frame() == Frame(0x05, h("0255050000"))
    with pytest.raises(FrameError, match=f"sync bytes 02 55 \\(got {got}\\)") as info:
        reader.next_frame()
    assert info.value.message_type is None


def test_length_over_the_limit_fails_before_the_body_arrives() -> None:
    reader = FrameReader(max_payload=100)
    reader.feed(h("025504650000"))  # header only: 101 bytes announced
    with pytest.raises(
        FrameError,
        match=r"DATA_RECORDS\(0x04\) payload of 101 bytes exceeds the 100-byte message limit",
    ) as info:
        reader.next_frame()
    assert info.value.message_type == 0x04


def test_length_at_the_limit_is_accepted() -> None:
    tr(encode(0x04, bytes(100)), Frame(0x04, encode(0x04, bytes(100))), max_payload=100)


def test_unknown_type_over_the_limit_is_named_by_number() -> None:
    reader = FrameReader(max_payload=0)
    reader.feed(h("0255ee0100"))
    with pytest.raises(FrameError, match="0xEE payload of 1 bytes"):
        reader.next_frame()


def test_buffer_compacts_without_losing_bytes() -> None:
    reader = FrameReader()
    messages = [encode(0x04, bytes([i]) * i) for i in range(1, 60)]
    stream = b"".join(messages)
    frames = []
    for pos in range(0, len(stream), 7):
        reader.feed(stream[pos : pos + 7])
        while frame := reader.next_frame():
            frames.append(frame.raw)
    assert frames == messages
    assert len(reader) == 0


def test_type_labels() -> None:
    assert M.DATA_RECORDS.label() == "DATA_RECORDS(0x04)"
    assert type_label(0x26) == "SOCKET_CLOSURE(0x26)"
    assert type_label(0x99) == "0x99"


def test_encode() -> None:
    assert encode(M.COMMIT_RESPONSE, b"\x01") == h("025506010001")
    assert encode(M.ASYNC_SESSION_COMPLETE) == h("0255230000")
    assert encode(M.DATA_RECORDS, bytes(0x1234))[:5] == h("0255043412")


def test_hello_decodes_the_vector() -> None:
    hello = decode_hello(VECTOR_HELLO[5:])
    assert hello == HELLO
    assert hello.firmware == "1.9"
    assert hello.product == "Dart"
    assert replace(hello, product_id=89).product == "G70"
    assert replace(hello, product_id=200).product is None
    assert encode_hello(hello) == VECTOR_HELLO


def test_hello_51_keeps_its_two_extra_bytes() -> None:
    hello = decode_hello(VECTOR_HELLO[5:] + b"\xab\xcd")
    assert hello.extra == b"\xab\xcd"
    assert hello.imei == HELLO.imei
    assert encode_hello(hello) == encode(0x00, VECTOR_HELLO[5:] + b"\xab\xcd")


def test_hello_strings_stop_at_nul_and_survive_non_ascii() -> None:
    payload = bytearray(VECTOR_HELLO[5:])
    payload[4:20] = b"12345\x00garbage\xff\xfe\x00"
    payload[20:41] = b"\xff" * 21  # no NUL at all
    hello = decode_hello(bytes(payload))
    assert hello.imei == "12345"
    assert hello.iccid == "\ufffd" * 21


def test_dm_time() -> None:
    assert datetime(2013, 1, 1, tzinfo=UTC).timestamp() == EPOCH_2013
    assert to_dm_time(EPOCH_2013 + 255505915.9) == 255505915
    assert from_dm_time(255505915) == datetime(2021, 2, 5, 5, 51, 55, tzinfo=UTC)
    assert from_dm_time(0) is None  # clock not set
    assert to_dm_time(0) == 0  # before 2013: clamped
    assert to_dm_time(EPOCH_2013 + 2**33) == 0xFFFFFFFF


def test_hello_dataclass_defaults() -> None:
    hello = Hello(
        serial=1,
        imei="1",
        iccid="",
        product_id=0,
        hardware_revision=0,
        firmware_major=0,
        firmware_minor=0,
    )
    assert hello.flags == 0 and hello.extra == b""

"""Wire constants, framing and the fixed-layout messages of the Digital Matter binary protocol.

Every message is ``02 55 | type u8 | length u16 LE | payload[length]``; all integers are
little-endian and times are seconds since 2013-01-01T00:00:00Z (:data:`EPOCH_2013`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

__all__ = [
    "COMMIT_OK",
    "DEFAULT_MAX_MESSAGE",
    "EPOCH_2013",
    "HEADER_SIZE",
    "HELLO_SIZE",
    "PRODUCT_NAMES",
    "SYNC",
    "Frame",
    "FrameError",
    "FrameReader",
    "Hello",
    "MessageType",
    "decode_hello",
    "encode",
    "encode_hello",
    "from_dm_time",
    "to_dm_time",
]

#: The two bytes every message starts with.
SYNC = b"\x02\x55"
HEADER_SIZE = 5
#: Unix time of 2013-01-01T00:00:00Z, the protocol's epoch.
EPOCH_2013 = 1356998400
#: Default cap on a message's payload (the u16 length field allows 65535).
DEFAULT_MAX_MESSAGE = 16 * 1024
#: Status byte of a successful commit response.
COMMIT_OK = 1
#: Hello payload: serial u32, IMEI char[16], ICCID char[21], product, hw rev, fw major, fw minor,
#: flags u32. Some devices send 2 more bytes (51 in all); their meaning is not public.
HELLO_SIZE = 49

#: Product ids seen with their names: 34 in Traccar's capture, whose debug text reads
#: "RESET Dart 34.2.1.9" (product.hardware.firmware), 89 in a G70's OEM Server sample
#: (FW "89.1.1.3"). Digital Matter's full list is not public.
PRODUCT_NAMES: dict[int, str] = {34: "Dart", 89: "G70"}

_HEADER = struct.Struct("<2sBH")
_HELLO = struct.Struct("<I16s21sBBBBI")


class MessageType(IntEnum):
    """Message types. Device->server and server->device share one number space."""

    #: Device: HELLO, who it is (49 or 51 bytes).
    HELLO = 0x00
    #: Server: HELLO RESPONSE, u32 time now (2013 epoch) and u32 flags.
    HELLO_RESPONSE = 0x01
    #: Device: one or more data records.
    DATA_RECORDS = 0x04
    #: Device: commit request: "have you stored what I sent? then I delete it".
    COMMIT_REQUEST = 0x05
    #: Server: commit response, u8 status (1 = success).
    COMMIT_RESPONSE = 0x06
    #: Device: legacy fixed 64-byte records.
    FIXED_RECORDS = 0x10
    #: Device: version data ("canned request 1", pre-2018 firmware direct to 3rd party).
    VERSION_DATA = 0x14
    #: Server: reply to VERSION_DATA, 12 zero bytes.
    VERSION_DATA_RESPONSE = 0x15
    #: Server: asynchronous message request (not implemented).
    ASYNC_MESSAGE_REQUEST = 0x20
    #: Device: asynchronous message response (not implemented).
    ASYNC_MESSAGE_RESPONSE = 0x21
    #: Device: asynchronous session request ("canned request 2").
    ASYNC_SESSION_REQUEST = 0x22
    #: Server: asynchronous session complete (nothing queued for the device), empty.
    ASYNC_SESSION_COMPLETE = 0x23
    #: Device: socket closure (some 4G variants announce that they hang up).
    SOCKET_CLOSURE = 0x26
    #: Device: time request (G100).
    TIME_REQUEST = 0x30
    #: Server: time response, u32 time now (2013 epoch).
    TIME_RESPONSE = 0x31

    def label(self) -> str:
        return f"{self.name}(0x{self.value:02X})"


def type_label(raw: int) -> str:
    """``DATA_RECORDS(0x04)`` for a known type, ``0x7F`` for an unknown one."""
    try:
        return MessageType(raw).label()
    except ValueError:
        return f"0x{raw:02X}"


def to_dm_time(unix: float) -> int:
    """Seconds since 2013-01-01 UTC, as the wire carries them (u32, clamped)."""
    return min(max(int(unix) - EPOCH_2013, 0), 0xFFFFFFFF)


def from_dm_time(value: int) -> datetime | None:
    """The datetime of a wire time; None for 0, which devices send while their clock is unset."""
    if value == 0:
        return None
    return datetime.fromtimestamp(EPOCH_2013 + value, UTC)


def encode(message_type: int, payload: bytes = b"") -> bytes:
    """Serialise one message."""
    return _HEADER.pack(SYNC, message_type, len(payload)) + payload


@dataclass(frozen=True, slots=True)
class Frame:
    """One message off the wire: its type (any byte) and its bytes, header included."""

    type: int
    raw: bytes

    @property
    def payload(self) -> bytes:
        return self.raw[HEADER_SIZE:]


class FrameError(Exception):
    """Framing failure; the connection adds its state and raises RemoteProtocolError.

    ``message_type`` is the type byte when the header got that far.
    """

    def __init__(self, msg: str, message_type: int | None = None) -> None:
        super().__init__(msg)
        self.message_type = message_type


class FrameReader:
    """Receive buffer that splits bytes into messages; compacts lazily (no quadratic copying).

    The length is checked against ``max_payload`` as soon as the header is in, before any of
    the body is buffered.
    """

    __slots__ = ("_buf", "_pos", "max_payload")

    def __init__(self, max_payload: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_payload = max_payload

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def __len__(self) -> int:
        return len(self._buf) - self._pos

    def next_frame(self) -> Frame | None:
        """Return the next whole message, or None if more bytes are needed."""
        pos = self._pos
        available = len(self._buf) - pos
        if available < HEADER_SIZE:
            head = self._buf[pos : pos + 2]
            if head != SYNC[: len(head)]:
                self._bad_sync()  # fail on the first wrong byte, not after 5
            return None
        sync, message_type, length = _HEADER.unpack_from(self._buf, pos)
        if sync != SYNC:
            self._bad_sync()
        if length > self.max_payload:
            raise FrameError(
                f"{type_label(message_type)} payload of {length} bytes exceeds the "
                f"{self.max_payload}-byte message limit",
                message_type,
            )
        end = pos + HEADER_SIZE + length
        if len(self._buf) < end:
            return None
        frame = Frame(message_type, bytes(self._buf[pos:end]))
        if end == len(self._buf):  # all consumed: free the buffer of an idle connection
            self._buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return frame

    def _bad_sync(self) -> None:
        head = bytes(self._buf[self._pos : self._pos + 2])
        got = (head if head[0] == SYNC[0] else head[:1]).hex(" ")  # up to the first wrong byte
        raise FrameError(f"message does not start with sync bytes 02 55 (got {got})")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """The HELLO payload: who the device is.

    ``imei`` and ``iccid`` are the NUL-terminated ASCII strings of the wire (15 and 20 digits
    on every device seen). ``extra`` holds bytes past the 49 known ones (2 on the 51-byte
    variant).
    """

    serial: int
    imei: str
    iccid: str
    product_id: int
    hardware_revision: int
    firmware_major: int
    firmware_minor: int
    flags: int = 0
    extra: bytes = b""

    @property
    def firmware(self) -> str:
        return f"{self.firmware_major}.{self.firmware_minor}"

    @property
    def product(self) -> str | None:
        """The product's name where known (:data:`PRODUCT_NAMES`)."""
        return PRODUCT_NAMES.get(self.product_id)


def _cstring(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace")


def decode_hello(payload: bytes) -> Hello:
    """Parse a HELLO payload of at least :data:`HELLO_SIZE` bytes (the caller checks)."""
    serial, imei, iccid, product, hardware, major, minor, flags = _HELLO.unpack_from(payload)
    return Hello(
        serial=serial,
        imei=_cstring(imei),
        iccid=_cstring(iccid),
        product_id=product,
        hardware_revision=hardware,
        firmware_major=major,
        firmware_minor=minor,
        flags=flags,
        extra=payload[HELLO_SIZE:],
    )


def encode_hello(hello: Hello) -> bytes:
    """The HELLO message of ``hello``."""
    payload = _HELLO.pack(
        hello.serial,
        hello.imei.encode("ascii"),
        hello.iccid.encode("ascii"),
        hello.product_id,
        hello.hardware_revision,
        hello.firmware_major,
        hello.firmware_minor,
        hello.flags,
    )
    return encode(MessageType.HELLO, payload + hello.extra)

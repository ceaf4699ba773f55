"""Wire constants and framing of the camera file-transfer protocol.

Every command is ``cmd u16 | len u16 | data[len]``, big-endian, with three exceptions that real
peers send: the device's INIT is 16 bytes with no length field, and servers send REPEAT INIT
(``0009``) and sometimes CLOSE (``0000``) as two bare bytes. Each direction has its own reader,
because the same command id frames differently in each.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "DATA_CHUNK",
    "MAX_METADATA",
    "MAX_PATH",
    "CommandId",
    "DeviceFrameReader",
    "Frame",
    "FrameError",
    "ServerFrameReader",
    "encode",
    "packet_count",
]

#: File data per DATA packet (DualCam packet offsets count these).
DATA_CHUNK = 1024
#: Longest device file path we accept (0x000D) or echo (0x0008).
MAX_PATH = 512
#: Longest metadata payload (0x000B); JSON metadata of protocol 6 is well under this.
MAX_METADATA = 1024

_HEADER = struct.Struct(">HH")


def packet_count(size: int) -> int:
    """DATA packets a file of ``size`` bytes takes: what a DualCam START announces."""
    return -(-size // DATA_CHUNK)


_U16 = struct.Struct(">H")


class CommandId(IntEnum):
    """Command ids. Device->server and server->device share one number space."""

    #: Device INIT (16 bytes, no length); sent by the server, the same id means CLOSE SESSION.
    INIT = 0x0000
    #: Device: START file transfer (u32 packets or bytes, u16 blank or file CRC).
    START = 0x0001
    #: Server: RESUME from u32 offset (1-based packet index for DualCam, bytes for path files).
    RESUME = 0x0002
    #: Device: SYNC, data from u32 offset follows.
    SYNC = 0x0003
    #: Device: DATA, file bytes then u16 chained CRC.
    DATA = 0x0004
    #: Both: FILE TRANSFER STATUS, u32.
    STATUS = 0x0005
    #: Server: FILE REQUEST, a DualCam identifier or an echoed path.
    FILE_REQUEST = 0x0008
    #: Server: REPEAT INIT, "send your init again" (two bare bytes).
    REPEAT_INIT = 0x0009
    #: Server: QUERY FILE METADATA (DualCam identifier or empty).
    METADATA_REQUEST = 0x000A
    #: Device: FILE METADATA RESPONSE.
    METADATA = 0x000B
    #: Server: FILE PATH REQUEST (``000C 0002 0000``).
    PATH_REQUEST = 0x000C
    #: Device: FILE PATH RESPONSE, path bytes as the device keeps them (maybe NUL-terminated).
    PATH = 0x000D
    #: Device, protocol 6 only: DATA with an explicit u32 byte offset.
    ENHANCED_DATA = 0x000E

    def label(self) -> str:
        return f"{self.name}(0x{self.value:04X})"


CLOSE = CommandId.INIT


@dataclass(frozen=True, slots=True)
class Frame:
    """One command off the wire: its id and the bytes after the header."""

    command: CommandId
    payload: bytes


class FrameError(Exception):
    """Framing failure; the connection adds its state and raises RemoteProtocolError."""


def encode(command: CommandId, payload: bytes = b"") -> bytes:
    """Serialise one command with its length field."""
    return _HEADER.pack(command, len(payload)) + payload


def _command(raw: int, allowed: frozenset[CommandId], direction: str) -> CommandId:
    try:
        command = CommandId(raw)
    except ValueError:
        raise FrameError(f"unknown command id 0x{raw:04X} from the {direction}") from None
    if command not in allowed:
        raise FrameError(f"{command.label()} is not a command the {direction} sends")
    return command


class _Reader:
    """Receive buffer with a read position; compacts lazily to avoid quadratic copying."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def __len__(self) -> int:
        return len(self._buf) - self._pos

    def _u16(self, at: int) -> int:
        value: int = _U16.unpack_from(self._buf, self._pos + at)[0]
        return value

    def _length_framed(self, command: CommandId, bounds: tuple[int, int]) -> Frame | None:
        """A ``cmd | len | data`` frame, its length checked before any of the body is kept."""
        length = self._u16(2)
        low, high = bounds
        if not low <= length <= high:
            limit = f"exactly {low}" if low == high else f"{low}..{high}"
            raise FrameError(f"{command.label()} length {length}, allowed {limit}")
        if len(self) < 4 + length:
            return None
        return Frame(command, self._take(4 + length, 4))

    def _take(self, size: int, skip: int) -> bytes:
        start = self._pos + skip
        data = bytes(self._buf[start : self._pos + size])
        self._pos += size
        return data


# Device -> server: (min len, max len) of the data after the 4-byte header.
_DEVICE_LENGTHS: dict[CommandId, tuple[int, int]] = {
    CommandId.START: (6, 6),
    CommandId.SYNC: (4, 4),
    CommandId.DATA: (3, DATA_CHUNK + 2),
    CommandId.STATUS: (4, 4),
    CommandId.METADATA: (1, MAX_METADATA),
    CommandId.PATH: (1, MAX_PATH),
    CommandId.ENHANCED_DATA: (7, DATA_CHUNK + 6),
}
_DEVICE_COMMANDS = frozenset({CommandId.INIT, *_DEVICE_LENGTHS})
INIT_SIZE = 16


_DATA = int(CommandId.DATA)
_DATA_MAX = DATA_CHUNK + 2


class ServerFrameReader(_Reader):
    """Splits what a device sends into frames (the server's side of the wire)."""

    __slots__ = ()

    def next_data(self) -> tuple[bytes, int] | None:
        """The next frame if it is a whole, well-formed plain DATA packet: its data and CRC
        field (the hot path of a transfer, one packet per KiB). Otherwise None, and nothing is
        consumed: :meth:`next_frame` then takes it, or says what is wrong with it."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        command, length = _HEADER.unpack_from(buf, pos)
        end = pos + 4 + length
        if command != _DATA or not 3 <= length <= _DATA_MAX or len(buf) < end:
            return None
        self._pos = end
        return bytes(buf[pos + 4 : end - 2]), buf[end - 2] << 8 | buf[end - 1]

    def next_frame(self) -> Frame | None:
        """Return the next whole frame, or None if more bytes are needed."""
        available = len(self)
        if available < 4:
            return None
        command = _command(self._u16(0), _DEVICE_COMMANDS, "device")
        if command is CommandId.INIT:
            if available < INIT_SIZE:
                return None
            return Frame(command, self._take(INIT_SIZE, 2))
        return self._length_framed(command, _DEVICE_LENGTHS[command])


# Server -> device.
_SERVER_LENGTHS: dict[CommandId, tuple[int, int]] = {
    CommandId.RESUME: (4, 4),
    CommandId.STATUS: (4, 4),
    CommandId.FILE_REQUEST: (1, MAX_PATH),
    CommandId.METADATA_REQUEST: (0, MAX_PATH),
    CommandId.PATH_REQUEST: (2, 2),
}
_SERVER_COMMANDS = frozenset({CLOSE, CommandId.REPEAT_INIT, *_SERVER_LENGTHS})


class DeviceFrameReader(_Reader):
    """Splits what a server sends into frames (the device's side of the wire).

    CLOSE and REPEAT INIT come as ``0000 0000`` / ``0009 0000`` from some servers and as the bare
    two bytes ``0000`` / ``0009`` from others (Teltonika's test server, Traccar). ``0009`` is
    taken as soon as its two bytes are in. A ``0000`` right behind it is its length, unless the
    next two bytes are ``0000`` too: then it starts a CLOSE (``0000 0000``, or the length plus
    a bare ``0000``: CLOSE either way). Until those two bytes arrive the ``0000`` waits; at EOF
    it is taken as the length, as if ``0009 0000`` had come in one read. Decisions depend only
    on the bytes, never on how they were split into reads.
    """

    __slots__ = ("_after_repeat",)

    def __init__(self) -> None:
        super().__init__()
        self._after_repeat = False

    def next_frame(self, eof: bool = False) -> Frame | None:
        """Return the next whole frame, or None; at ``eof`` a bare ``0000`` counts as CLOSE."""
        available = len(self)
        if self._after_repeat and available >= 2:
            if self._u16(0) != 0:
                self._after_repeat = False
            elif available < 4 and not eof:
                return None  # ``0000``: the length of the ``0009``, or a CLOSE; what follows tells
            else:
                self._after_repeat = False
                if available < 4 or self._u16(2) != 0:
                    self._pos += 2  # the length of the ``0009``
                    available -= 2
        if available < 2:
            return None
        command = _command(self._u16(0), _SERVER_COMMANDS, "server")
        if command is CommandId.REPEAT_INIT:
            self._after_repeat = True
            return Frame(command, self._take(2, 2))
        if command is CLOSE:
            if available < 4:
                return Frame(command, self._take(2, 2)) if eof else None
            size = 4 if self._u16(2) == 0 else 2
            return Frame(command, self._take(size, size))
        if available < 4:
            return None
        return self._length_framed(command, _SERVER_LENGTHS[command])

"""Device role: a camera uploading files, as the simulator and the tests drive it.

A :class:`CameraDevice` outlives connections: it keeps the files still to upload and drops one
only when the server confirms it (REPEAT INIT after the whole file). Each TCP connection gets a
:class:`DeviceConnection` from :meth:`CameraDevice.connect`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum

from ._crc import crc16
from ._wire import (
    CLOSE,
    DATA_CHUNK,
    CommandId,
    DeviceFrameReader,
    FrameError,
    encode,
    packet_count,
)
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    CloseRequested,
    Event,
    FileAccepted,
    FileRequested,
    MetadataRequested,
    PathRequested,
    ResumeRequested,
    StatusReceived,
)
from .files import PATH_FILE_READY_BIT, CameraFile

__all__ = ["CameraDevice", "DeviceConnection", "DeviceFile", "DeviceState"]

_INIT = struct.Struct(">HHQI")
_START = struct.Struct(">IH")
_U32 = struct.Struct(">I")
#: FILE TRANSFER STATUS "file not available" (camproto.DeviceStatus.FILE_NOT_AVAILABLE).
FILE_NOT_AVAILABLE = 0x11
#: FILE PATH RESPONSE of a device with no file: ``000D 0001 00``.
NO_PATH = b"\x00"
#: Settings bits 30 and 10 are set in every DualCam INIT captured; their meaning is unknown.
OBSERVED_EXTRA_SETTINGS = 1 << 30 | 1 << 10


@dataclass(frozen=True, slots=True)
class DeviceFile:
    """A file on the camera: what it is, its bytes, and its 0x000B metadata payload."""

    file: CameraFile
    data: bytes
    metadata: bytes

    @property
    def packets(self) -> int:
        return packet_count(len(self.data))


@dataclass(slots=True)
class CameraDevice:
    """A camera and the files it still has to upload.

    ``bad_crc_packets`` holds 1-based packet numbers (within a file) whose CRC is sent wrong,
    each once. ``restart_crc_after_resume`` makes the first DATA after a RESUME start its CRC
    chain at 0 (Teltonika's current test server expects that); otherwise the chain continues.

    Failing the way real cameras do: a file with no data answers START 0 (and is dropped on the
    REPEAT INIT that follows); a file in ``stuck`` answers START 0 every time and stays offered;
    a file in ``gone`` (announced, but no longer there) and any file the device does not know
    answer STATUS 0x11;
    ``metadata_status`` and ``request_status`` answer a METADATA or FILE REQUEST of a file with
    that STATUS instead; ``empty_paths`` PATH REQUESTs are answered ``000D 0001 00`` (bit 25
    set, no file), as is any PATH REQUEST when no path file is left.
    """

    imei: int
    files: list[DeviceFile]
    protocol: int = 5
    extra_settings: int = OBSERVED_EXTRA_SETTINGS
    restart_crc_after_resume: bool = True
    bad_crc_packets: set[int] = field(default_factory=set)
    uploaded: list[DeviceFile] = field(default_factory=list)
    gone: set[bytes] = field(default_factory=set)
    stuck: set[bytes] = field(default_factory=set)
    metadata_status: dict[bytes, int] = field(default_factory=dict)
    request_status: dict[bytes, int] = field(default_factory=dict)
    empty_paths: int = 0

    def settings(self) -> int:
        settings = self.extra_settings
        if self.empty_paths:
            settings |= 1 << PATH_FILE_READY_BIT
        for item in self.files:
            if item.file.slot is not None:
                settings |= 1 << item.file.slot.value
            else:
                settings |= 1 << PATH_FILE_READY_BIT
        return settings

    @property
    def pending(self) -> list[DeviceFile]:
        """The files still to upload that can be: not stuck empty, not gone."""
        blocked = self.gone | self.stuck
        return [f for f in self.files if f.file.identifier not in blocked]

    def init_packet(self) -> bytes:
        return _INIT.pack(0, self.protocol, self.imei, self.settings())

    def connect(self) -> DeviceConnection:
        """A new connection; its INIT is already queued in ``data_to_send()``."""
        return DeviceConnection(self)

    def find(self, identifier: bytes) -> DeviceFile | None:
        return next((f for f in self.files if f.file.identifier == identifier), None)


class DeviceState(Enum):
    IDLE = "idle"  # INIT sent, waiting for the server
    SENDING = "sending"
    CLOSED = "closed"


class DeviceConnection:
    """One connection of a camera, device side."""

    def __init__(self, device: CameraDevice) -> None:
        self.device = device
        self.state = DeviceState.IDLE
        self._reader = DeviceFrameReader()
        self._out = bytearray(device.init_packet())
        self._current: DeviceFile | None = None  # the file of the last FILE REQUEST
        self._path_sent: DeviceFile | None = None
        self._position = 0  # next byte to send
        self._chain = 0
        self.packets_sent = 0  # DATA packets sent on this connection

    @property
    def closed(self) -> bool:
        return self.state is DeviceState.CLOSED

    @property
    def current(self) -> DeviceFile | None:
        return self._current

    @property
    def all_sent(self) -> bool:
        current = self._current
        return current is not None and self._position >= len(current.data)

    def receive_data(self, data: bytes, eof: bool = False) -> list[Event]:
        """Feed bytes from the server. Raises RemoteProtocolError if the server misbehaves."""
        if self.state is DeviceState.CLOSED:
            return []
        self._reader.feed(data)
        events: list[Event] = []
        try:
            while not self.closed and (frame := self._reader.next_frame(eof)):
                self._handle(frame.command, frame.payload, events)
        except FrameError as exc:
            self.state = DeviceState.CLOSED
            raise RemoteProtocolError(str(exc), events) from None
        except RemoteProtocolError as exc:
            self.state = DeviceState.CLOSED
            raise RemoteProtocolError(str(exc), events) from None
        return events

    def data_to_send(self, limit: int = 64 * 1024, max_packets: int | None = None) -> bytes:
        """Queued commands, then DATA packets of the current file up to ``limit`` bytes.

        ``max_packets`` caps the DATA packets this connection sends in all (a disconnect
        fault: the simulator stops there and drops the connection).
        """
        out = self._out
        current = self._current
        if self.state is DeviceState.SENDING and current is not None:
            data = current.data
            while self._position < len(data) and len(out) < limit:
                if max_packets is not None and self.packets_sent >= max_packets:
                    break
                self._append_packet(out, data)
        self._out = bytearray()
        return bytes(out)

    def _append_packet(self, out: bytearray, data: bytes) -> None:
        start = self._position
        chunk = data[start : start + DATA_CHUNK]
        crc = crc16(chunk, self._chain)
        self._chain = crc
        number = start // DATA_CHUNK + 1
        if number in self.device.bad_crc_packets:
            self.device.bad_crc_packets.discard(number)
            crc ^= 0xFFFF
        out += encode(CommandId.DATA, chunk + crc.to_bytes(2, "big"))
        self._position = start + len(chunk)
        self.packets_sent += 1

    def _handle(self, command: CommandId, payload: bytes, events: list[Event]) -> None:
        device = self.device
        if command is CLOSE:
            events.append(CloseRequested())
            self.state = DeviceState.CLOSED
        elif command is CommandId.PATH_REQUEST:
            item = next((f for f in device.files if f.file.by_path), None)
            events.append(PathRequested())
            self._path_sent = item
            if device.empty_paths or item is None:
                device.empty_paths = max(device.empty_paths - 1, 0)
                self._path_sent = None
                self._out += encode(CommandId.PATH, NO_PATH)  # "<file path, or \0>"
            else:
                self._out += encode(CommandId.PATH, item.file.identifier)
        elif command is CommandId.METADATA_REQUEST:
            item = self._path_sent if not payload else device.find(payload)
            if item is None and not payload:
                raise RemoteProtocolError("server asked metadata with no file named or offered")
            file = item.file if item is not None else CameraFile.from_identifier(payload)
            events.append(MetadataRequested(file=file))
            code = device.metadata_status.get(file.identifier)
            if item is None or file.identifier in device.gone:
                code = FILE_NOT_AVAILABLE
            if code is not None:
                self._out += encode(CommandId.STATUS, _U32.pack(code))
            else:
                assert item is not None
                self._out += encode(CommandId.METADATA, item.metadata)
        elif command is CommandId.FILE_REQUEST:
            self._on_file_request(payload, events)
        elif command is CommandId.RESUME:
            self._on_resume(_U32.unpack(payload)[0], events)
        elif command is CommandId.REPEAT_INIT:
            current = self._current
            if current is not None and self.all_sent and current in device.files:
                device.files.remove(current)
                device.uploaded.append(current)
                events.append(FileAccepted(file=current.file))
            self._current, self.state = None, DeviceState.IDLE
            self._out += device.init_packet()
        else:  # STATUS; the reader admits no other command
            status = _U32.unpack(payload)[0]
            events.append(StatusReceived(status=status))
            if status == 0:  # "nothing to download" (the C++ reference server): hang up
                self.state = DeviceState.CLOSED

    def _on_file_request(self, identifier: bytes, events: list[Event]) -> None:
        item = self.device.find(identifier)
        file = item.file if item is not None else CameraFile.from_identifier(identifier)
        events.append(FileRequested(file=file))
        self._current, self.state = item, DeviceState.IDLE
        self._position = 0  # nothing of this file sent yet (all_sent must not see the last file's)
        code = self.device.request_status.get(file.identifier)
        if item is None or file.identifier in self.device.gone:
            code = FILE_NOT_AVAILABLE  # a file it no longer has
        if code is not None or item is None:
            self._current = None
            self._out += encode(
                CommandId.STATUS, _U32.pack(FILE_NOT_AVAILABLE if code is None else code)
            )
        elif not item.data or file.identifier in self.device.stuck:
            self._current = None if item.data else item  # a stuck file stays on the device
            self._out += encode(CommandId.START, _START.pack(0, 0))  # nothing left to send
        elif item.file.by_path:
            self._out += encode(CommandId.START, _START.pack(len(item.data), crc16(item.data)))
        else:
            self._out += encode(CommandId.START, _START.pack(item.packets, 0))

    def _on_resume(self, wire: int, events: list[Event]) -> None:
        current = self._current
        if current is None:
            raise RemoteProtocolError("server sent RESUME with no file requested")
        offset = wire if current.file.by_path else (max(wire, 1) - 1) * DATA_CHUNK
        if offset > len(current.data):
            raise RemoteProtocolError(f"RESUME offset {offset} past the end of {current.file}")
        events.append(ResumeRequested(file=current.file, offset=offset))
        self._position = offset
        if self.device.restart_crc_after_resume:
            self._chain = 0
        else:
            self._chain = crc16(current.data[:offset])
        self._out += encode(CommandId.SYNC, _U32.pack(wire))
        self.state = DeviceState.SENDING

    def close(self) -> None:
        if self.state is DeviceState.CLOSED:
            raise LocalProtocolError("connection already closed")
        self.state = DeviceState.CLOSED

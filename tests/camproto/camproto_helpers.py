"""Shared helpers of the camproto tests: frame-reader checks, a device<->server pair in memory.

``tr_server`` / ``tr_device`` follow h11's ``tr()``: every vector is parsed whole, one byte at a
time (nothing until its last byte) and with trailing data (left untouched, parsed next).
:class:`DevicePair` wires a :class:`CameraDevice` connection to a :class:`ServerConnection`
through two in-memory "wires" whose :data:`Transform` decides how the writes of one side are
cut into the reads of the other (whole, merged, one byte at a time, random cuts).
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from camproto import (
    CameraDevice,
    CameraFile,
    ChunkReceived,
    CommandId,
    DefaultPolicy,
    DelegatingPolicy,
    DeviceConnection,
    DeviceFile,
    DsmMetadata,
    DualCamMetadata,
    DualCamSlot,
    Event,
    RemoteProtocolError,
    ResumePoint,
    ServerConfig,
    ServerConnection,
    ServerPolicy,
    ServerState,
    SessionClosed,
    SessionInfo,
    TransferComplete,
    TransferInfo,
    crc16,
)
from camproto._wire import DeviceFrameReader, Frame, ServerFrameReader

E = TypeVar("E", bound=Event)

# --- identities and files ---------------------------------------------------------------------

#: IMEI of the community capture (``00013ee13c001981``).
COMMUNITY_IMEI = 350612071913857
#: IMEI of Traccar's DualCam test (``0001403a4abaa314``).
TRACCAR_IMEI = 352094082736916
DSM_PATH = b"dsm/picture/231020/231452.jpg\x00"
ADAS_PATH = b"mdas9/video/231020/231452.mp4"

_INIT = struct.Struct(">HHQI")


def init_bytes(imei: int = COMMUNITY_IMEI, settings: int = 0x44000400, protocol: int = 5) -> bytes:
    """A device INIT packet (16 bytes, no length field)."""
    return _INIT.pack(0, protocol, imei, settings)


def frame(command: int, payload: bytes = b"") -> bytes:
    """``cmd u16 | len u16 | payload`` for any command number, valid or not."""
    return struct.pack(">HH", command, len(payload)) + payload


def data_frame(chunk: bytes, init: int = 0) -> bytes:
    """A DATA packet whose CRC is ``crc16(chunk, init)``."""
    return frame(0x0004, chunk + crc16(chunk, init).to_bytes(2, "big"))


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def payload_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random file contents."""
    return random.Random(seed).randbytes(size)


DUALCAM_META = DualCamMetadata(
    version=1,
    file_type=4,
    timestamp_ms=1_700_000_000_123,
    trigger=1,
    duration_s=0,
    framerate=25,
    timezone_min=120,
    latitude=54.687157,
    longitude=25.279652,
)
DSM_META = DsmMetadata(
    timestamp_ms=1_700_000_000_000,
    file_type=1,
    trigger=13,
    latitude=54.6,
    longitude=-25.2,
    events=("drowsiness", "phone"),
    driver_name="JONAS",
)


def slot_file(slot: DualCamSlot, data: bytes, metadata: bytes | None = None) -> DeviceFile:
    meta = DUALCAM_META.encode() if metadata is None else metadata
    return DeviceFile(CameraFile.for_slot(slot), data, meta)


def path_file(path: bytes, data: bytes, metadata: bytes | None = None) -> DeviceFile:
    meta = DSM_META.encode() if metadata is None else metadata
    return DeviceFile(CameraFile.for_path(path), data, meta)


# --- frame readers (h11's tr()) ----------------------------------------------------------------

#: A valid frame in each direction, used as trailing data.
SERVER_TRAILER = (b"\x00\x05\x00\x04\x00\x00\x00\x07", Frame(CommandId.STATUS, u32(7)))
DEVICE_TRAILER = SERVER_TRAILER


def tr_server(data: bytes, expected: Frame) -> None:
    """Parse a device->server vector whole, byte by byte, and with trailing data."""
    reader = ServerFrameReader()
    reader.feed(data)
    assert reader.next_frame() == expected
    assert reader.next_frame() is None
    assert len(reader) == 0

    reader = ServerFrameReader()
    for i in range(len(data) - 1):
        reader.feed(data[i : i + 1])
        assert reader.next_frame() is None, f"frame before byte {i + 1} of {len(data)}"
    reader.feed(data[-1:])
    assert reader.next_frame() == expected
    assert len(reader) == 0

    trailer, trailer_frame = SERVER_TRAILER
    reader = ServerFrameReader()
    reader.feed(data + trailer)
    assert reader.next_frame() == expected
    assert len(reader) == len(trailer)
    assert reader.next_frame() == trailer_frame
    assert len(reader) == 0


def tr_device(data: bytes, expected: Frame, *, eof: bool = False) -> None:
    """Parse a server->device vector whole, byte by byte, and with trailing data.

    With ``eof`` the vector only completes at end of stream (a bare ``0000`` CLOSE): it is
    then fed with ``eof=True`` on its last read, and the trailing-data case is skipped.
    """
    reader = DeviceFrameReader()
    reader.feed(data)
    assert reader.next_frame(eof) == expected
    assert reader.next_frame(eof) is None
    assert len(reader) == 0

    reader = DeviceFrameReader()
    for i in range(len(data) - 1):
        reader.feed(data[i : i + 1])
        assert reader.next_frame() is None, f"frame before byte {i + 1} of {len(data)}"
    reader.feed(data[-1:])
    assert reader.next_frame(eof) == expected
    assert len(reader) == 0

    if eof:
        return
    trailer, trailer_frame = DEVICE_TRAILER
    reader = DeviceFrameReader()
    reader.feed(data + trailer)
    assert reader.next_frame() == expected
    assert len(reader) == len(trailer)
    assert reader.next_frame() == trailer_frame
    assert len(reader) == 0


# --- a server driven to a state ---------------------------------------------------------------

PHOTOF_INIT = init_bytes(settings=0x44000400)
DSM_INIT = init_bytes(settings=1 << 25)


def start_frame(value: int, crc: int = 0) -> bytes:
    return frame(0x0001, u32(value) + crc.to_bytes(2, "big"))


def sync_frame(offset: int) -> bytes:
    return frame(0x0003, u32(offset))


def drive(
    state: ServerState,
    *,
    path: bool = False,
    size: int = 3000,
    policy: ServerPolicy | None = None,
    config: ServerConfig | None = None,
    more: bool = False,
) -> ServerConnection | None:
    """A server driven to ``state`` by a valid device (a DualCam photo, or a DSM file by path,
    of ``size`` bytes), or None if ``policy`` never leads there. With ``more`` the INIT also
    offers a rear video (fetched first by the default policy, with the same bytes).

    CLOSED is reached by ``close()``, ERROR by an unknown command id. The connection opened at
    time 0, so INIT, like every answer, has a deadline.
    """
    server = ServerConnection(policy or DefaultPolicy(), config or ServerConfig(), opened=0.0)
    if state is ServerState.CLOSED:
        server.close("test")
        server.data_to_send()
        return server
    if state is ServerState.ERROR:
        with contextlib.suppress(RemoteProtocolError):
            server.receive_data(b"\xff\xff\x00\x00", 0.0)
        return server
    data = payload_bytes(size)
    packets = -(-size // 1024)
    next_wire = {
        ServerState.AWAIT_INIT: init_bytes(
            settings=(1 << 25 if path else 0x44000400) | (1 << 29 if more else 0)
        ),
        ServerState.AWAIT_PATH: frame(0x000D, DSM_PATH),
        ServerState.AWAIT_METADATA: frame(0x000B, bytes(26 if path else 32)),
        ServerState.AWAIT_START: start_frame(size, crc16(data)) if path else start_frame(packets),
        ServerState.AWAIT_SYNC: sync_frame(0 if path else 1),
        ServerState.RECEIVING: b"".join(
            data_frame(data[k : k + 1024], crc16(data[:k])) for k in range(0, size, 1024)
        ),
    }
    for _ in range(len(next_wire) + 1):
        if server.state is state:
            server.data_to_send()
            return server
        wire = next_wire.get(server.state)
        if wire is None:  # CLOSED or AWAIT_CONFIRM: past the state asked for
            return None
        server.receive_data(wire, 0.0)
    return None  # going round in circles (an empty file: START 0, INIT again)


def server_in(
    state: ServerState, *, path: bool | None = None, size: int = 3000
) -> ServerConnection:
    """:func:`drive` with the default policy; ``path`` defaults to what ``state`` needs."""
    if path is None or state is ServerState.AWAIT_PATH:
        path = state is ServerState.AWAIT_PATH or bool(path)
    server = drive(state, path=path, size=size)
    assert server is not None, state
    return server


# --- wires ------------------------------------------------------------------------------------

#: How the writes of one side become the reads of the other.
Transform = Callable[[list[bytes]], list[bytes]]


def whole(writes: list[bytes]) -> list[bytes]:
    """Each write arrives as one read."""
    return list(writes)


def merged(writes: list[bytes]) -> list[bytes]:
    """All writes of a step arrive in one read."""
    joined = b"".join(writes)
    return [joined] if joined else []


def bytewise(writes: list[bytes]) -> list[bytes]:
    """Every byte arrives in its own read."""
    joined = b"".join(writes)
    return [joined[i : i + 1] for i in range(len(joined))]


def random_cuts(rng: random.Random, max_read: int = 3000) -> Transform:
    """Writes joined, then cut into reads of random sizes 1..``max_read``."""

    def transform(writes: list[bytes]) -> list[bytes]:
        joined = b"".join(writes)
        reads = []
        pos = 0
        while pos < len(joined):
            size = rng.randint(1, max_read)
            reads.append(joined[pos : pos + size])
            pos += size
        return reads

    return transform


# --- the server's durable store and a policy that resumes from it -----------------------------


@dataclass
class Store:
    """What an ingestor keeps: partial files by identifier, and completed files in order."""

    partial: dict[bytes, bytearray] = field(default_factory=dict)
    completed: list[tuple[CameraFile, bytes]] = field(default_factory=list)

    def on_chunk(self, event: ChunkReceived) -> None:
        buf = self.partial.setdefault(event.file.identifier, bytearray())
        assert event.offset <= len(buf), (event.offset, len(buf))
        del buf[event.offset :]
        buf += event.data
        assert crc16(buf) == event.file_crc

    def on_complete(self, event: TransferComplete) -> None:
        data = bytes(self.partial.pop(event.file.identifier))
        assert len(data) == event.size
        assert crc16(data) == event.file_crc
        self.completed.append((event.file, data))

    def files(self) -> dict[bytes, bytes]:
        return {file.identifier: data for file, data in self.completed}


@dataclass
class StorePolicy(DelegatingPolicy):
    """:class:`DefaultPolicy` decisions, resuming each file from what the store holds."""

    store: Store
    base: ServerPolicy = field(default_factory=DefaultPolicy)
    #: Every TransferInfo the server asked about.
    asked: list[TransferInfo] = field(default_factory=list)

    def resume_point(self, session: SessionInfo, transfer: TransferInfo) -> ResumePoint:
        self.asked.append(transfer)
        kept = self.store.partial.get(transfer.file.identifier)
        if not kept:
            return ResumePoint()
        return ResumePoint(len(kept), crc16(kept))


# --- the pair ---------------------------------------------------------------------------------


@dataclass
class DevicePair:
    """One connection of ``device`` to ``server``, both in memory.

    Each :meth:`step` takes ``writes_per_step`` writes from the device (each at most
    ``write_limit`` bytes; ``write_limit=1`` makes every write one command or DATA packet),
    cuts them with ``up`` into reads for the server, then does the same for the server's output
    with ``down``. Server events go to ``server_events`` (chunks and completions also to
    ``store``); with ``auto_confirm`` every TransferComplete is confirmed at once.
    """

    device: CameraDevice
    server: ServerConnection = field(default_factory=ServerConnection)
    store: Store = field(default_factory=Store)
    up: Transform = whole
    down: Transform = whole
    auto_confirm: bool = True
    max_packets: int | None = None
    write_limit: int = 64 * 1024
    writes_per_step: int = 1
    now: float = 0.0
    conn: DeviceConnection = field(init=False)
    server_events: list[Event] = field(default_factory=list)
    device_events: list[Event] = field(default_factory=list)
    #: Every byte the device wrote, and each write of the server.
    sent_up: bytearray = field(default_factory=bytearray)
    sent_down: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.conn = self.device.connect()

    def _server_receive(self, data: bytes) -> None:
        for event in self.server.receive_data(data, self.now):
            self.server_events.append(event)
            if isinstance(event, ChunkReceived):
                self.store.on_chunk(event)
            elif isinstance(event, TransferComplete):
                self.store.on_complete(event)
                if self.auto_confirm:
                    self.server.confirm_file()

    def step(self) -> bool:
        """Move what is pending both ways once; return whether any byte moved."""
        writes = []
        for _ in range(self.writes_per_step):
            out = self.conn.data_to_send(self.write_limit, self.max_packets)
            if not out:
                break
            writes.append(out)
            self.sent_up += out
        for read in self.up(writes):
            self._server_receive(read)
        back = self.server.data_to_send()
        if back:
            self.sent_down.append(back)
            for read in self.down([back]):
                self.device_events.extend(self.conn.receive_data(read))
        return bool(writes or back)

    def run(self, max_steps: int = 100_000) -> DevicePair:
        """Step until nothing moves."""
        for _ in range(max_steps):
            if not self.step():
                return self
        raise AssertionError("pair did not settle")

    def disconnect(self) -> list[Event]:
        """The device drops the connection: the server sees EOF."""
        events = self.server.receive_eof()
        self.server_events.extend(events)
        return events

    @property
    def server_closed(self) -> bool:
        return self.server.state is ServerState.CLOSED

    def events_of(self, kind: type[E]) -> list[E]:
        return [event for event in self.server_events if isinstance(event, kind)]

    def closed_event(self) -> SessionClosed:
        closed = [e for e in self.server_events if isinstance(e, SessionClosed)]
        assert len(closed) == 1, closed
        return closed[0]


def server_kinds(events: Sequence[Event]) -> list[str]:
    """Event class names, for compact sequence assertions."""
    return [type(event).__name__ for event in events]

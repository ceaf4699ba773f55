"""Shared helpers of the dmtproto tests: byte builders, the three-ways reader check, a
device<->server pair in memory.

``tr`` follows h11's ``tr()``: every message is parsed whole, one byte at a time (nothing until
its last byte) and with trailing data (left untouched, parsed next). ``server_three_ways`` does
the same for a whole conversation fed to a ServerConnection: the events and replies must not
depend on how the bytes were cut.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

from hypothesis import strategies as st

from dmtproto import (
    Analogue16,
    Analogue16Field,
    Analogue32,
    Analogue32Field,
    CommitRequested,
    DebugField,
    DeviceConnection,
    DigitalField,
    DmtDevice,
    DriverIdField,
    Event,
    Field,
    GpsField,
    Hello,
    OdometerField,
    RawField,
    Record,
    ServerConfig,
    ServerConnection,
    ServerState,
    SessionClosed,
    TripField,
    TripTypeField,
    encode,
    pack_fixed_time,
)
from dmtproto._wire import Frame, FrameReader

E = TypeVar("E", bound=Event)
h = bytes.fromhex

#: 2026-11-30T00:00:00Z, the wall clock of the tests.
UNIX = 1_795_996_800.0
#: The same instant on the wire (seconds since 2013-01-01).
DM_NOW = int(UNIX) - 1_356_998_400

# --- the captures of tests/dmtproto/vectors/dmt_binary.txt -----------------------------------

VECTOR_DATA = h(
    "0255047a003d0035020000fbb53a0f030015fbb53a0f3c210e2145deeb051e001a0901940c0703020803000000"
    "00000300060f011d1003400804180005e80f062e1c3d003602000086b93a0f03001586b93a0fe5421c21bbe1be"
    "051700c30901a50d070302080300000000000300060f011d1003bb0804180005e80f062e1c"
)
VECTOR_HELLO = h(
    "025500310038f90100333533333233303831363639373330003839363130313835303031383234383434363330"
    "002202010900000000"
)
VECTOR_ASYNC = h("0255220000")
COMMIT = h("0255050000")
COMMIT_REPLY = h("025506010001")
ASYNC_COMPLETE = h("0255230000")
VERSION_REPLY = h("0255150c00" + "00" * 12)

HELLO = Hello(
    serial=129336,
    imei="353323081669730",
    iccid="89610185001824844630",
    product_id=34,
    hardware_revision=2,
    firmware_major=1,
    firmware_minor=9,
)

_HELLO_RESPONSE = struct.Struct("<II")


def hello_reply(time: int = DM_NOW, flags: int = 0) -> bytes:
    return encode(0x01, _HELLO_RESPONSE.pack(time, flags))


def record_bytes(sequence: int, time: int, reason: int, fields: bytes = b"") -> bytes:
    """One data record: length, sequence, time, log reason, then ``fields`` as given."""
    return struct.pack("<HIIB", 11 + len(fields), sequence, time, reason) + fields


def field_bytes(field_id: int, data: bytes) -> bytes:
    if len(data) < 255:
        return bytes([field_id, len(data)]) + data
    return bytes([field_id, 255]) + len(data).to_bytes(2, "little") + data


def data_message(*records: bytes) -> bytes:
    return encode(0x04, b"".join(records))


#: A fixed 64-byte record (0x10): index 4242, 2024-03-09T17:45:30Z, lon before lat.
FIXED = struct.pack(
    "<BIIiiHBhHBBBIH5hb3h8sHHH",
    1, 4242, pack_fixed_time(datetime(2024, 3, 9, 17, 45, 30, tzinfo=UTC)),
    99343941, -554574140, 2330, 148, -30, 7, 1, 11, 1, 0x81, 2,
    1, 2, 3, -4, 5, -12, 100, -200, 981, b"DEVICEID", 125, 0, 0xBEEF,
)  # fmt: skip


# --- framing ----------------------------------------------------------------------------------

TRAILER = encode(0x05)


def tr(data: bytes, expected: Frame, max_payload: int = 0xFFFF) -> None:
    """Parse one message whole, byte by byte, and with trailing data."""
    reader = FrameReader(max_payload)
    reader.feed(data)
    assert reader.next_frame() == expected
    assert reader.next_frame() is None
    assert len(reader) == 0

    reader = FrameReader(max_payload)
    for i in range(len(data) - 1):
        reader.feed(data[i : i + 1])
        assert reader.next_frame() is None, f"frame before byte {i + 1} of {len(data)}"
    reader.feed(data[-1:])
    assert reader.next_frame() == expected
    assert len(reader) == 0

    reader = FrameReader(max_payload)
    reader.feed(data + TRAILER)
    assert reader.next_frame() == expected
    assert len(reader) == len(TRAILER)
    assert reader.next_frame() == Frame(0x05, TRAILER)
    assert len(reader) == 0


# --- a server fed a conversation --------------------------------------------------------------


def new_server(config: ServerConfig | None = None, now: float = 0.0) -> ServerConnection:
    return ServerConnection(config, now=now, unix_time=UNIX + now)


@dataclass
class Fed:
    events: list[Event]
    replies: bytes
    server: ServerConnection


def feed(data: bytes, cuts: Sequence[int] | None = None, config: ServerConfig | None = None) -> Fed:
    """Feed ``data`` to a fresh server, in reads ending at ``cuts`` (default: one read)."""
    server = new_server(config)
    events: list[Event] = []
    replies = bytearray()
    start = 0
    for end in [*(cuts or ()), len(data)]:
        events += server.receive_data(data[start:end], 0.0)
        replies += server.data_to_send()
        start = end
    return Fed(events, bytes(replies), server)


def server_three_ways(data: bytes, config: ServerConfig | None = None) -> Fed:
    """Feed ``data`` whole, one byte at a time, and followed by a trailing partial message;
    assert all three give the same events and replies, and return the whole-read result."""
    whole = feed(data, config=config)
    bytewise = feed(data, range(1, len(data)), config=config)
    assert bytewise.events == whole.events
    assert bytewise.replies == whole.replies
    trailing = new_server(config)
    events = trailing.receive_data(data + COMMIT[:3], 0.0)
    assert events == whole.events
    assert trailing.data_to_send() == whole.replies
    return whole


def kinds(events: Sequence[object]) -> list[str]:
    """Event class names, for compact sequence assertions."""
    return [type(event).__name__ for event in events]


def of(events: Sequence[object], kind: type[E]) -> list[E]:
    return [event for event in events if isinstance(event, kind)]


# --- the pair ---------------------------------------------------------------------------------

Transform = Callable[[bytes], list[bytes]]


def whole(data: bytes) -> list[bytes]:
    return [data] if data else []


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_cuts(rng: random.Random, max_read: int = 300) -> Transform:
    def transform(data: bytes) -> list[bytes]:
        reads, pos = [], 0
        while pos < len(data):
            size = rng.randint(1, max_read)
            reads.append(data[pos : pos + size])
            pos += size
        return reads

    return transform


def sample_device(records: int = 0, imei: str = HELLO.imei) -> DmtDevice:
    """A device holding ``records`` records (GPS, digital, analogues; reasons cycling)."""
    device = DmtDevice(replace(HELLO, imei=imei))
    for i in range(records):
        device.log(
            time=DM_NOW - 60 * (records - i),
            log_reason=i % 51,
            fields=(
                GpsField(
                    gps_time=DM_NOW - 60 * (records - i),
                    latitude_e7=-337000000 + i,
                    longitude_e7=1512000000 - i,
                    altitude_m=40,
                    speed_cm_s=1000 + i,
                    speed_accuracy=2,
                    heading_2deg=90,
                    pdop_tenths=11,
                    position_accuracy_m=4,
                    status=3,
                ),
                DigitalField(inputs=i & 1, outputs=0, status=3),
                Analogue16Field(values=(Analogue16(1, 4100), Analogue16(3, 2250))),
            ),
        )
    return device


@dataclass
class DevicePair:
    """One connection of ``device`` to a server, both in memory.

    Each :meth:`step` moves what the device wrote to the server (cut by ``up``) and what the
    server wrote back (cut by ``down``). With ``auto_commit`` every CommitRequested is answered
    at once (as a service does once Kafka acknowledged); else the test calls
    ``server.commit()``.
    """

    device: DmtDevice
    config: ServerConfig | None = None
    up: Transform = whole
    down: Transform = whole
    auto_commit: bool = True
    records_per_message: int = 16
    records_per_commit: int = 256
    now: float = 0.0
    server: ServerConnection = field(init=False)
    conn: DeviceConnection = field(init=False)
    server_events: list[Event] = field(default_factory=list)
    device_events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = new_server(self.config, self.now)
        self.conn = self.device.connect(
            records_per_message=self.records_per_message,
            records_per_commit=self.records_per_commit,
        )

    def step(self) -> bool:
        out = self.conn.data_to_send()
        for read in self.up(out):
            for event in self.server.receive_data(read, self.now):
                self.server_events.append(event)
                if isinstance(event, CommitRequested) and self.auto_commit:
                    self.server.commit()
        back = self.server.data_to_send()
        for read in self.down(back):
            self.device_events.extend(self.conn.receive_data(read))
        return bool(out or back)

    def run(self, max_steps: int = 100_000) -> DevicePair:
        for _ in range(max_steps):
            if not self.step():
                return self
        raise AssertionError("pair did not settle")

    def disconnect(self) -> list[Event]:
        events = self.server.receive_eof()
        self.server_events.extend(events)
        return events

    @property
    def server_closed(self) -> bool:
        return self.server.state is ServerState.CLOSED

    def events_of(self, kind: type[E]) -> list[E]:
        return of(self.server_events, kind)

    def closed_event(self) -> SessionClosed:
        closed = self.events_of(SessionClosed)
        assert len(closed) == 1, closed
        return closed[0]


# --- Hypothesis strategies ---------------------------------------------------------------

u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
i16, i32 = st.integers(-0x8000, 0x7FFF), st.integers(-(2**31), 2**31 - 1)
extra = st.binary(max_size=4)

fields: st.SearchStrategy[Field] = st.one_of(
    st.builds(
        GpsField, gps_time=u32, latitude_e7=i32, longitude_e7=i32, altitude_m=i16,
        speed_cm_s=u16, speed_accuracy=u8, heading_2deg=u8, pdop_tenths=u8,
        position_accuracy_m=u8, status=u8, extra=extra,
    ),
    st.builds(DebugField, code=u16, text=st.binary(max_size=300)),
    st.builds(DigitalField, inputs=u32, outputs=u16, status=u16, extra=extra),
    st.builds(DriverIdField, id_type=u8, data=st.binary(max_size=12)),
    st.builds(Analogue16Field, values=st.lists(st.builds(Analogue16, u8, u16)).map(tuple)),
    st.builds(Analogue32Field, values=st.lists(st.builds(Analogue32, u8, i32)).map(tuple)),
    st.builds(TripTypeField, trip_type=u8, trim=st.none()),
    st.builds(TripTypeField, trip_type=u8, trim=u8, extra=extra),
    st.builds(TripField, distance_m=u32, duration_s=u32, extra=extra),
    st.builds(OdometerField, odometer=u32, run_hours_s=u32, extra=extra),
    st.builds(
        RawField,
        field_id=st.integers(0, 255).filter(lambda i: i not in {0, 1, 2, 3, 6, 7, 15, 26, 27}),
        data=st.binary(max_size=300),
    ),
)  # fmt: skip


@st.composite
def records(draw: st.DrawFn) -> Record:
    return Record(
        sequence=draw(u32),
        time=draw(u32),
        log_reason=draw(u8),
        fields=tuple(draw(st.lists(fields, max_size=6))),
    )

"""What to forward, pure: the target of a ``tcp://`` URL, the records of the raw topic with
the HELLO each goes with, and the per-device runs a partition's batch splits into.

``fleetgate.dmt.raw.v1`` holds, keyed by IMEI, each session's HELLO (``fg-message-type`` 0)
and each record as a complete message; every record carries its session's HELLO in the
``fg-hello`` header. A record from before that header existed goes with the last HELLO the
worker saw for its device, if any.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from contracts.dmt import PROTOCOL, telemetry_record
from contracts.records import RawHeader, TelemetryRecord, record_id
from dmtproto import (
    HELLO_SIZE,
    DecodeError,
    FixedRecord,
    Hello,
    MessageType,
    Record,
    decode_hello,
    decode_message_records,
)

__all__ = ["DeviceRun", "Item", "Offsets", "Target", "Unusable", "read_item", "runs"]

_HEADER_SIZE = 5


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Target:
        """``tcp://host:port`` (the config has checked it)."""
        parsed = httpx.URL(url)
        if parsed.scheme != "tcp" or parsed.port is None:
            raise ValueError(f"not a tcp://host:port URL: {url!r}")
        return cls(parsed.host, parsed.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class Unusable(ValueError):
    """A raw-topic record that cannot be forwarded (the message says why)."""


@dataclass(frozen=True, slots=True)
class Item:
    """One record to forward and where it came from."""

    imei: str
    record: Record | FixedRecord
    #: The record's message as the raw topic holds it (what the server receives).
    message: bytes
    #: The HELLO message of the session that carried it, as the device sent it.
    hello: bytes
    record_id: str
    source: str
    offset: int = -1
    session_id: str = ""
    ingestor: str = ""
    received_at: datetime | None = None

    def telemetry(self) -> TelemetryRecord:
        """The ``fleetgate.records.v1`` value of the record (for a dead letter)."""
        return telemetry_record(
            self.record,
            hello_of(self.hello),
            session_id=self.session_id,
            ingestor=self.ingestor,
            received_at=self.received_at or datetime.now(UTC),
        )


def hello_of(message: bytes) -> Hello:
    """The HELLO in a whole HELLO message; Unusable if it is none."""
    if (
        len(message) < _HEADER_SIZE + HELLO_SIZE
        or message[:2] != b"\x02\x55"
        or message[2] != MessageType.HELLO
        or int.from_bytes(message[3:5], "little") != len(message) - _HEADER_SIZE
    ):
        raise Unusable(f"not a HELLO message: {message[:8].hex(' ')}...")
    return decode_hello(message[_HEADER_SIZE:])


def read_item(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    source: str,
    hellos: dict[str, bytes],
    offset: int = -1,
) -> Item | None:
    """The record of one raw-topic record; None for a HELLO (remembered in ``hellos``, per
    IMEI, for records without ``fg-hello``). Raises Unusable with the reason."""
    if not key or not value:
        raise Unusable("no key or no value")
    imei = key.decode("ascii", "replace")
    meta = {name: data for name, data in headers}
    kind = meta.get(RawHeader.MESSAGE_TYPE)
    if kind == b"0" or (kind is None and value[2:3] == b"\x00"):
        hello_of(value)
        hellos[imei] = value
        return None
    try:
        records = decode_message_records(value)
    except DecodeError as exc:
        raise Unusable(f"not a record message: {exc}") from None
    if len(records) != 1:
        raise Unusable(f"a message of {len(records)} records; the raw topic holds one each")
    (record,) = records
    if (text := meta.get(RawHeader.HELLO)) is not None:
        try:
            hello = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise Unusable("header fg-hello is not hex") from None
        hello_of(hello)
    elif (known := hellos.get(imei)) is not None:
        hello = known
    else:
        raise Unusable("no HELLO known for the device (no fg-hello header, none read before)")
    rid = meta.get(RawHeader.RECORD_ID)
    millis = meta.get(RawHeader.RECEIVED_AT)
    return Item(
        imei=imei,
        record=record,
        message=value,
        hello=hello,
        record_id=(
            rid.decode("ascii", "replace")
            if rid
            else record_id(PROTOCOL, imei, record.sequence, record.device_time)
        ),
        source=source,
        offset=offset,
        session_id=meta.get(RawHeader.SESSION, b"").decode("utf-8", "replace"),
        ingestor=meta.get(RawHeader.INGESTOR, b"").decode("utf-8", "replace"),
        received_at=(
            datetime.fromtimestamp(int(millis) / 1000, UTC) if millis and millis.isdigit() else None
        ),
    )


@dataclass(slots=True)
class DeviceRun:
    """Consecutive records of one device with the same HELLO: one forwarding session (and
    its retries). ``items`` shrinks as the server commits; ``offsets`` stays: the Kafka
    offsets the run finishes."""

    imei: str
    hello: bytes
    items: list[Item] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)


class Offsets:
    """One partition's offsets in hand, in order, and which are finished: what may be
    committed is everything before the oldest unfinished one. Devices finish out of order
    (one waits for a server that refuses it while the others go on), the commit never
    passes a record still in hand."""

    __slots__ = ("_done", "_open", "_order", "committable")

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._done: set[int] = set()
        self._open = 0
        #: The offset to commit (the next one after everything finished), None before any.
        self.committable: int | None = None

    def __len__(self) -> int:
        """Offsets in hand from the oldest unfinished one on (finished ones behind it too)."""
        return len(self._order)

    @property
    def open(self) -> int:
        """Offsets not finished."""
        return self._open

    def add(self, offsets: Iterable[int]) -> None:
        for offset in offsets:
            self._order.append(offset)
            self._open += 1

    def finish(self, offsets: Iterable[int]) -> None:
        for offset in offsets:
            self._done.add(offset)
            self._open -= 1
        order, done = self._order, self._done
        while order and order[0] in done:
            offset = order.popleft()
            done.discard(offset)
            self.committable = offset + 1


def runs(items: Sequence[Item]) -> dict[str, list[DeviceRun]]:
    """Per device, its runs in order. Devices are independent of each other; one device's
    runs go one after the other (a new HELLO, e.g. after a firmware update, starts a run)."""
    out: dict[str, list[DeviceRun]] = {}
    for item in items:
        device = out.setdefault(item.imei, [])
        if not device or device[-1].hello != item.hello:
            device.append(DeviceRun(item.imei, item.hello))
        device[-1].items.append(item)
        device[-1].offsets.append(item.offset)
    return out

"""The ingestor's view of the device registry: the newest status per IMEI by ``updated_at``,
whatever order the topic and this process's own publishing bring them in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.models import encode
from contracts.records import DeviceIdentity, DeviceStatus, LastConnection
from ingestor.registry import DeviceRegistry, RegistryBook
from ingestor.settings import IngestorSettings

IMEI = "352093081234567"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def status(seconds: float, firmware: str = "1.9", imei: str = IMEI) -> DeviceStatus:
    when = T0 + timedelta(seconds=seconds)
    return DeviceStatus(
        imei=imei, protocols=["dmt"], last_seen=when, firmware=firmware, updated_at=when
    )


def value(seconds: float, firmware: str = "1.9") -> bytes:
    return encode(status(seconds, firmware))


KEY = IMEI.encode()

#: (what arrives, in order: ("read", seconds, firmware) from the topic, ("put", ...) from a
#: session of this process, ("tombstone",)), the firmware known after, or None.
CASES = {
    "first read": ([("read", 10, "1.9")], "1.9"),
    "a newer read replaces": ([("read", 10, "1.9"), ("read", 20, "1.10")], "1.10"),
    "an older read, later, does not": ([("read", 20, "1.10"), ("read", 10, "1.9")], "1.10"),
    "the same status read back is no news": ([("read", 10, "1.9"), ("read", 10, "x")], "1.9"),
    "own status, then its read back and an older one": (
        [("put", 30, "2.0"), ("read", 30, "2.0"), ("read", 20, "1.10")], "2.0"
    ),
    "another ingestor's newer status over own": ([("put", 30, "2.0"), ("read", 40, "2.1")], "2.1"),
    "own status derived before a newer read keeps the read one": (
        [("read", 40, "2.1"), ("put", 30, "2.0")], "2.1"
    ),
    "a tombstone forgets": ([("read", 10, "1.9"), ("tombstone",)], None),
    "a status after a tombstone": (
        [("read", 10, "1.9"), ("tombstone",), ("read", 5, "1.8")], "1.8"
    ),
}  # fmt: skip


@pytest.mark.parametrize(("steps", "firmware"), CASES.values(), ids=CASES.keys())
def test_the_newest_status_stands(steps: list[tuple[object, ...]], firmware: str | None) -> None:
    book = RegistryBook()
    for step in steps:
        if step[0] == "read":
            book.offer(KEY, value(float(str(step[1])), str(step[2])))
        elif step[0] == "put":
            book.put(status(float(str(step[1])), str(step[2])))
        else:
            book.offer(KEY, None)
    got = book.get(IMEI)
    assert (got and got.firmware) == firmware


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", b'{"imei": "1"}', b'{"imei": 5, "updated_at": "2026-11-30T12:00:00Z"}',
     b'{"imei": "1", "updated_at": "yesterday"}'],
)  # fmt: skip
def test_what_is_no_status_is_counted_and_skipped(raw: bytes) -> None:
    book = RegistryBook()
    book.offer(KEY, value(10))
    assert not book.offer(KEY, raw)
    assert book.malformed == 1 and book.get(IMEI) is not None and len(book) == 1


def test_a_stamped_value_that_is_no_status_is_dropped_when_used() -> None:
    book = RegistryBook()
    book.offer(KEY, b'{"imei": "352093081234567", "updated_at": "2026-11-30T12:00:00Z"}')
    assert len(book) == 1
    assert book.get(IMEI) is None and book.malformed == 1 and len(book) == 0


def test_sessions_start_from_and_build_on_the_newest_status() -> None:
    registry = DeviceRegistry(IngestorSettings(), read=False)
    registry.book.offer(KEY, encode(status(10, "1.9").model_copy(update={"iccid": "8961"})))
    started = registry.connected(
        IMEI,
        LastConnection(session_id="s", ingestor="a", protocol="camera", connected_at=T0),
        None,
    )
    assert started.iccid == "8961" and started.protocols == ["dmt", "camera"]
    assert started.updated_at == T0 + timedelta(seconds=10)  # never before what it builds on
    # another ingestor's newer status arrives: the session's next status builds on it
    newer = status(60, "1.10")
    registry.book.offer(KEY, encode(newer))
    base = registry.refreshed(started)
    assert base.firmware == "1.10" and base.updated_at == newer.updated_at
    assert base.last_connection == started.last_connection  # the session's, the later one
    assert base.protocols == ["dmt", "camera"]
    assert registry.refreshed(newer.model_copy(update={"updated_at": T0})) == newer
    mine = started.model_copy(update={"updated_at": T0 + timedelta(seconds=99)})
    assert registry.refreshed(mine) is mine  # the session's own is the newest
    identity = DeviceIdentity(imei="1", firmware="9")
    other = registry.connected(
        "1", LastConnection(session_id="t", ingestor="a", protocol="dmt", connected_at=T0), identity
    )
    assert other.firmware == "9" and other.last_position is None

"""Real captures (tests/dmtproto/vectors/, copied from ../shared/vectors): bytes in, the decoded
values the capture notes list, and the byte-exact replies."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dmtproto import (
    Analogue16Field,
    CommitRequested,
    DigitalField,
    GpsField,
    HelloReceived,
    Record,
    RecordReceived,
    RequestAnswered,
)
from tests.dmtproto.dmtproto_helpers import (
    ASYNC_COMPLETE,
    COMMIT,
    COMMIT_REPLY,
    VECTOR_ASYNC,
    VECTOR_DATA,
    VECTOR_HELLO,
    hello_reply,
    kinds,
    of,
    server_three_ways,
)

VECTORS = Path(__file__).parent / "vectors"
ALL_VECTORS = {VECTOR_DATA, VECTOR_HELLO, VECTOR_ASYNC, COMMIT_REPLY, ASYNC_COMPLETE}


def test_vectors_are_the_shared_captures() -> None:
    root = Path(__file__).resolve().parents[2]
    candidates = [up / "shared" / "vectors" / "dmt_binary.txt" for up in root.parents[:2]]
    shared = next((path for path in candidates if path.exists()), None)
    if shared is None:
        pytest.skip("no ../shared research notes next to this clone (the copy is tested)")
    assert (VECTORS / "dmt_binary.txt").read_text() == shared.read_text()


def test_every_vector_is_tested() -> None:
    # Every hex line of the capture file, and every hex example of 10+ digits in its comments,
    # is one of the vectors this module feeds or compares.
    text = (VECTORS / "dmt_binary.txt").read_text()
    found = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            found.append(line.strip())
        found += [
            m.replace(" ", "")
            for m in re.findall(r"\b(?:[0-9a-f]{2} ?){5,}\b", line.split("#", 1)[-1])
        ]
    found = [token for token in found if token.startswith("0255")]  # not the commit hash
    assert len(found) >= 6, found
    known = [*ALL_VECTORS, hello_reply()]
    for token in found:
        assert any(bytes.fromhex(token) in vector for vector in known), token


def test_vector_5_hello() -> None:
    fed = server_three_ways(VECTOR_HELLO)
    (hello,) = fed.events
    assert isinstance(hello, HelloReceived)
    assert hello.serial == 129336
    assert hello.imei == "353323081669730"
    assert hello.iccid == "89610185001824844630"
    assert (hello.product_id, hello.hardware_revision, hello.firmware) == (34, 2, "1.9")
    assert hello.flags == 0
    assert hello.raw == VECTOR_HELLO
    assert fed.replies == hello_reply()  # 02 55 01 08 00 | time | flags 0


def test_vector_1_data_records() -> None:
    fed = server_three_ways(VECTOR_HELLO + VECTOR_DATA + COMMIT)
    assert kinds(fed.events) == [
        "HelloReceived", "RecordReceived", "RecordReceived", "CommitRequested",
    ]  # fmt: skip
    first, second = (e.record for e in of(fed.events, RecordReceived))
    expected = [
        # sequence, device and GPS time, lat, lon, alt m, speed cm/s, heading, PDOP, temp raw
        (565, datetime(2021, 2, 5, 5, 51, 55, tzinfo=UTC),
         55.457414, 9.9343941, 30, 2330, 296, 1.2, 2112),
        (566, datetime(2021, 2, 5, 6, 7, 2, tzinfo=UTC),
         55.5500261, 9.6395707, 23, 2499, 330, 1.3, 2235),
    ]  # fmt: skip
    for record, (seq, when, lat, lon, alt, speed, heading, pdop, temp) in zip(
        (first, second), expected, strict=True
    ):
        assert isinstance(record, Record)
        assert record.sequence == seq
        assert record.device_time == when
        assert record.log_reason == 3 and record.log_reason_name == "elapsed_time"
        assert len(record.raw) == 61
        gps = record.get(GpsField)
        assert gps is not None
        assert gps.fix_time == when
        assert (gps.latitude, gps.longitude, gps.altitude_m) == (lat, lon, alt)
        assert (gps.speed_cm_s, gps.speed_accuracy, gps.heading, gps.pdop) == (
            speed,
            1,
            heading,
            pdop,
        )
        assert (gps.position_accuracy_m, gps.status, gps.valid) == (7, 3, True)
        digital = record.get(DigitalField)
        assert digital == DigitalField(inputs=3, outputs=0, status=3)
        assert digital.ignition
        analogues = record.get(Analogue16Field)
        assert analogues is not None
        assert [(a.id, a.raw) for a in analogues.values] == [
            (1, 4125), (3, temp), (4, 24), (5, 4072), (6, 7214),
        ]  # fmt: skip
    assert of(fed.events, CommitRequested) == [CommitRequested(records=2, new_records=2)]
    # Traccar replies 025506010001 to the commit; ours waits for commit().
    fed.server.commit()
    assert fed.server.data_to_send() == COMMIT_REPLY


def test_vector_6_async_session_request() -> None:
    fed = server_three_ways(VECTOR_HELLO + VECTOR_ASYNC)
    assert of(fed.events, RequestAnswered)[0].reply == 0x23
    assert fed.replies == hello_reply() + ASYNC_COMPLETE  # 0255230000

"""Hypothesis invariants: any input parses or raises RemoteProtocolError (never anything else),
however it is cut; records survive encode/decode; the device's records all arrive."""

from __future__ import annotations

import itertools
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmtproto import (
    CommitRequested,
    Event,
    Record,
    RecordReceived,
    RemoteProtocolError,
    ServerConfig,
    ServerState,
    decode_records,
    encode,
    encode_record,
)
from tests.dmtproto.dmtproto_helpers import (
    VECTOR_HELLO,
    DevicePair,
    new_server,
    random_cuts,
    records,
    sample_device,
)

S = ServerState
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = ServerConfig(max_message_length=2048, max_ignored_messages=5)


def feed_all(chunks: list[bytes], eof: bool) -> list[Event]:
    """Feed ``chunks``; the only exception allowed out is RemoteProtocolError."""
    server = new_server(SMALL)
    events: list[Event] = []
    try:
        for chunk in chunks:
            events += server.receive_data(chunk, 0.0)
            server.data_to_send()
    except RemoteProtocolError as exc:
        assert server.state is S.ERROR
        assert str(exc)
        events += [e for e in exc.events if isinstance(e, Event)]
        return events
    if eof:
        events += server.receive_eof()
        assert server.state is S.CLOSED
    return events


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@FAST
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8), st.booleans())
def test_garbage_parses_or_raises_remote_protocol_error(
    data: bytes, points: list[int], eof: bool
) -> None:
    feed_all(cut(data, points), eof)
    feed_all(cut(VECTOR_HELLO + data, points), eof)  # garbage after a good HELLO


message_types = st.sampled_from([0x00, 0x04, 0x05, 0x10, 0x14, 0x22, 0x26, 0x30, 0x06, 0x7F])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """Well-framed messages of device types with random payloads (records half the time)."""
    kind = draw(message_types)
    if kind == 0x04 and draw(st.booleans()):
        payload = b"".join(encode_record(r) for r in draw(st.lists(records(), max_size=3)))
    else:
        payload = draw(st.binary(max_size=80))
    return encode(kind, payload)


@FAST
@given(st.lists(messages(), max_size=12), st.lists(st.integers(0, 2000), max_size=6))
def test_framed_messages_parse_or_raise_and_cuts_do_not_matter(
    stream: list[bytes], points: list[int]
) -> None:
    data = VECTOR_HELLO + b"".join(stream)
    whole = feed_all([data], eof=True)
    assert feed_all(cut(data, points), eof=True) == whole


# --- records ----------------------------------------------------------------------------------


@FAST
@given(st.lists(records(), min_size=1, max_size=4))
def test_records_round_trip(built: list[Record]) -> None:
    payload = b"".join(encode_record(r) for r in built)
    decoded = decode_records(payload)
    assert decoded == built
    assert b"".join(r.raw for r in decoded) == payload
    assert [encode_record(r) for r in decoded] == [encode_record(r) for r in built]


@FAST
@given(records(), st.binary(min_size=1, max_size=40))
def test_truncated_or_padded_record_payloads_never_crash(record: Record, junk: bytes) -> None:
    raw = encode_record(record)
    for payload in (raw[: len(raw) // 2], raw + junk, junk + raw):
        server = new_server()
        try:
            server.receive_data(VECTOR_HELLO + encode(0x04, payload), 0.0)
        except RemoteProtocolError as exc:
            assert "DATA_RECORDS(0x04)" in str(exc) and "state READY" in str(exc)


# --- pair -------------------------------------------------------------------------------------


@FAST
@given(
    st.integers(0, 60),
    st.integers(1, 9),
    st.integers(1, 25),
    st.integers(0, 2**32 - 1),
)
def test_pair_delivers_every_record_exactly_once_per_connection(
    count: int, per_message: int, per_commit: int, seed: int
) -> None:
    device = sample_device(count)
    sent = list(device.pending)
    rng = random.Random(seed)
    pair = DevicePair(
        device,
        records_per_message=per_message,
        records_per_commit=per_commit,
        up=random_cuts(rng, 50),
        down=random_cuts(rng, 5),
    ).run()
    assert [e.record for e in pair.events_of(RecordReceived)] == sent
    assert device.pending == [] and device.committed == count
    assert sum(e.new_records for e in pair.events_of(CommitRequested)) == count


@FAST
@given(
    st.integers(1, 40),
    st.integers(1, 12),
    st.lists(st.tuples(st.integers(0, 8), st.booleans()), min_size=1, max_size=6),
    st.integers(0, 2**32 - 1),
)
def test_nothing_is_lost_or_dropped_early_across_failing_connections(
    count: int, per_commit: int, connections: list[tuple[int, bool]], seed: int
) -> None:
    """Each connection may drop after any number of steps, with the service committing or not
    (Kafka down). The device drops only records a server committed (and received), keeps the
    rest in order, and a last healthy connection delivers everything."""
    device = sample_device(count)
    logged = list(device.pending)
    committed: set[int] = set()  # sequence numbers a server committed
    rng = random.Random(seed)
    for steps, kafka_up in [*connections, (100_000, True)]:
        pair = DevicePair(
            device,
            records_per_message=3,
            records_per_commit=per_commit,
            auto_commit=False,
            up=random_cuts(rng, 40),
        )
        for _ in range(steps):
            moved = pair.step()
            received = [e.record.sequence for e in pair.events_of(RecordReceived)]
            while kafka_up and pair.server.state is S.COMMITTING:
                before = pair.server.committed
                pair.server.commit()
                committed.update(received[before : pair.server.committed])
            if not moved:
                break
        pair.disconnect()
        dropped = logged[: len(logged) - len(device.pending)]
        assert device.pending == logged[len(dropped) :]  # the rest, in order
        assert {r.sequence for r in dropped} <= committed  # nothing dropped early
        assert device.committed == len(dropped)
    assert device.pending == [] and device.committed == count

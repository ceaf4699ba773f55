"""The public contract: schemas in the repo match the models; ids and payloads are stable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import contracts
from contracts import Topic
from contracts import models as wire
from contracts.schemas import SCHEMA_DIR, main, rendered


def test_checked_in_schemas_match_the_models() -> None:
    for name, text in rendered().items():
        assert (SCHEMA_DIR / name).read_text() == text, f"{name} is stale: run make schemas"
    assert main(["--check"]) == 0


def test_every_topic_name_ends_in_its_version() -> None:
    assert all(str(topic).endswith(".v1") for topic in Topic)


def test_transfer_id_is_stable_and_tells_files_apart() -> None:
    same = contracts.transfer_id("352094082736916", b"%videor", 5860, None, 1763716443000)
    assert same == contracts.transfer_id("352094082736916", b"%videor", 5860, None, 1763716443000)
    assert same == "ba5339cbe1f8d3cbb3eb9aab6751bcfd"  # a published id never changes meaning
    others = {
        contracts.transfer_id("352094082736917", b"%videor", 5860, None, 1763716443000),
        contracts.transfer_id("352094082736916", b"%videof", 5860, None, 1763716443000),
        contracts.transfer_id("352094082736916", b"%videor", 5861, None, 1763716443000),
        contracts.transfer_id("352094082736916", b"%videor", 5860, 7, 1763716443000),
        contracts.transfer_id("352094082736916", b"%videor", 5860, None, 1763716443001),
        contracts.transfer_id("352094082736916", b"%videor", 5860, None, None, nonce="s1"),
    }
    assert same not in others and len(others) == 6


def test_session_events_round_trip_by_type() -> None:
    at = datetime(2026, 11, 21, tzinfo=UTC)
    event = wire.CrcMismatch(
        session_id="s", ingestor="i", imei="1", at=at, transfer_id="t", offset=3072,
        expected=1, received=2,
    )  # fmt: skip
    back = contracts.decode(contracts.SessionEvent, contracts.encode(event))
    assert back == event and isinstance(back, wire.CrcMismatch)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    raw = (
        b'{"schema":"transfer.end.v1","transfer_id":"t","session_id":"s","imei":"1","size":5,'
        b'"file_crc":9,"ended_at":"2026-11-21T00:00:00Z","added_in_v1_1":true}'
    )
    assert contracts.decode(wire.TransferEnd, raw).size == 5


def test_invalid_payload_is_rejected() -> None:
    with pytest.raises(ValueError, match="type"):
        contracts.decode(contracts.SessionEvent, b'{"type":"nope"}')


# Chunk-record headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "meta",
    [
        contracts.ChunkMeta.start("t1"),
        contracts.ChunkMeta.chunk("t1", offset=1024, crc_init=1, crc=2, file_crc=3, origin=7),
        contracts.ChunkMeta.end("t1", origin=7),
    ],
)
def test_chunk_headers_round_trip(meta: contracts.ChunkMeta) -> None:
    headers = meta.headers()
    assert all(name.startswith("fg-") and value.isascii() for name, value in headers)
    assert contracts.ChunkMeta.from_headers(b"t1", headers) == meta
    assert contracts.ChunkMeta.from_headers(None, dict(headers)) == meta  # key from fg-transfer


def test_chunk_headers_are_the_documented_ones() -> None:
    meta = contracts.ChunkMeta.chunk("t", offset=2048, crc_init=0, crc=0xBEEF, file_crc=9, origin=0)
    assert meta.headers() == [
        ("fg-kind", b"chunk"),
        ("fg-transfer", b"t"),
        ("fg-offset", b"2048"),
        ("fg-crc-init", b"0"),
        ("fg-crc", b"48879"),
        ("fg-file-crc", b"9"),
        ("fg-origin", b"0"),
    ]
    with pytest.raises(contracts.ChunkHeaderError, match="chunk record without fg-origin"):
        contracts.ChunkMeta.from_headers(b"t", meta.headers()[:-1])

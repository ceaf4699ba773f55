"""assembler.agents.Assembler in-process, with stand-ins for Kafka, the rewinder and S3."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import faust
import pytest
from structlog.testing import capture_logs

from assembler import agents, metrics
from assembler.agents import Assembler, Rewinder
from assembler.health import S3Watch
from assembler.settings import AssemblerSettings
from assembler.state import Reassembler
from assembler.storage import ObjectStore, StoreResult
from contracts import ChunkMeta, FileFailed, FileStored, Topic, decode, encode
from contracts.models import FileEvent
from tests.assembler.assembler_helpers import CameraFile, Headers, chunk_records, dsm, dualcam


@dataclass
class Log:
    """One partition of the chunk topic, in memory."""

    partition: int = 0
    messages: list[SimpleNamespace] = field(default_factory=list)

    def add(self, key: str, value: bytes, headers: Headers) -> SimpleNamespace:
        message = SimpleNamespace(
            key=key.encode(),
            value=value,
            headers=headers,
            partition=self.partition,
            offset=len(self.messages),
        )
        self.messages.append(message)
        return message

    def transfer(self, f: CameraFile) -> list[SimpleNamespace]:
        start = self.add(f.tid, encode(f.start()), ChunkMeta.start(f.tid).headers())
        out = [start]
        for c in chunk_records(f.data):
            out.append(self.add(f.tid, c.value, c.headers(f.tid, start.offset)))
        end = ChunkMeta.end(f.tid, origin=start.offset).headers()
        out.append(self.add(f.tid, encode(f.end()), end))
        return out


class FakeRewinder:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.calls: list[tuple[str, int, int, int, bytes]] = []

    async def records(
        self, topic: str, partition: int, start: int, stop: int, key: bytes
    ) -> AsyncIterator[Any]:
        self.calls.append((topic, partition, start, stop, key))
        for message in self.log.messages[start:stop]:
            if message.key == key:
                yield message

    async def close(self) -> None:
        pass


class FakeStore:
    bucket = "b"

    def __init__(self, failures: int = 0, existing: bool = False) -> None:
        self.failures = failures
        self.existing = existing
        self.stored: dict[str, tuple[bytes, str, dict[str, str]]] = {}

    async def store(
        self, path: Path, key: str, content_type: str, metadata: dict[str, str], sha256: str
    ) -> StoreResult:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("S3 is down")
        self.stored[key] = (await asyncio.to_thread(path.read_bytes), content_type, metadata)
        return StoreResult(key, uploaded=not self.existing)


class FakeProducer:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[tuple[str, bytes, Any]] = []

    async def send_and_wait(self, topic: str, key: bytes, value: bytes, *rest: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Kafka is down")
        self.sent.append((topic, key, decode(FileEvent, value)))


@dataclass
class Rig:
    assembler: Assembler
    store: FakeStore
    producer: FakeProducer
    rewinder: FakeRewinder
    log: Log

    @property
    def events(self) -> list[Any]:
        return [event for _, _, event in self.producer.sent]


def _rig(tmp_path: Path, store: FakeStore | None = None, producer_failures: int = 0) -> Rig:
    settings = AssemblerSettings(s3_retry_max_seconds=0.001, spool_dir=tmp_path)
    log = Log()
    producer = FakeProducer(producer_failures)
    app = cast(faust.App, SimpleNamespace(producer=producer))
    rewinder = FakeRewinder(log)
    store = store or FakeStore()
    assembler = Assembler(
        app,
        settings,
        cast(ObjectStore, store),
        Reassembler(tmp_path / "spool"),
        cast(Rewinder, rewinder),
    )
    return Rig(assembler, store, producer, rewinder, log)


async def test_stores_a_file_retrying_s3_and_kafka(tmp_path: Path) -> None:
    rig = _rig(tmp_path, FakeStore(failures=2), producer_failures=1)
    f = dsm(os.urandom(150_000), "/DSM/a.mp4\0")
    acks: list[int] = []

    async def ack(offset: int) -> None:
        acks.append(offset)

    messages = rig.log.transfer(f)
    for message in messages:
        await rig.assembler.handle_safely(message, partial(ack, message.offset))
    await rig.assembler.flush()
    assert acks == [m.offset for m in messages]  # the end record once the file is stored
    [(key, (data, content_type, metadata))] = rig.store.stored.items()
    assert data == f.data and content_type == "video/mp4" and key.endswith(".mp4")
    assert metadata["crc16"] == str(f.crc) and metadata["imei"] == f.imei
    [(topic, event_key, event)] = rig.producer.sent
    assert (topic, event_key) == (Topic.FILES, f.imei.encode())
    assert isinstance(event, FileStored) and event.key == key and event.size == len(f.data)
    assert rig.assembler.reassembler.is_done(f.tid) and len(rig.assembler.reassembler) == 0


async def test_an_identical_object_is_not_uploaded_again(tmp_path: Path) -> None:
    rig = _rig(tmp_path, FakeStore(existing=True))
    f = dualcam(os.urandom(5000), "photo_front")
    for message in rig.log.transfer(f):
        await rig.assembler.handle(message)
    await rig.assembler.flush()
    [event] = rig.events
    assert isinstance(event, FileStored) and event.event_id == f"{f.tid}.stored"


async def test_rewinds_when_state_was_lost(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    other = dualcam(os.urandom(3000), "photo_rear")
    f = dsm(os.urandom(300_000), "/DSM/r.mp4\0")
    messages = rig.log.transfer(f)
    rig.log.transfer(other)
    for message in messages[3:]:  # an instance that missed the first records
        await rig.assembler.handle(message)
    await rig.assembler.flush()
    assert rig.rewinder.calls == [(Topic.CHUNKS, 0, 0, 3, f.tid.encode())]
    [event] = rig.events
    assert isinstance(event, FileStored) and rig.store.stored[event.key][0] == f.data


async def test_malformed_records_fail_a_held_transfer(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    f = dsm(os.urandom(100_000), "/DSM/m.mp4\0")
    messages = rig.log.transfer(f)
    await rig.assembler.handle(messages[0])
    await rig.assembler.handle(SimpleNamespace(**{**vars(messages[1]), "headers": []}))
    [event] = rig.events
    assert isinstance(event, FileFailed)
    assert event.reason == "malformed: fg-kind is None" and event.imei == f.imei
    await rig.assembler.handle(SimpleNamespace(**{**vars(messages[1]), "headers": []}))
    assert len(rig.events) == 1  # nothing held any more: logged only


async def test_a_failure_without_start_record_is_only_logged(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    f = dsm(os.urandom(100_000), "/DSM/m.mp4\0")
    chunk = chunk_records(f.data)[1]
    rig.log.messages = [SimpleNamespace(key=b"x", value=b"", headers=[], partition=0, offset=0)]
    await rig.assembler.handle(rig.log.add(f.tid, chunk.value, chunk.headers(f.tid, 0)))
    assert rig.events == [] and rig.rewinder.calls


async def test_a_record_that_keeps_raising_fails_its_transfer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agents, "_ATTEMPT_PAUSE", 0.0)
    rig = _rig(tmp_path)
    f = dsm(os.urandom(100_000), "/DSM/m.mp4\0")
    messages = rig.log.transfer(f)
    await rig.assembler.handle_safely(messages[0])

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(rig.assembler.reassembler, "feed", broken)
    await rig.assembler.handle_safely(messages[1])
    [event] = rig.events
    assert isinstance(event, FileFailed) and event.reason == "internal: internal error: " + repr(
        RuntimeError("bug")
    )


async def test_uploads_run_in_the_background_and_drain_on_shutdown(tmp_path: Path) -> None:
    rig = _rig(tmp_path, FakeStore(failures=1_000_000))  # S3 never comes back
    f = dualcam(os.urandom(3000), "photo_rear")
    acked: list[int] = []

    async def ack() -> None:
        acked.append(1)

    for message in rig.log.transfer(f):
        await rig.assembler.handle_safely(message, ack)
    assert len(acked) == 2 and len(rig.assembler._uploads) == 1  # the end record waits
    await rig.assembler.drain(0.05)
    assert len(acked) == 2 and not rig.assembler._uploads and rig.events == []


async def test_rebalance_and_expiry_drop_transfers(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    a, b = dualcam(os.urandom(3000), "photo_rear"), dualcam(os.urandom(3000), "photo_front")
    await rig.assembler.handle(rig.log.transfer(a)[0])
    rig.log.partition = 1
    await rig.assembler.handle(rig.log.transfer(b)[0])
    assert len(rig.assembler.reassembler) == 2
    assigned = {faust.types.TP(Topic.CHUNKS, 0), faust.types.TP("other", 1)}
    await rig.assembler._on_assigned(None, assigned, signal=None)
    assert set(rig.assembler.reassembler.transfers) == {a.tid}
    rig.assembler.settings.transfer_idle_seconds = 0.0
    rig.assembler.expire()
    assert len(rig.assembler.reassembler) == 0


async def test_acknowledgements_reach_faust_in_record_order() -> None:
    """An ``end`` record whose upload still runs holds back every later acknowledgement of its
    partition: faust's commit can then never pass a file not yet stored."""
    from types import SimpleNamespace

    from assembler.agents import InOrderAcks

    acked: list[tuple[str, int]] = []

    async def faust_ack(event: Any) -> None:
        acked.append((event.message.tp, event.message.offset))

    acks = InOrderAcks(faust_ack)

    def event(tp: str, offset: int) -> Any:
        return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset))

    end_a = acks.track(event("p0", 10))  # an end record: its upload is still running
    chunk_a = acks.track(event("p0", 11))
    other = acks.track(event("p1", 5))
    await chunk_a()
    await other()
    assert acked == [("p1", 5)]  # p0/11 waits for p0/10; p1 is independent
    await end_a()
    assert acked == [("p1", 5), ("p0", 10), ("p0", 11)]
    assert acks.pending(cast(Any, "p0")) == 0


def _interleaved(log: Log, files: list[CameraFile], record_bytes: int) -> list[SimpleNamespace]:
    """Each file's start, then their chunk records in turn, then their end records."""
    starts = [log.add(f.tid, encode(f.start()), ChunkMeta.start(f.tid).headers()) for f in files]
    out = list(starts)
    chunks = [chunk_records(f.data, 0, None, record_bytes) for f in files]
    for i in range(max(map(len, chunks))):
        for f, start, cs in zip(files, starts, chunks, strict=True):
            if i < len(cs):
                out.append(log.add(f.tid, cs[i].value, cs[i].headers(f.tid, start.offset)))
    for f, start in zip(files, starts, strict=True):
        end = ChunkMeta.end(f.tid, origin=start.offset).headers()
        out.append(log.add(f.tid, encode(f.end()), end))
    return out


async def test_a_full_spool_sets_a_transfer_aside_and_loses_nothing(tmp_path: Path) -> None:
    """Two transfers interleaved would hold 300 KB; the quota is 200 KB. The chunk that would
    pass it is skipped and its transfer's spool freed (Kafka keeps its records); the other
    transfer completes; the set-aside one is rebuilt from its start record when its next
    record fits (its end record waits for the other's upload if need be). Both are stored
    whole and the spool never holds more than the quota."""
    rig = _rig(tmp_path)
    settings = rig.assembler.settings
    settings.spool_quota_bytes = 200_000
    a, b = dsm(os.urandom(150_000), "/DSM/a.mp4\0"), dsm(os.urandom(150_000), "/DSM/b.mp4\0")
    messages = _interleaved(rig.log, [a, b], 64 * 1024)
    set_aside = metrics.spool_set_aside._value.get()
    peak = 0
    with capture_logs() as logs:
        for message in messages:
            await asyncio.wait_for(rig.assembler.handle(message), 10)
            peak = max(peak, rig.assembler.reassembler.spool_bytes)
        await rig.assembler.flush()
    assert metrics.spool_set_aside._value.get() > set_aside
    assert [e["transfer"] for e in logs if e["event"] == "spool_full_set_aside"] == [b.tid]
    assert metrics.spool_paused._value.get() == 0
    assert peak <= settings.spool_quota_bytes
    assert rig.store.stored.keys() == {e.key for e in rig.events if isinstance(e, FileStored)}
    assert sorted(data for data, _, _ in rig.store.stored.values()) == sorted([a.data, b.data])
    # b was read again once, from its start record.
    assert [(start, key) for _, _, start, _, key in rig.rewinder.calls] == [
        (messages[1].offset, b.tid.encode())
    ]
    assert not list((tmp_path / "spool").iterdir())


async def test_an_end_record_waits_for_room_while_the_others_expire(tmp_path: Path) -> None:
    """An end record whose file must be rebuilt past the quota waits (consumption stops)
    until another transfer's idle spool expires; nothing is skipped."""
    rig = _rig(tmp_path)
    settings = rig.assembler.settings
    settings.spool_quota_bytes = 200_000
    settings.transfer_idle_seconds = 0.3
    a, b = dsm(os.urandom(150_000), "/DSM/a.mp4\0"), dsm(os.urandom(150_000), "/DSM/b.mp4\0")
    b_records = rig.log.transfer(b)
    a_records = rig.log.transfer(a)
    for message in a_records[:-1]:  # a holds 150 KB and is never finished (abandoned)
        await rig.assembler.handle(message)
    pauses = metrics.spool_full._value.get()
    done = await asyncio.wait_for(rig.assembler.handle(b_records[-1]), 10)  # b's end only
    assert done  # b was rebuilt from Kafka and completed: its upload runs
    await rig.assembler.flush()
    assert metrics.spool_full._value.get() == pauses + 1
    assert a.tid not in rig.assembler.reassembler.transfers  # expired to make room
    [(data, _, _)] = rig.store.stored.values()
    assert data == b.data


async def test_a_transfer_alone_in_the_spool_is_never_held_back(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    rig.assembler.settings.spool_quota_bytes = 10_000  # smaller than the file
    f = dsm(os.urandom(150_000), "/DSM/big.mp4\0")
    for message in rig.log.transfer(f):
        await asyncio.wait_for(rig.assembler.handle(message), 5)
    await rig.assembler.flush()
    [(data, _, _)] = rig.store.stored.values()
    assert data == f.data


async def test_an_oversized_start_is_a_file_failed_event(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    rig.assembler.reassembler.max_file_bytes = {"dsm": 100_000}
    f = dsm(os.urandom(150_000), "/DSM/huge.mp4\0")
    for message in rig.log.transfer(f):
        await rig.assembler.handle(message)
    [event] = rig.events
    assert isinstance(event, FileFailed) and event.reason.startswith("size: START announces")
    assert rig.store.stored == {} and not list((tmp_path / "spool").iterdir())


async def test_slow_s3_requests_are_logged_once_and_make_s3_not_ready(tmp_path: Path) -> None:
    clock = [100.0]
    rig = _rig(tmp_path)
    watch = rig.assembler.watch = S3Watch(2.0, clock=lambda: clock[0])
    with capture_logs() as logs:
        with watch.request("put"):
            clock[0] += 1.0
            rig.assembler.check_s3()
            assert watch.ready() and not [e for e in logs if e["event"] == "s3_slow"]
            clock[0] += 1.5
            rig.assembler.check_s3()
            rig.assembler.check_s3()
            slow = [e for e in logs if e["event"] == "s3_slow"]
            assert len(slow) == 1 and slow[0]["operation"] == "put"
            assert slow[0]["in_flight_seconds"] == 2.5 and not watch.ready()
            assert [e["reason"] for e in logs if e["event"] == "s3_not_ready"] == [
                "an S3 request has been in flight for 2.5 s"
            ]
        rig.assembler.check_s3()
    assert watch.ready() and logs[-1]["event"] == "s3_ready"

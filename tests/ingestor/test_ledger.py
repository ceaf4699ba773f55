"""The ledger's window: a barrier passes only when Kafka acknowledged every record published
before it, each one checked (none assumed acknowledged because a later one was), and the
direct path into aiokafka's open batch lands records where ``send`` would."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from contracts import Topic
from ingestor.sink import KafkaFailed, KafkaSink, Ledger
from tests.ingestor.ingestor_helpers import settings


class HandSink:
    """Each record's acknowledgement is a future the test resolves."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


def _ack(future: asyncio.Future[Any]) -> None:
    future.set_result(type("Meta", (), {"offset": 0, "partition": 0})())


async def _window(records: int, ack_within: float = 5.0) -> tuple[HandSink, Ledger]:
    sink = HandSink()
    ledger = Ledger(sink, ack_within)
    for i in range(records):
        await ledger.publish("t", b"k", bytes(10 + i))
    return sink, ledger


@pytest.mark.parametrize("failed", [0, 2, 4])
async def test_one_failed_record_in_a_window_fails_the_barrier(failed: int) -> None:
    """The others, earlier and later, are acknowledged; the barrier still fails, and so does
    every later one: what the device would be told is not all in Kafka."""
    sink, ledger = await _window(5)
    for i, future in enumerate(sink.futures):
        if i == failed:
            future.set_exception(ConnectionError("NOT_ENOUGH_REPLICAS"))
        else:
            _ack(future)
    with pytest.raises(KafkaFailed, match="NOT_ENOUGH_REPLICAS"):
        await ledger.barrier()
    with pytest.raises(KafkaFailed):
        await ledger.barrier()


async def test_a_record_failing_last_while_the_barrier_waits() -> None:
    """Every record but one is acknowledged, the last of them first; the barrier waits for
    the one in between, and fails with it."""
    sink, ledger = await _window(5)
    _ack(sink.futures[4])
    for future in sink.futures[:2]:
        _ack(future)
    _ack(sink.futures[3])
    barrier = asyncio.ensure_future(ledger.barrier())
    await asyncio.sleep(0.05)
    assert not barrier.done()  # the last record acknowledged says nothing of the others
    sink.futures[2].set_exception(ConnectionError("REQUEST_TIMED_OUT"))
    with pytest.raises(KafkaFailed, match="REQUEST_TIMED_OUT"):
        await asyncio.wait_for(barrier, 5)


async def test_the_barrier_passes_once_every_record_is_acknowledged() -> None:
    sink, ledger = await _window(4)
    barrier = asyncio.ensure_future(ledger.barrier())
    for future in reversed(sink.futures[1:]):
        _ack(future)
        await asyncio.sleep(0.01)
        assert not barrier.done()
    _ack(sink.futures[0])
    await asyncio.wait_for(barrier, 5)
    assert ledger.pending_bytes == 0
    await ledger.publish("t", b"k", b"next")  # a new window starts clean
    assert ledger.pending_bytes == 4


async def test_bound_waits_only_down_to_its_limit() -> None:
    sink, ledger = await _window(3)  # 10 + 11 + 12 bytes
    _ack(sink.futures[0])
    await asyncio.wait_for(ledger.bound(23), 5)  # the first acknowledged: 23 left
    assert ledger.pending_bytes == 23
    bound = asyncio.ensure_future(ledger.bound(12))
    await asyncio.sleep(0.02)
    assert not bound.done()
    _ack(sink.futures[1])
    await asyncio.wait_for(bound, 5)
    assert ledger.pending_bytes == 12


async def test_a_record_never_acknowledged_fails_within_the_timeout() -> None:
    _sink, ledger = await _window(2, ack_within=0.2)
    with pytest.raises(KafkaFailed, match="not acknowledged"):
        await asyncio.wait_for(ledger.barrier(), 5)


async def test_direct_appends_land_where_send_puts_them(kafka: str) -> None:
    """Records of a few keys through the ledger on the real producer: after each
    partition's first record (``send`` opens its batch), the rest go straight into the open
    batch; every record lands on the partition aiokafka's partitioner gives its key, in the
    order published."""
    sink = KafkaSink(settings(kafka).ingestor)
    await sink.producer.start()
    try:
        ledger = Ledger(sink, 30.0)
        keys = [f"35209308000000{i}".encode() for i in range(3)]
        sent: list[tuple[bytes, asyncio.Future[Any]]] = []
        direct = 0
        for i in range(300):
            key = keys[i % 3]
            if sink.send_now(Topic.RECORDS, key, b"probe", []) is not None:
                direct += 1  # the probe itself went in too: acknowledged with the rest
            sent.append((key, await ledger.publish(Topic.RECORDS, key, f"{i}".encode())))
        await ledger.barrier()
        cluster = sink.producer.client.cluster
        partitions = list(cluster.partitions_for_topic(str(Topic.RECORDS)))
        available = list(cluster.available_partitions_for_topic(str(Topic.RECORDS)))
        last: dict[int, int] = {}
        for key, future in sent:
            meta = future.result()
            assert meta.partition == DefaultPartitioner()(key, partitions, available)
            assert meta.offset > last.get(meta.partition, -1)
            last[meta.partition] = meta.offset
        assert direct > 200  # the direct path, not send, took most of them
    finally:
        await sink.producer.stop()


class BatchSink(HandSink):
    """``append_now`` as aiokafka's open batch gives it: every record of the open batch
    gets the batch's one future; None while there is no open batch (``send`` must)."""

    def __init__(self) -> None:
        super().__init__()
        self.batch: asyncio.Future[Any] | None = None

    def open(self) -> asyncio.Future[Any]:
        self.batch = asyncio.get_running_loop().create_future()
        return self.batch

    def append_now(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any] | None:
        return self.batch


async def test_put_counts_each_batch_once_and_the_barrier_waits_for_every_batch() -> None:
    sink = BatchSink()
    ledger = Ledger(sink, 5.0)
    assert not ledger.put("t", b"k", b"x" * 10, [])  # no open batch: publish must take it
    assert ledger.pending_bytes == 0 and not sink.futures
    first = sink.open()
    assert ledger.put("t", b"k", b"x" * 10, []) and ledger.put("t", b"k", b"x" * 11, [])
    await ledger.publish("t", b"k", b"x" * 12)  # a record of its own in between
    second = sink.open()
    assert ledger.put("t", b"k", b"x" * 13, [])
    assert ledger.pending_bytes == 46
    barrier = asyncio.ensure_future(ledger.barrier())
    _ack(second)
    _ack(sink.futures[0])
    await asyncio.sleep(0.02)
    assert not barrier.done()  # the first batch (two records) is not acknowledged
    _ack(first)
    await asyncio.wait_for(barrier, 5)
    assert ledger.pending_bytes == 0


async def test_a_failed_batch_fails_the_barrier() -> None:
    sink = BatchSink()
    ledger = Ledger(sink, 5.0)
    failed = sink.open()
    assert ledger.put("t", b"k", b"one", [])
    _ack(sink.open())
    assert ledger.put("t", b"k", b"two", [])
    failed.set_exception(ConnectionError("NOT_ENOUGH_REPLICAS"))
    with pytest.raises(KafkaFailed, match="NOT_ENOUGH_REPLICAS"):
        await asyncio.wait_for(ledger.barrier(), 5)


async def test_put_lands_records_in_order_on_their_partitions(kafka: str) -> None:
    """Records through ``put`` on the real producer (``publish`` when there is no open
    batch): each lands on the partition aiokafka's partitioner gives its key, in order."""
    sink = KafkaSink(settings(kafka).ingestor)
    await sink.producer.start()
    run = uuid.uuid4().hex.encode()
    keys = [f"35209308100000{i}".encode() for i in range(3)]
    put = 0
    try:
        ledger = Ledger(sink, 30.0)
        for i in range(300):
            value = b"%s|%d" % (run, i)
            if ledger.put(Topic.RECORDS, keys[i % 3], value, []):
                put += 1
            else:
                await ledger.publish(Topic.RECORDS, keys[i % 3], value)
        await ledger.barrier()
        assert ledger.pending_bytes == 0
        partitions = list(sink.producer.client.cluster.partitions_for_topic(str(Topic.RECORDS)))
    finally:
        await sink.producer.stop()
    assert put > 200  # most went straight into the open batch
    consumer = AIOKafkaConsumer(
        str(Topic.RECORDS), bootstrap_servers=kafka, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    landed: list[tuple[int, bytes, int]] = []
    try:
        async with asyncio.timeout(20):
            while len(landed) < 300:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        if record.value is not None and record.value.startswith(run + b"|"):
                            index = int(record.value.split(b"|")[1])
                            landed.append((record.partition, record.key or b"", index))
    finally:
        await consumer.stop()
    assert sorted(i for _, _, i in landed) == list(range(300))
    for key in keys:
        mine = [(p, i) for p, k, i in landed if k == key]
        assert {p for p, _ in mine} == {DefaultPartitioner()(key, partitions, partitions)}
        assert [i for _, i in mine] == sorted(i for _, i in mine)  # in order

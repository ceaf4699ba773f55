"""What the consumers have not done yet: consumer lag from committed offsets vs end offsets.

A stop waits on this: once the ingestor is gone, nothing new arrives, and the assembler (group
``fleetgate-assembler`` on the chunk topic) and every connector group (``fleetgate-connector-*``
on the files topic and the retry topics) have finished when their committed offsets reach the
end offsets. The assembler commits an ``end`` record only after its file is in S3 and
announced, so a chunk-topic lag of 0 means every file Kafka holds is stored.

Tansu 0.6 answers ListGroups and a consumer's OffsetFetch, but not the admin client's
OffsetFetch, so committed offsets are read with one group-bound consumer per group. Its
ListOffsets sometimes names the last record instead of the offset after it (measured: a
partition holding offsets 0-2 reported end 2 while the assembler had committed 3), which
would hide one unprocessed record per partition; so the end is also probed by fetching from
the reported end: any record there moves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contracts import Topic
from runtime.kafka import partitions_of

from .infra import Brokers, client_args

__all__ = [
    "ASSEMBLER_GROUP",
    "CONNECTOR_PREFIX",
    "GroupLag",
    "LagReader",
    "StallWatch",
    "describe",
    "lag_of",
]

ASSEMBLER_GROUP = "fleetgate-assembler"
CONNECTOR_PREFIX = "fleetgate-connector-"
_RETRY_PREFIX = "fleetgate.connector.retry."


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    records: int  # records not yet committed, over every partition it reads

    @property
    def service(self) -> str:
        return "assembler" if self.group == ASSEMBLER_GROUP else "connector"


def lag_of(
    committed: Mapping[TopicPartition, int | None],
    beginning: Mapping[TopicPartition, int],
    end: Mapping[TopicPartition, int],
) -> int:
    """Records between each partition's committed offset (its log start if none) and its end."""
    total = 0
    for tp, last in end.items():
        done = committed.get(tp)
        start = beginning.get(tp, 0) if done is None else done
        total += max(0, last - start)
    return total


class StallWatch:
    """Whether the consumers stopped making progress: the same lag for ``seconds``.

    A stop waits for lag 0, but records can stay uncommitted for good (the chunks of a
    transfer the ingestor cut short wait for the device to resume it); waiting for them
    would only run the clock out. Time is passed in.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._seen: tuple[GroupLag, ...] | None = None
        self._since = 0.0

    def stalled(self, lags: Iterable[GroupLag], now: float) -> bool:
        current = tuple(lags)
        if current != self._seen:
            self._seen, self._since = current, now
            return False
        return now - self._since >= self.seconds


def describe(lags: Iterable[GroupLag]) -> str:
    """``assembler 12 records, connector (fleetgate-connector-sink) 3 records``."""
    parts = []
    for lag in lags:
        name = lag.service if lag.service == "assembler" else f"connector ({lag.group})"
        parts.append(f"{name} {lag.records} records")
    return ", ".join(parts) or "nothing"


class LagReader:
    """Reads the lag of fleetgate's consumer groups (open with :meth:`start`)."""

    def __init__(self, brokers: Brokers) -> None:
        self._client = client_args(brokers)  # TLS and SASL as the settings say
        self._admin: AIOKafkaAdminClient | None = None
        self._plain: AIOKafkaConsumer | None = None
        self._groups: dict[str, AIOKafkaConsumer] = {}

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(**self._client)
        await self._admin.start()
        self._plain = AIOKafkaConsumer(**self._client, group_id=None)
        await self._plain.start()

    async def close(self) -> None:
        for consumer in [*self._groups.values(), self._plain]:
            if consumer is not None:
                await consumer.stop()
        self._groups.clear()
        if self._admin is not None:
            await self._admin.close()

    async def _consumer(self, group: str) -> AIOKafkaConsumer:
        consumer = self._groups.get(group)
        if consumer is None:  # never subscribes: it only reads the group's offsets
            consumer = AIOKafkaConsumer(**self._client, group_id=group, enable_auto_commit=False)
            await consumer.start()
            self._groups[group] = consumer
        return consumer

    async def _partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        assert self._plain is not None
        found = []
        for topic in topics:  # asked of the brokers: see runtime.kafka.partitions_of
            for partition in sorted(await partitions_of(self._plain, topic)):
                found.append(TopicPartition(topic, partition))
        return found

    async def _end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after each partition's last record (see the module docstring)."""
        assert self._plain is not None
        end: dict[TopicPartition, int] = dict(await self._plain.end_offsets(tps))
        probe = AIOKafkaConsumer(  # a fresh one: no position or buffer left from last time
            **self._client,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,  # the largest record fleetgate writes
            fetch_max_bytes=16 * 1024 * 1024,
        )
        await probe.start()
        try:
            probe.assign(tps)
            for tp in tps:
                probe.seek(tp, end[tp])
            while True:
                batch = await probe.getmany(*tps, timeout_ms=100)
                if not any(batch.values()):
                    return end
                for tp, records in batch.items():
                    if records:
                        end[tp] = max(end[tp], records[-1].offset + 1)
        finally:
            await probe.stop()

    async def lags(self) -> list[GroupLag]:
        """The assembler's lag, then each connector group's."""
        assert self._admin is not None and self._plain is not None
        await self._plain.topics()  # refresh metadata
        topics = set(await self._admin.list_topics())
        groups = sorted(
            str(entry[0])
            for entry in await self._admin.list_consumer_groups()
            if str(entry[0]).startswith(CONNECTOR_PREFIX)
        )
        wanted = {ASSEMBLER_GROUP: [str(Topic.CHUNKS)]}
        connector_topics = [str(Topic.FILES)]
        connector_topics += sorted(t for t in topics if t.startswith(_RETRY_PREFIX))
        for group in groups:
            wanted[group] = connector_topics
        out = []
        for group, group_topics in wanted.items():
            tps = await self._partitions(t for t in group_topics if t in topics)
            if not tps:
                continue
            consumer = await self._consumer(group)
            committed = {tp: await consumer.committed(tp) for tp in tps}
            beginning = await self._plain.beginning_offsets(tps)
            end = await self._end_offsets(tps)
            out.append(GroupLag(group, lag_of(committed, beginning, end)))
        return out

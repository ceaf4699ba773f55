"""Consumer lag, computed by the consuming service itself (no Kafka exporter needed).

Every ``interval`` seconds :class:`LagMonitor` reads a consumer group's committed offsets and
the end offsets of the topics it reads, and sets ``fleetgate_consumer_lag_records{group,
topic}``: records in the topic that the group has not committed yet, summed over partitions.
A partition the group never committed counts from its first retained record (the services
start new groups at the earliest offset). Every replica of a service reports the whole group's
lag, so dashboards take ``max by (group, topic)``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from .kafka import partitions_of

__all__ = ["LagMonitor", "consumer_lag", "lag_by_topic", "start_lag_monitors"]

_log = structlog.get_logger("fleetgate.lag")

consumer_lag = Gauge(
    "fleetgate_consumer_lag_records",
    "Records of the topic not yet committed by the consumer group (sum over partitions)",
    ["group", "topic"],
)
lag_errors = Counter(
    "fleetgate_consumer_lag_errors_total",
    "Failed attempts to read a group's committed or end offsets",
    ["group"],
)


def lag_by_topic(
    end: Mapping[TopicPartition, int],
    committed: Mapping[TopicPartition, int],
    beginning: Mapping[TopicPartition, int],
) -> dict[str, int]:
    """Lag per topic: ``end - committed`` per partition (``end - beginning`` where nothing is
    committed, or the commit fell behind retention), never negative."""
    lag: dict[str, int] = {}
    for tp, last in end.items():
        start = beginning.get(tp, 0)
        position = max(committed.get(tp, start), start)
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, last - position)
    return lag


class LagMonitor:
    """Publishes the lag of ``group`` on ``topics`` until cancelled.

    ``client_kwargs`` are the service's aiokafka client arguments
    (:func:`runtime.kafka.client_kwargs`: TLS, SASL); ``interval`` its ``lag_interval_seconds``.
    """

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: Sequence[str],
        *,
        interval: float = 15.0,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topics = list(dict.fromkeys(topics))
        self.interval = interval
        self.client_kwargs = dict(client_kwargs or {})
        for topic in self.topics:  # exported at zero from start-up
            consumer_lag.labels(group, topic)
        lag_errors.labels(group)

    async def measure(
        self, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer
    ) -> dict[str, int]:
        """One reading: lag per topic (topics that do not exist yet are left out)."""
        partitions = [
            TopicPartition(topic, p)
            for topic in self.topics
            for p in sorted(await partitions_of(consumer, topic))  # fetched now, every topic
        ]
        if not partitions:
            return {}
        offsets = await admin.list_consumer_group_offsets(self.group, partitions=partitions)
        committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        end = await consumer.end_offsets(partitions)
        beginning = await consumer.beginning_offsets(partitions)
        return lag_by_topic(end, committed, beginning)

    def publish(self, lag: Mapping[str, int]) -> None:
        for topic, value in lag.items():
            consumer_lag.labels(self.group, topic).set(value)

    async def run(self) -> None:
        """Measure every ``interval`` seconds, the first time one interval after the start (the
        series exist at zero meanwhile), out of the way of the service's own group join."""
        clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    if clients is None:
                        clients = await self._connect()
                    self.publish(await self.measure(*clients))
                except (KafkaError, OSError, TimeoutError) as exc:  # count, log, try again
                    lag_errors.labels(self.group).inc()
                    _log.warning("lag_unavailable", group=self.group, error=repr(exc))
        finally:
            if clients is not None:
                await _close(*clients)

    async def _connect(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        options = {**self.client_kwargs, "bootstrap_servers": self.bootstrap}
        admin = AIOKafkaAdminClient(**options)
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **options)
        try:
            await admin.start()
            await consumer.start()
        except BaseException:
            await _close(admin, consumer)
            raise
        return admin, consumer


async def _close(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> None:
    with contextlib.suppress(KafkaError, OSError):
        await consumer.stop()
    with contextlib.suppress(KafkaError, OSError):
        await admin.close()


def start_lag_monitors(monitors: Iterable[LagMonitor]) -> list[asyncio.Task[None]]:
    """Start each monitor as a task (cancel them to stop)."""
    return [asyncio.create_task(m.run(), name=f"lag-{m.group}") for m in monitors]

"""What the webhook worker and the forwarding worker share about running one endpoint's
consumer group: the rebalance listener, committing offsets, and a wait that a stop cuts
short."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, Protocol

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

__all__ = ["Rebalance", "Worker", "commit_new", "sleep_unless_stopped"]

_log = structlog.get_logger("fleetgate.connector")


class Worker(Protocol):
    """An endpoint's worker, as its rebalance listener sees it."""

    name: str

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        """Finish or give up what is in hand of ``revoked`` before another member takes it."""
        ...


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tells the worker its partitions are going; logs the ones it gets."""

    def __init__(self, owner: Worker) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.owner.revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        _log.info(
            "partitions_assigned",
            endpoint=self.owner.name,
            partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned),
        )


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; True if it slept the whole time."""
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    return not stop.is_set()


async def commit_new(
    consumer: Any,
    endpoint: str,
    offsets: Mapping[TopicPartition, int],
    committed: dict[TopicPartition, int],
) -> None:
    """Commit those of ``offsets`` beyond what ``committed`` holds, and note them there. A
    failed commit (a rebalance, say) is logged: the next one carries the same offsets."""
    new = {tp: offset for tp, offset in offsets.items() if committed.get(tp, -1) < offset}
    if not new:
        return
    try:
        await consumer.commit(new)
    except KafkaError as exc:
        _log.warning("commit_failed", endpoint=endpoint, error=repr(exc))
        return
    for tp, offset in new.items():
        committed[tp] = max(offset, committed.get(tp, -1))

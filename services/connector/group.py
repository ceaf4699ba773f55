"""What the webhook worker and the forwarding worker share about running one endpoint's
consumer group: the rebalance listener and a wait that a stop cuts short."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition

__all__ = ["Rebalance", "Worker", "sleep_unless_stopped"]

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

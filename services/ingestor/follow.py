"""Reading a compacted topic into memory: from its start, then following it.

The camera's progress book (``fleetgate.camera.progress.v1``) and the device registry
(``fleetgate.devices.v1``) are both views an ingestor keeps of a compacted topic every
ingestor writes. :class:`TopicFollower` is the reading they share: a plain consumer (no
group, every partition, from the earliest offset) that hands each record to ``take``, is
caught up once a poll returns nothing for ``idle`` seconds (end offsets are not trusted:
Tansu's ListOffsets(latest) is wrong after batched writes), and then follows the topic,
picking up new partitions, until cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from runtime.kafka import consumer_kwargs, partitions_of

from .settings import IngestorSettings

__all__ = ["TopicFollower"]

_log = structlog.get_logger("fleetgate.ingestor")


class TopicFollower:
    """Reads ``topic`` from its start into :meth:`take` and keeps following it.

    ``name`` prefixes the log events (``<name>_caught_up``...) and the consumer's client id.
    :meth:`catch_up` reads until a poll returns nothing for ``idle`` seconds, or ``within``
    seconds passed. Subclasses implement :meth:`take`, and may :meth:`tick` (every
    ``tick_seconds`` while following), :meth:`before_poll` and :meth:`failed` (a read
    error; the follower waits a second and goes on).
    """

    #: How often :meth:`tick` runs while following (new partitions are looked for too).
    tick_seconds = 10.0

    def __init__(
        self, settings: IngestorSettings, topic: str, name: str, idle: float, within: float
    ) -> None:
        self.topic = topic
        self.name = name
        self.idle = idle
        self.within = within
        #: Records read so far.
        self.records = 0
        self.consumer = AIOKafkaConsumer(
            **consumer_kwargs(settings),
            client_id=f"fleetgate-ingestor-{settings.instance}-{name}",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=settings.kafka_request_timeout_ms,
        )
        self._assigned: set[TopicPartition] = set()
        self._started = False
        self._following: asyncio.Task[None] | None = None
        #: Partition -> the offset after the last record read (what the view knows).
        self.positions: dict[int, int] = {}
        self._read = asyncio.Event()  # set after each batch read

    def take(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the topic, in offset order per partition."""
        raise NotImplementedError

    async def tick(self) -> None:
        """Housekeeping while following (prune, say)."""

    async def before_poll(self) -> None:
        """Runs before each poll while following (rewind after a reset, say)."""

    def failed(self, exc: Exception) -> None:
        """Reading failed (the broker away: aiokafka reconnects, the follower waits)."""
        _log.warning(f"{self.name}_read_failed", error=repr(exc))

    async def start(self) -> None:
        await self.consumer.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.consumer.stop()

    async def open(self) -> None:
        """:meth:`start`, :meth:`catch_up` (bounded), then :meth:`follow` in the background
        until :meth:`close`. Opening an open follower does nothing."""
        if self._started:
            return
        await self.start()
        await self.catch_up()
        self._following = asyncio.create_task(self.follow(), name=f"{self.name} reader")

    async def close(self) -> None:
        """Stop following and reading."""
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following
            self._following = None
        await self.stop()

    async def rewind(self) -> None:
        """Read every partition again from its start."""
        if self._assigned:
            await self.consumer.seek_to_beginning(*self._assigned)
        self.positions.clear()

    async def _assign(self) -> bool:
        """Take every partition of the topic (new ones from their start); True if any."""
        partitions: set[int] = set()
        with contextlib.suppress(Exception):  # metadata not there yet: try again later
            partitions = await partitions_of(self.consumer, self.topic)
        wanted = {TopicPartition(self.topic, p) for p in partitions}
        new = wanted - self._assigned
        if new:
            self._assigned |= new
            self.consumer.assign(sorted(self._assigned))
            await self.consumer.seek_to_beginning(*new)
        return bool(self._assigned)

    async def poll(self, wait: float) -> int:
        """One fetch (waiting up to ``wait`` seconds); how many records it brought."""
        batch = await self.consumer.getmany(timeout_ms=int(wait * 1000), max_records=2000)
        count = 0
        for tp, messages in batch.items():
            for message in messages:
                count += 1
                self.take(message.key, message.value)
            if messages:
                self.positions[tp.partition] = messages[-1].offset + 1
        self.records += count
        if count:
            self._read.set()
            self._read = asyncio.Event()
        return count

    async def reached(self, partition: int, offset: int, within: float) -> bool:
        """Wait until the record at ``offset`` of ``partition`` has been read into the view;
        False if ``within`` seconds passed first."""
        try:
            async with asyncio.timeout(within):
                while self.positions.get(partition, 0) <= offset:
                    await self._read.wait()
        except TimeoutError:
            return False
        return True

    async def catch_up(self) -> bool:
        """Read until a poll returns nothing for ``idle`` seconds; False if ``within``
        seconds passed first (or the topic never appeared)."""
        idle = self.idle
        began = time.monotonic()
        deadline = began + self.within
        while not await self._assign():
            if time.monotonic() > deadline:
                _log.warning(f"{self.name}_topic_missing", topic=self.topic)
                return False
            await asyncio.sleep(0.2)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle:
            if time.monotonic() > deadline:
                _log.warning(f"{self.name}_catch_up_timeout", records=self.records)
                return False
            if await self.poll(min(0.1, idle)):
                quiet_since = time.monotonic()
        _log.info(
            f"{self.name}_caught_up",
            records=self.records,
            seconds=round(time.monotonic() - began, 3),
            **self.describe(),
        )
        return True

    def describe(self) -> dict[str, object]:
        """Fields for the ``<name>_caught_up`` log line."""
        return {}

    async def follow(self) -> None:
        """Keep reading for ever (new partitions picked up, :meth:`tick` run)."""
        checked = time.monotonic()
        while True:
            try:
                await self.before_poll()
                await self.poll(0.5)
                if time.monotonic() - checked > self.tick_seconds:
                    checked = time.monotonic()
                    await self._assign()
                    await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker away: aiokafka reconnects, we wait
                self.failed(exc)
                await asyncio.sleep(1.0)

"""The Kafka side: one consumer group per endpoint, commits only what the endpoint took.

Every enabled endpoint gets an :class:`EndpointConsumer` with its own consumer group
(``{connector_group_prefix}-{name}``), its own HTTP client and its own progress, so a slow or dead
endpoint never holds another back.

Inside one endpoint, each partition of ``fleetgate.files.v1`` (key = IMEI) is delivered in
order, one event at a time, and the partitions proceed concurrently. A batch of records goes
to a task of its partition, which is paused meanwhile: the main loop keeps polling (so the
group membership stays alive however long an endpoint is down) without fetching more of that
partition. Offsets are committed (manually) only up to the last event the endpoint answered
2xx for: after each batch, every second while a partition is stuck retrying, when partitions
are revoked and at shutdown. A crash can therefore re-send events, never lose one; receivers
de-duplicate on ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from contracts import (
    FileEvent,
    FileFailed,
    FileStored,
    StoredFileData,
    Topic,
    WebhookBody,
    decode,
    encode,
)

from . import metrics
from .config import ConnectorConfig, Endpoint
from .delivery import EndpointClient, RetryPolicy, deliver
from .presign import Presigner
from .settings import ConnectorSettings

__all__ = ["EndpointConsumer", "serve", "webhook_body"]

_log = structlog.get_logger("fleetgate.connector")

#: While a partition is stuck retrying, what its earlier events delivered is committed this often.
COMMIT_INTERVAL = 1.0
#: How long the main loop waits for records before looking at ``stop`` again.
POLL_MS = 200


def webhook_body(
    event: FileStored | FileFailed, presigner: Presigner, now: datetime | None = None
) -> WebhookBody:
    """The envelope POSTed for ``event``; a stored file gets a fresh presigned URL."""
    if isinstance(event, FileStored):
        url, expires = presigner.url(event.bucket, event.key, now)
        data = StoredFileData.model_validate(
            {**event.model_dump(), "download_url": url, "download_url_expires_at": expires}
        )
        return WebhookBody(type=event.type, timestamp=event.stored_at, data=data)
    return WebhookBody(type=event.type, timestamp=event.failed_at, data=event)


def _why_not_an_event(value: bytes | None) -> str:
    """A record that does not decode as a FileEvent: is it a newer event type, or garbage?"""
    if value is None:
        return "no value"
    try:
        raw: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "not JSON"
    kind = raw.get("type") if isinstance(raw, dict) else None
    if isinstance(kind, str) and kind not in ("file.stored", "file.failed"):
        return f"unknown event type {kind!r}"
    return "not a valid file event"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: EndpointConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.owner.revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        _log.info(
            "partitions_assigned",
            endpoint=self.owner.name,
            partitions=sorted(tp.partition for tp in assigned),
        )


class EndpointConsumer:
    """Delivers ``fleetgate.files.v1`` to one endpoint until ``stop`` is set."""

    def __init__(
        self,
        endpoint: Endpoint,
        settings: ConnectorSettings,
        presigner: Presigner,
        client: EndpointClient | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.settings = settings
        self.presigner = presigner
        self.client = client or EndpointClient(endpoint)
        self.policy = RetryPolicy(settings.retry_initial_seconds, settings.retry_max_seconds)
        self.group = f"{settings.connector_group_prefix}-{endpoint.name}"
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=self.group,
            client_id=f"fleetgate-connector-{endpoint.name}",
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=100,
        )
        self._stop = asyncio.Event()
        #: One task per partition with records in hand (the partition is paused meanwhile).
        self._tasks: dict[TopicPartition, asyncio.Task[None]] = {}
        #: Next offset to commit per partition (the last delivered event's offset + 1).
        self._delivered: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        metrics.init(endpoint.name)

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self.consumer.subscribe([str(Topic.FILES)], listener=_Rebalance(self))
        committer = asyncio.create_task(self._commit_periodically())
        try:
            await self.consumer.start()
            _log.info("endpoint_started", endpoint=self.name, group=self.group)
            while not stop.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=POLL_MS, max_records=self.settings.max_batch
                )
                for tp, records in batch.items():
                    if records:
                        self.consumer.pause(tp)
                        self._tasks[tp] = asyncio.create_task(self._drain(tp, records))
                self._raise_failed_tasks()
        finally:
            await self._shutdown(committer)

    def _raise_failed_tasks(self) -> None:
        for tp, task in list(self._tasks.items()):
            if task.done():
                del self._tasks[tp]
                if not task.cancelled() and (exc := task.exception()) is not None:
                    raise exc

    async def _drain(self, tp: TopicPartition, records: Iterable[Any]) -> None:
        """Deliver ``records`` (one partition, in order), then commit and fetch more."""
        for record in records:
            if not await self._handle(record):
                return  # stopping: commit nothing past what was delivered
            self._delivered[tp] = record.offset + 1
        await self._commit()
        if self._tasks.get(tp) is asyncio.current_task():
            del self._tasks[tp]
        if not self._stop.is_set() and tp in self.consumer.assignment():
            self.consumer.resume(tp)

    async def _handle(self, record: Any) -> bool:
        """Deliver one record; False if stopped before the endpoint took it."""
        try:
            event: FileStored | FileFailed = decode(FileEvent, record.value)
        except (ValidationError, ValueError):
            # Nothing to POST: a newer event type (additive contract change) or garbage.
            self._skip(record, _why_not_an_event(record.value))
            return True

        first: bytes | None = None

        def body() -> bytes:  # a fresh download URL per attempt, however long retries last
            nonlocal first
            if first is not None:
                text, first = first, None
                return text
            return encode(webhook_body(event, self.presigner))

        try:
            first = body()
        except ValueError as exc:  # the event's own fault, e.g. a bucket name S3 refuses
            self._skip(record, f"no webhook body: {exc}", event_id=event.event_id)
            return True
        return await deliver(
            self.client,
            event_id=event.event_id,
            event_type=event.type,
            imei=event.imei,
            body=body,
            policy=self.policy,
            stop=self._stop,
        )

    def _skip(self, record: Any, reason: str, **fields: Any) -> None:
        """Give up on a record that can never become a webhook (not on a failing endpoint).

        The dead-letter work will park these instead.
        """
        metrics.skipped.labels(self.name).inc()
        _log.error(
            "record_skipped",
            endpoint=self.name,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
            **fields,
        )

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        async with self._commit_lock:
            await self._commit_now(only)

    async def _commit_now(self, only: set[TopicPartition] | None = None) -> None:
        assigned = self.consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in self._delivered.items()
            if tp in assigned
            and (only is None or tp in only)
            and self._committed.get(tp, -1) < offset
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # e.g. a rebalance: the next commit carries these offsets
            _log.warning("commit_failed", endpoint=self.name, error=repr(exc))
            return
        for tp, offset in offsets.items():
            self._committed[tp] = max(offset, self._committed.get(tp, -1))

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL)
            await self._commit()

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        """Partitions go to another replica: abandon their deliveries, commit what was done."""
        tasks = [task for tp in revoked if (task := self._tasks.pop(tp, None)) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Not under the commit lock: a periodic commit may be waiting on this very rebalance.
        await self._commit_now(revoked)
        for tp in revoked:
            self._delivered.pop(tp, None)
            self._committed.pop(tp, None)
        if revoked:
            _log.info(
                "partitions_revoked",
                endpoint=self.name,
                partitions=sorted(tp.partition for tp in revoked),
            )

    async def _shutdown(self, committer: asyncio.Task[None]) -> None:
        """Let in-flight POSTs finish for the grace period, commit what was delivered, leave."""
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        try:
            await self._commit()
        finally:
            await self.consumer.stop()
            await self.client.aclose()
            _log.info("endpoint_stopped", endpoint=self.name)


async def serve(settings: ConnectorSettings, config: ConnectorConfig, stop: asyncio.Event) -> None:
    """Deliver to every enabled endpoint until ``stop`` is set; one failing consumer stops all."""
    endpoints = config.enabled
    if not endpoints:
        _log.warning("no_enabled_endpoints")
        await stop.wait()
        return
    presigner = Presigner(settings)
    if not (settings.s3_access_key and settings.s3_secret_key.get_secret_value()):
        _log.warning("no_s3_credentials", note="download URLs are unsigned: public buckets only")
    consumers = [EndpointConsumer(e, settings, presigner) for e in endpoints]
    tasks = [asyncio.create_task(c.run(stop), name=f"endpoint-{c.name}") for c in consumers]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result

"""The faust app of the assembler, and the service around it.

faust runs in-process on our own event loop (``app.start()`` / ``app.stop()``, no
``faust.Worker``): SIGTERM and SIGINT set an event, the app stops, offsets are committed, and
the consumer leaves its group, within a second or two. Settings that suit both Kafka and Tansu
(see ``docs/assembler.md``): no leader topic, no tables (state is rebuilt from Kafka, see
:mod:`assembler.state`), raw (de)serialisers, offsets reset to the earliest record.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import faust
import structlog

from runtime.kafka import faust_app

from . import metrics
from .agents import Assembler, Rewinder
from .health import S3Watch, install
from .settings import AssemblerSettings
from .state import Reassembler
from .storage import ObjectStore

__all__ = ["create_app", "prepare_spool", "serve"]

_log = structlog.get_logger("fleetgate.assembler")


def create_app(settings: AssemblerSettings, datadir: Path) -> faust.App:
    return faust_app(
        settings,
        settings.app_id,
        broker_client_id=settings.app_id,
        store="memory://",
        datadir=str(datadir),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        broker_session_timeout=settings.broker_session_timeout_seconds,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_seconds,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_seconds,
        broker_commit_interval=settings.broker_commit_interval_seconds,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=settings.max_record_bytes,
        producer_acks=-1,
        producer_max_request_size=settings.max_record_bytes,
        topic_disable_leader=True,
        topic_replication_factor=1,
        stream_buffer_maxsize=settings.stream_buffer,
        web_enabled=False,
    )


def _s3_observer(slow_seconds: float) -> Callable[[str, float], None]:
    def observe(operation: str, seconds: float) -> None:
        """Each S3 call as it ends (in the thread that made it)."""
        metrics.s3_request_seconds.labels(operation).observe(seconds)
        if seconds >= slow_seconds:
            _log.warning("s3_slow_done", operation=operation, seconds=round(seconds, 2))

    return observe


def prepare_spool(root: Path) -> Path:
    """This process's spool directory under ``root``; spools of dead processes are removed."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in root.glob("pid-*"):
        try:
            pid = int(entry.name.removeprefix("pid-"))
        except ValueError:
            continue
        if pid == os.getpid() or not _alive(pid):
            shutil.rmtree(entry, ignore_errors=True)
    mine = root / f"pid-{os.getpid()}"
    mine.mkdir()
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _ensure_bucket(store: ObjectStore, stop: asyncio.Event, retry_max: float) -> bool:
    """Create the bucket if missing, retrying while S3 is unreachable; False if stopped."""
    delay = 0.2
    while not stop.is_set():
        try:
            if await store.ensure_bucket():
                _log.info("bucket_created", bucket=store.bucket)
            return True
        except Exception as exc:
            _log.warning("s3_error", operation="ensure_bucket", retry_in=delay, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, retry_max)
    return False


async def _start(app: faust.App, stop: asyncio.Event) -> bool:
    """Start the app (it returns once the group is joined) unless ``stop`` comes first."""
    starting = asyncio.ensure_future(app.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if starting.done():
        starting.result()
        return not stop.is_set()
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    return False


async def serve(
    settings: AssemblerSettings,
    stop: asyncio.Event,
    on_started: Callable[[], None] = lambda: None,
) -> int:
    """Run until ``stop`` is set (exit status 0), or faust fails to start or crashes (1).
    ``on_started`` is called once the consumer group is joined (readiness)."""
    spool = prepare_spool(settings.spool_dir)
    watch = S3Watch(settings.s3_slow_seconds, observe=_s3_observer(settings.s3_slow_seconds))
    install(watch)  # health.s3_ready() now reports on this process's S3
    store = ObjectStore(settings, watch)
    app = create_app(settings, spool / "faust")
    assembler = Assembler(
        app,
        settings,
        store,
        Reassembler(
            spool / "files",
            remember=settings.remember_transfers,
            max_file_bytes=settings.max_file_bytes,
        ),
        Rewinder(settings),
        watch,
    )
    # S3 calls are watched from the start (the bucket check too), not only once faust runs.
    watching = asyncio.create_task(_watch_s3(assembler, stop), name="watch S3")
    try:
        if not await _ensure_bucket(store, stop, settings.s3_retry_max_seconds):
            return 0
        assembler.attach()
        _log.info(
            "assembler_starting",
            group=settings.app_id,
            kafka=settings.kafka_bootstrap,
            s3=settings.s3_host,
            bucket=settings.s3_bucket,
            spool=str(spool),
        )
        status = 0
        try:
            if await _start(app, stop):
                _log.info("assembler_started")
                on_started()
                while not stop.is_set() and not app.should_stop:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
                if app.crashed:
                    status = 1
                    _log.error("assembler_crashed", reason=repr(app.crash_reason))
        except Exception as exc:  # Kafka unreachable at start, mostly: let the pod restart
            status = 1
            _log.error("assembler_start_failed", error=repr(exc))
        finally:
            await assembler.drain(settings.drain_timeout_seconds)  # before faust commits and stops
            await app.stop()
            await assembler.close()
        _log.info("assembler_stopped", status=status)
        return status
    finally:
        watching.cancel()
        shutil.rmtree(spool, ignore_errors=True)


async def _watch_s3(assembler: Assembler, stop: asyncio.Event) -> None:
    """Every second: log S3 calls in flight for too long, and readiness changes."""
    while not stop.is_set():
        assembler.check_s3()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)

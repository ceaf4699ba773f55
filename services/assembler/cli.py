"""``fleetgate assembler``: reassemble camera files from Kafka and store them in S3."""

from __future__ import annotations

import argparse
import asyncio
import logging

from runtime import configure_logging, start_metrics_server, stop_on_signals
from runtime.cli import add_settings_arguments, settings_from_args
from runtime.kafka import client_kwargs
from runtime.lag import LagMonitor, start_lag_monitors
from runtime.metrics import Check, Readiness, kafka_check

from .settings import AssemblerSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, AssemblerSettings)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(AssemblerSettings, args)
    configure_logging(settings.log_level, settings.log_json)
    # urllib3 warns of each retry inside one S3 attempt; the assembler logs failed attempts.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    readiness = Readiness("assembler")
    readiness.add("kafka", kafka_check(client_kwargs(settings)))
    readiness.add("s3", s3_check(settings))
    start_metrics_server(settings.metrics_host, settings.metrics_port, readiness)

    from .app import serve  # faust is imported only when the service runs

    async def main() -> int:
        stop = asyncio.Event()
        stop_on_signals(stop)
        tasks = [
            asyncio.create_task(readiness.watch()),
            *start_lag_monitors([lag_monitor(settings)]),
        ]
        try:
            return await serve(settings, stop, on_started=readiness.started)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(main())


def lag_monitor(settings: AssemblerSettings) -> LagMonitor:
    """The lag of the assembler's group on the chunk topic."""
    from contracts import Topic

    return LagMonitor(
        settings.kafka_bootstrap,
        settings.app_id,
        [str(Topic.CHUNKS)],
        interval=settings.lag_interval_seconds,
        client_kwargs=client_kwargs(settings),
    )


def s3_check(settings: AssemblerSettings) -> Check:
    """Ready while the bucket answers (a missing bucket is created at start)."""
    from minio.error import MinioException
    from urllib3.exceptions import HTTPError

    from .storage import ObjectStore

    store = ObjectStore(settings.model_copy(update={"s3_timeout": 3.0}))

    def check() -> str | None:
        try:
            if store.client.bucket_exists(store.bucket):
                return None
            return f"S3 bucket {store.bucket!r} does not exist"
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            return f"S3 at {settings.s3_host} unreachable or refusing: {exc!r}"

    return check

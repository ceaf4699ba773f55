"""``fleetgate ingestor``: terminate camera TCP sessions and publish them to Kafka."""

from __future__ import annotations

import argparse
import asyncio

from runtime import configure_logging, start_metrics_server, stop_on_signals
from runtime.cli import add_settings_arguments, settings_from_args
from runtime.metrics import Readiness, tcp_check

from .server import serve
from .settings import IngestorSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, IngestorSettings)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(IngestorSettings, args)
    configure_logging(settings.log_level, settings.log_json)
    readiness = Readiness("ingestor")
    readiness.add("kafka", tcp_check("Kafka", settings.kafka_bootstrap.split(",")))
    start_metrics_server(settings.metrics_host, settings.metrics_port, readiness)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve(settings, stop, readiness)

    asyncio.run(main())
    return 0

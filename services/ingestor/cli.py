"""``fleetgate ingestor``: host the device protocols and publish what devices send to Kafka."""

from __future__ import annotations

import argparse
import asyncio
import gc

from runtime import configure_logging, start_metrics_server, stop_on_signals
from runtime.cli import add_settings_arguments, settings_from_args
from runtime.kafka import client_kwargs
from runtime.metrics import Readiness, kafka_check

from .oem import HttpSettings
from .protocols import PROTOCOLS
from .server import serve
from .settings import IngestorSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, IngestorSettings)
    for name, protocol in PROTOCOLS.items():
        add_settings_arguments(
            parser,
            protocol.settings_class,
            prefix=f"{name}_",
            title=f"{name} listener (command line or environment)",
        )
    add_settings_arguments(
        parser,
        HttpSettings,
        prefix="http_",
        title="OEM JSON HTTP intake, POST /digitalmatter/oem (command line or environment)",
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(IngestorSettings, args)
    listeners = {
        name: settings_from_args(protocol.settings_class, args, prefix=f"{name}_")
        for name, protocol in PROTOCOLS.items()
    }
    http = settings_from_args(HttpSettings, args, prefix="http_")
    configure_logging(settings.log_level, settings.log_json)
    readiness = Readiness("ingestor")
    readiness.add("kafka", kafka_check(client_kwargs(settings)))
    start_metrics_server(settings.metrics_host, settings.metrics_port, readiness)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve(settings, stop, listeners, readiness, http)

    tune_gc()
    asyncio.run(main())
    return 0


def tune_gc() -> None:
    """Collect cycles less often than CPython's default (every 700 allocations): every record
    allocates dozens of short-lived objects, and records in flight (decoded, their futures)
    survive young collections, so the default spent about a fifth of the ingestor's CPU on
    full collections under load. What was loaded at start (modules, models) is frozen out of
    them; cycles are still collected, in steps small enough that a young collection stays a
    few milliseconds (commit latency)."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)

"""``fleetgate assembler``: reassemble camera files from Kafka and store them in S3."""

from __future__ import annotations

import argparse
import asyncio
import logging

from runtime import configure_logging, start_metrics_server, stop_on_signals
from runtime.cli import add_settings_arguments, settings_from_args

from .settings import AssemblerSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, AssemblerSettings)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(AssemblerSettings, args)
    configure_logging(settings.log_level, settings.log_json)
    # urllib3 warns of each retry inside one S3 attempt; the assembler logs failed attempts.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    start_metrics_server(settings.metrics_host, settings.metrics_port)

    from .app import serve  # faust is imported only when the service runs

    async def main() -> int:
        stop = asyncio.Event()
        stop_on_signals(stop)
        return await serve(settings, stop)

    return asyncio.run(main())

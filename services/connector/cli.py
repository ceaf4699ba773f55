"""``fleetgate connector``: deliver file events from Kafka to webhook endpoints."""

from __future__ import annotations

import argparse
import asyncio
import sys

import structlog

from runtime import configure_logging, start_metrics_server, stop_on_signals
from runtime.cli import add_settings_arguments, settings_from_args

from .config import ConfigError, load_config
from .consumer import serve
from .settings import ConnectorSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, ConnectorSettings)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(ConnectorSettings, args)
    configure_logging(settings.log_level, settings.log_json)
    if settings.connector_config is None:
        print(
            "fleetgate connector: error: no endpoint config "
            "(--connector-config or FLEETGATE_CONNECTOR_CONFIG)",
            file=sys.stderr,
        )
        return 2
    try:
        config = load_config(settings.connector_config)
    except ConfigError as exc:
        print(f"fleetgate connector: config error: {exc}", file=sys.stderr)
        return 2
    start_metrics_server(settings.metrics_host, settings.metrics_port)
    structlog.get_logger("fleetgate.connector").info(
        "starting",
        config=str(settings.connector_config),
        endpoints=[e.name for e in config.enabled],
        disabled=[e.name for e in config.endpoints if not e.enabled],
    )

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve(settings, config, stop)

    asyncio.run(main())
    return 0

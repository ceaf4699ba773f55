"""``fleetgate connector``: deliver file events from Kafka to webhook endpoints.

``fleetgate connector replay --endpoint NAME (--dead-letters | --since TIME)`` delivers dead
letters, or every event since a time, to one endpoint again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

import structlog

from contracts import Topic
from runtime import configure_logging, start_metrics_server, stop_on_signals
from runtime.cli import add_settings_arguments, settings_from_args
from runtime.kafka import client_kwargs
from runtime.lag import LagMonitor, start_lag_monitors
from runtime.metrics import Readiness, kafka_check

from .config import ConfigError, ConnectorConfig, load_config
from .consumer import serve
from .forward.replay import replay_forward
from .replay import replay
from .settings import ConnectorSettings


def _time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-11-20T12:00:00Z)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, ConnectorSettings)
    actions = parser.add_subparsers(dest="connector_action", metavar="ACTION", title="actions")
    again = actions.add_parser(
        "replay",
        help="deliver dead letters, or every event since a time, to one endpoint again",
        description="Deliver dead letters (--dead-letters), or every event that arrived since "
        "a time (--since), to one endpoint of the config again: signed, with the same "
        "webhook-id, a few attempts each. Prints the counts; exit status 1 if any failed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    again.add_argument("--endpoint", required=True, help="the endpoint's name in the config")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--dead-letters",
        action="store_true",
        help="the endpoint's dead letters not yet delivered by an earlier replay",
    )
    which.add_argument(
        "--since",
        type=_time,
        metavar="TIME",
        help="every event that entered fleetgate.files.v1 at or after TIME (ISO 8601; UTC "
        "if no offset) and passes the endpoint's filter",
    )
    again.add_argument(
        "--until", type=_time, metavar="TIME", default=None, help="with --since: before TIME"
    )
    again.add_argument(
        "--attempts", type=int, default=3, help="attempts per event before it counts as failed"
    )
    add_settings_arguments(again, ConnectorSettings)


def _load(settings: ConnectorSettings) -> ConnectorConfig | None:
    if settings.connector_config is None:
        print(
            "fleetgate connector: error: no endpoint config "
            "(--connector-config or FLEETGATE_CONNECTOR_CONFIG)",
            file=sys.stderr,
        )
        return None
    try:
        return load_config(settings.connector_config)
    except ConfigError as exc:
        print(f"fleetgate connector: config error: {exc}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(ConnectorSettings, args)
    configure_logging(settings.log_level, settings.log_json)
    config = _load(settings)
    if config is None:
        return 2
    if getattr(args, "connector_action", None) == "replay":
        return _replay(args, settings, config)
    readiness = Readiness("connector")
    readiness.add("kafka", kafka_check(client_kwargs(settings)))
    start_metrics_server(settings.metrics_host, settings.metrics_port, readiness)
    structlog.get_logger("fleetgate.connector").info(
        "starting",
        config=str(settings.connector_config),
        endpoints=[e.name for e in config.enabled],
        disabled=[e.name for e in config.endpoints if not e.enabled],
    )

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        readiness.started()  # from here on, ready is: Kafka reachable
        tasks = [
            asyncio.create_task(readiness.watch()),
            *start_lag_monitors(lag_monitors(settings, config)),
        ]
        try:
            await serve(settings, config, stop)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    return 0


def lag_monitors(settings: ConnectorSettings, config: ConnectorConfig) -> list[LagMonitor]:
    """One per enabled endpoint: its group on the files topic and the retry tiers (a raw
    TCP forwarding endpoint: on the Digital Matter raw topic)."""
    topics = [str(Topic.FILES), *config.retry.topics]
    return [
        LagMonitor(
            settings.kafka_bootstrap,
            f"{settings.connector_group_prefix}-{e.name}",
            [str(Topic.DMT_RAW)] if e.forwards else topics,
            interval=settings.lag_interval_seconds,
            client_kwargs=client_kwargs(settings),
        )
        for e in config.enabled
    ]


def _replay(args: argparse.Namespace, settings: ConnectorSettings, config: ConnectorConfig) -> int:
    endpoint = config.endpoint(args.endpoint)
    if endpoint is None:
        names = ", ".join(e.name for e in config.endpoints)
        print(
            f"fleetgate connector replay: no endpoint {args.endpoint!r} in the config "
            f"(there are: {names})",
            file=sys.stderr,
        )
        return 2
    if args.until is not None and args.since is None:
        print("fleetgate connector replay: --until needs --since", file=sys.stderr)
        return 2
    if args.attempts < 1:
        print("fleetgate connector replay: --attempts must be at least 1", file=sys.stderr)
        return 2
    if endpoint.forwards:  # raw TCP forwarding: the records' own bytes, per device in order
        report = asyncio.run(
            replay_forward(
                settings,
                config,
                endpoint,
                since=args.since,
                until=args.until,
                attempts=args.attempts,
            )
        )
    else:
        report = asyncio.run(
            replay(
                settings,
                config,
                args.endpoint,
                since=args.since,
                until=args.until,
                attempts=args.attempts,
            )
        )
    print(report.summary())
    for failure in report.failures:
        print(f"  failed: {failure}")
    return 0 if report.ok else 1

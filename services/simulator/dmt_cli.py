"""``fleetgate simulate --protocol dmt``: simulated Digital Matter trackers against a server.

The arguments and the run of the Digital Matter simulator (:mod:`simulator.dmt`). Each device's
outcome and a summary (or, with ``--json``, the whole report) go to stdout at the end. The exit
status is 0 when every record of every device was committed, 1 when any was not, 2 for bad
settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from .dmt import DmtFleetReport, DmtSimulationConfig, simulate_dmt

__all__ = ["add_arguments", "config_from_args", "print_report", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every setting of the Digital Matter simulator to ``parser``."""
    target = parser.add_argument_group("target")
    target.add_argument("--host", default="127.0.0.1", help="server host")
    target.add_argument("--port", type=int, required=True, help="server's Digital Matter port")

    fleet = parser.add_argument_group("fleet")
    fleet.add_argument("--devices", type=int, default=10, help="trackers to simulate")
    fleet.add_argument("--records", type=int, default=100, help="records each tracker logs")
    fleet.add_argument(
        "--rate", type=float, default=0.0, help="records per second per tracker (0: all at once)"
    )
    fleet.add_argument("--records-per-message", type=int, default=16)
    fleet.add_argument("--records-per-commit", type=int, default=64)
    fleet.add_argument("--seed", type=int, default=0, help="seeds IMEIs, positions and garbage")
    fleet.add_argument("--concurrency", type=int, default=0, help="connected at once (0: all)")
    fleet.add_argument(
        "--no-async-session",
        action="store_true",
        help="do not end uploads with an async session request (0x22)",
    )

    faults = parser.add_argument_group("faults (any combination)")
    faults.add_argument(
        "--disconnect-before-commit",
        type=int,
        default=0,
        metavar="N",
        help="each tracker hangs up N times right after a commit request (it must resend)",
    )
    faults.add_argument(
        "--garbage", action="store_true", help="each tracker sends random bytes once"
    )
    faults.add_argument(
        "--slow", type=int, default=0, metavar="BYTES_PER_S", help="pace each tracker's writes"
    )

    limits = parser.add_argument_group("limits")
    limits.add_argument("--timeout-seconds", type=float, default=300.0, help="the whole run")
    limits.add_argument("--io-timeout-seconds", type=float, default=30.0)
    limits.add_argument("--max-reconnects", type=int, default=5)
    limits.add_argument("--reconnect-backoff-seconds", type=float, default=0.1)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def config_from_args(args: argparse.Namespace) -> DmtSimulationConfig:
    """The run ``args`` describe; ValueError if the settings don't fit together."""
    return DmtSimulationConfig(
        host=args.host,
        port=args.port,
        devices=args.devices,
        records=args.records,
        rate=args.rate,
        records_per_message=args.records_per_message,
        records_per_commit=args.records_per_commit,
        seed=args.seed,
        concurrency=args.concurrency,
        async_session=not args.no_async_session,
        disconnect_before_commit=args.disconnect_before_commit,
        garbage=args.garbage,
        link_bytes_per_second=args.slow,
        timeout_seconds=args.timeout_seconds,
        io_timeout_seconds=args.io_timeout_seconds,
        max_reconnects=args.max_reconnects,
        reconnect_backoff_seconds=args.reconnect_backoff_seconds,
    )


def print_report(report: DmtFleetReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    for device in report.devices:
        state = "ok" if device.ok else "FAILED"
        print(
            f"{device.imei} {state}: {device.committed}/{device.records} committed, "
            f"{device.resent} resent, {device.connections} connections"
        )
        for error in device.errors:
            print(f"    error: {error}")
    print(report.summary())


def run(args: argparse.Namespace) -> int:
    """Run the trackers; 0 if every record was committed, 1 if not, 2 for bad settings."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"fleetgate simulate: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"simulate: {config.devices} Digital Matter trackers -> {config.host}:{config.port}",
        file=sys.stderr,
        flush=True,
    )
    try:
        report = asyncio.run(simulate_dmt(config))
    except KeyboardInterrupt:
        print("fleetgate simulate: interrupted", file=sys.stderr)
        return 130
    print_report(report, args.json)
    return 0 if report.ok else 1

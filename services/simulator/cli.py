"""``fleetgate simulate``: a fleet of simulated cameras (or, with ``--protocol dmt``, Digital
Matter trackers, :mod:`simulator.dmt`) against an ingestor.

Progress goes to stderr once a second; each device's outcome and a summary (or, with
``--json``, the whole report) go to stdout at the end. The exit status is 0 when every file
of every device was accepted, 1 when any was not, 2 for bad settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys

from .content import ContentSpec
from .dmt import DmtSimulationConfig, simulate_dmt
from .dmt_cli import print_report as print_dmt_report
from .faults import FailurePath, Faults
from .fleet import DEFAULT_PORT, Fleet, FleetReport, SimulationConfig

#: The Digital Matter listener's default port (``FLEETGATE_DMT_PORT``).
DMT_PORT = 5233

__all__ = ["add_arguments", "config_from_args", "parse_size", "run"]

_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmg]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """``"50K"`` -> 51200: bytes, with an optional K, M or G suffix (powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1000, 50K, 6M, 1.5G)")
    return int(float(match["number"]) * _UNITS[match["unit"].lower()])


def _rate(text: str) -> int:
    rate = parse_size(text)
    if rate <= 0:
        raise argparse.ArgumentTypeError("the rate must be positive")
    return rate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every setting of ``simulate`` to its subparser."""
    target = parser.add_argument_group("target")
    target.add_argument(
        "--protocol",
        choices=("camera", "dmt"),
        default="camera",
        help="Teltonika cameras, or Digital Matter trackers (dmt: see the 'Digital Matter' "
        "options; of the others, --host, --port, --devices, --seed, --concurrency, --garbage, "
        "--slow, the timing options and --json apply)",
    )
    target.add_argument("--host", default="127.0.0.1", help="ingestor host")
    target.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"ingestor port (default: camera {DEFAULT_PORT}, dmt {DMT_PORT})",
    )

    fleet = parser.add_argument_group("fleet")
    fleet.add_argument("--devices", type=int, default=10, help="devices to simulate")
    fleet.add_argument(
        "--dualcam-ratio",
        type=float,
        default=0.5,
        help="share of DualCam cameras (0..1); the rest are DSM",
    )
    fleet.add_argument("--photos", type=int, default=1, help="photos per device")
    fleet.add_argument("--videos", type=int, default=1, help="videos per device")
    fleet.add_argument(
        "--photo-size", type=parse_size, default="50K", help="bytes per photo (K, M, G suffixes)"
    )
    fleet.add_argument(
        "--video-size", type=parse_size, default="6M", help="bytes per video (K, M, G suffixes)"
    )
    fleet.add_argument(
        "--seed", type=int, default=0, help="seeds content, IMEIs and random fault choices"
    )
    fleet.add_argument(
        "--concurrency", type=int, default=0, help="devices connected at once (0: all)"
    )

    faults = parser.add_argument_group("faults (any combination)")
    faults.add_argument(
        "--bad-crc-at",
        type=int,
        metavar="K",
        default=None,
        help="send DATA packet K (1-based) of every file once with a wrong CRC",
    )
    faults.add_argument(
        "--disconnect-at",
        type=int,
        metavar="K",
        default=None,
        help="drop a connection after its K-th DATA packet, then reconnect and resume",
    )
    faults.add_argument(
        "--disconnects",
        type=int,
        default=1,
        help="how many connections of each device --disconnect-at drops",
    )
    faults.add_argument(
        "--garbage",
        type=int,
        nargs="?",
        const=8,
        metavar="K",
        default=None,
        help="after K DATA packets (8 if K is left out) send random bytes instead of a command"
        " once; the server should close the session and the device reconnects",
    )
    faults.add_argument(
        "--slow",
        type=_rate,
        metavar="BYTES_PER_S",
        default=None,
        help="limit each device's link to this many bytes per second (K, M suffixes)",
    )
    faults.add_argument(
        "--split",
        action="store_true",
        help="split and merge TCP writes at random (seeded)",
    )
    faults.add_argument(
        "--restart-crc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the CRC chain at 0 after a RESUME (else continue it over the resumed bytes)",
    )

    faults.add_argument(
        "--fail",
        action="append",
        type=FailurePath,
        choices=list(FailurePath),
        metavar="PATH",
        default=[],
        help="a failure path of real cameras to play (repeatable): "
        + ", ".join(path.value for path in FailurePath)
        + "; the server must end each such session itself and every real file still arrive",
    )
    faults.add_argument(
        "--fail-devices",
        type=int,
        metavar="N",
        default=1,
        help="how many devices (the first N) play the --fail paths; the others upload cleanly",
    )

    dmt = parser.add_argument_group("Digital Matter (--protocol dmt)")
    dmt.add_argument("--records", type=int, default=100, help="records each tracker logs")
    dmt.add_argument(
        "--rate", type=float, default=0.0, help="records per second per tracker (0: all at once)"
    )
    dmt.add_argument("--records-per-message", type=int, default=16, help="records per message")
    dmt.add_argument(
        "--records-per-commit", type=int, default=64, help="records per commit request"
    )
    dmt.add_argument(
        "--disconnect-before-commit",
        type=int,
        default=0,
        metavar="N",
        help="each tracker hangs up N times right after a commit request, before the reply "
        "(it must send those records again)",
    )
    dmt.add_argument(
        "--no-async-session",
        action="store_true",
        help="do not end uploads with an async session request (0x22)",
    )

    timing = parser.add_argument_group("timing")
    timing.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole run")
    timing.add_argument(
        "--io-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the server on a connection before dropping it",
    )
    timing.add_argument(
        "--max-reconnects",
        type=int,
        default=5,
        help="failed connections in a row before a device gives up",
    )
    timing.add_argument(
        "--reconnect-backoff", type=float, default=0.1, help="seconds to wait before reconnecting"
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--json", action="store_true", help="print the report as JSON instead of text"
    )
    output.add_argument(
        "--progress-interval",
        type=float,
        default=1.0,
        help="seconds between progress lines on stderr (0: none)",
    )


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    """The run ``args`` describe; ValueError if the settings don't fit together."""
    return SimulationConfig(
        host=args.host,
        port=args.port or DEFAULT_PORT,
        devices=args.devices,
        dualcam_ratio=args.dualcam_ratio,
        content=ContentSpec(
            photos=args.photos,
            videos=args.videos,
            photo_size=args.photo_size,
            video_size=args.video_size,
        ),
        faults=Faults(
            bad_crc_at=args.bad_crc_at,
            disconnect_at=args.disconnect_at,
            disconnects=args.disconnects,
            garbage_at=args.garbage,
            slow=None if args.slow is None else float(args.slow),
            split=args.split,
            restart_crc_after_resume=args.restart_crc,
            fail=tuple(args.fail),
            fail_devices=args.fail_devices,
        ),
        seed=args.seed,
        timeout=args.timeout,
        max_reconnects=args.max_reconnects,
        reconnect_backoff=args.reconnect_backoff,
        io_timeout=args.io_timeout,
        concurrency=args.concurrency,
    )


async def _simulate(config: SimulationConfig, interval: float) -> FleetReport:
    fleet = Fleet(config)

    async def report_progress() -> None:
        while True:
            await asyncio.sleep(interval)
            print(f"simulate: {fleet.progress().line()}", file=sys.stderr, flush=True)

    if interval <= 0:
        return await fleet.run()
    progress = asyncio.create_task(report_progress())
    try:
        return await fleet.run()
    finally:
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await progress


def dmt_config_from_args(args: argparse.Namespace) -> DmtSimulationConfig:
    """The Digital Matter run ``args`` describe; ValueError if the settings don't fit."""
    return DmtSimulationConfig(
        host=args.host,
        port=args.port or DMT_PORT,
        devices=args.devices,
        records=args.records,
        rate=args.rate,
        records_per_message=args.records_per_message,
        records_per_commit=args.records_per_commit,
        seed=args.seed,
        concurrency=args.concurrency,
        async_session=not args.no_async_session,
        disconnect_before_commit=args.disconnect_before_commit,
        garbage=args.garbage is not None,
        link_bytes_per_second=args.slow or 0,
        timeout_seconds=args.timeout,
        io_timeout_seconds=args.io_timeout,
        max_reconnects=args.max_reconnects,
        reconnect_backoff_seconds=args.reconnect_backoff,
    )


def run_dmt(args: argparse.Namespace) -> int:
    """Run the trackers; 0 if every record was committed, 1 if not, 2 for bad settings."""
    try:
        config = dmt_config_from_args(args)
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
    print_dmt_report(report, args.json)
    if not report.ok:
        print(
            f"fleetgate simulate: FAILED: not every record was committed ({report.summary()})",
            file=sys.stderr,
        )
    return 0 if report.ok else 1


def run(args: argparse.Namespace) -> int:
    """Run the fleet; 0 if every file was accepted, 1 if not, 2 for bad settings."""
    if args.protocol == "dmt":
        return run_dmt(args)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"fleetgate simulate: error: {exc}", file=sys.stderr)
        return 2
    target = f"{config.host}:{config.port}"
    print(
        f"simulate: {config.devices} devices -> {target},"
        f" faults: {', '.join(config.faults.active) or 'none'}",
        file=sys.stderr,
        flush=True,
    )
    try:
        report = asyncio.run(_simulate(config, args.progress_interval))
    except KeyboardInterrupt:
        print("fleetgate simulate: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for outcome in report.outcomes:
            print(outcome.line())
            for error in outcome.errors:
                print(f"    error: {error}")
            if outcome.errors_dropped:
                print(f"    ... and {outcome.errors_dropped} more errors")
        print(report.summary())
    if report.ok:
        return 0
    failed = report.failed
    errors = next((outcome.errors for outcome in failed if outcome.errors), ["no error recorded"])
    first = errors[0] if len(errors) == 1 else f"{errors[0]}; {errors[-1]}"
    print(
        f"fleetgate simulate: FAILED: {len(failed)} of {len(report.outcomes)} devices did not"
        f" get every file accepted by {target} (e.g. device {failed[0].imei}: {first})",
        file=sys.stderr,
    )
    return 1

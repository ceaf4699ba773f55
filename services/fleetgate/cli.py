"""The ``fleetgate`` command: one console script, one subcommand per service.

Subcommands live in the :data:`SUBCOMMANDS` table. Each entry names a module and two functions
in it, given as ``"module:function"`` strings so that nothing is imported until that
subcommand runs (``fleetgate --help`` stays fast and works while a service is missing):

``add_arguments(parser: argparse.ArgumentParser) -> None``
    Adds every setting of the subcommand to its own subparser, each with ``help=`` and a
    default, so ``fleetgate <subcommand> --help`` lists them all (defaults are shown).
``run(args: argparse.Namespace) -> int | None``
    Does the work; the return value is the exit status (``None`` means 0).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import cast

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Subcommand:
    """One row of the subcommand table.

    help: one line shown in ``fleetgate --help`` (known without importing anything).
    add_arguments: ``"module:function"`` that adds the subcommand's settings to its subparser.
    run: ``"module:function"`` that runs the subcommand with the parsed arguments.
    """

    help: str
    add_arguments: str
    run: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "ingestor": Subcommand(
        help="Host the device protocols (cameras, Digital Matter) and publish what devices "
        "send to Kafka.",
        add_arguments="ingestor.cli:add_arguments",
        run="ingestor.cli:run",
    ),
    "assembler": Subcommand(
        help="Reassemble camera files from Kafka, verify them and store them in S3.",
        add_arguments="assembler.cli:add_arguments",
        run="assembler.cli:run",
    ),
    "devstack": Subcommand(
        help="Run the whole pipeline on an embedded broker and S3 server (make run).",
        add_arguments="devstack.cli:add_arguments",
        run="devstack.cli:run",
    ),
    "simulate": Subcommand(
        help="Simulate Teltonika cameras (or Digital Matter trackers) talking to an ingestor.",
        add_arguments="simulator.cli:add_arguments",
        run="simulator.cli:run",
    ),
    "connector": Subcommand(
        help="Deliver file events from Kafka to HTTP endpoints as JSON webhooks.",
        add_arguments="connector.cli:add_arguments",
        run="connector.cli:run",
    ),
    "devices": Subcommand(
        help="List the device registry (every device seen, its last status) from Kafka.",
        add_arguments="fleetgate.devices:add_arguments",
        run="fleetgate.devices:run",
    ),
    "webhook-sink": Subcommand(
        help="Receive webhooks and print each as a JSON line (for local runs and tests).",
        add_arguments="connector.sink:add_arguments",
        run="connector.sink:run",
    ),
}


class SubcommandUnavailable(Exception):
    """The module or function a subcommand points at cannot be loaded."""


def _load(command: str, target: str) -> object:
    """Import ``"module:function"`` for ``command``, turning a missing piece into a clear error."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only "the subcommand's own module is absent" is reported tersely; a missing
        # dependency *inside* that module is a real bug and keeps its traceback.
        missing = exc.name or ""
        if module_name != missing and not module_name.startswith(missing + "."):
            raise
        raise SubcommandUnavailable(
            f"subcommand {command!r} is not available: module {module_name!r} is not installed"
            f" ({exc})"
        ) from exc
    try:
        function: object = getattr(module, attr)
    except AttributeError as exc:
        raise SubcommandUnavailable(
            f"subcommand {command!r} is not available: {module_name!r} has no {attr!r}"
        ) from exc
    return function


def _selected(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line, if any (top-level options take no values)."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in SUBCOMMANDS else None
    return None


def _version() -> str:
    try:
        return version("fleetgate")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only the subcommand named by ``load`` gets its settings added."""
    parser = argparse.ArgumentParser(
        prog="fleetgate",
        description="Gateway from telematics devices to Kafka, S3-compatible storage and "
        "JSON webhooks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    commands.required = True
    for name, spec in SUBCOMMANDS.items():
        sub = commands.add_parser(
            name,
            help=spec.help,
            description=spec.help,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        if name == load:
            add_arguments = cast(AddArguments, _load(name, spec.add_arguments))
            add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fleetgate`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = _selected(args)
    try:
        parser = build_parser(load=command)
        namespace = parser.parse_args(args)
        run = cast(Run, _load(namespace.command, SUBCOMMANDS[namespace.command].run))
    except SubcommandUnavailable as exc:
        print(f"fleetgate: error: {exc}", file=sys.stderr)
        return 2
    status = run(namespace)
    return 0 if status is None else status

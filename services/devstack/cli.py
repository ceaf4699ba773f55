"""``fleetgate devstack``: run the pipeline on an embedded broker and S3 server (``make run``)."""

from __future__ import annotations

import argparse

from runtime.cli import add_settings_arguments, settings_from_args

from .stack import DevstackSettings, main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, DevstackSettings)


def run(args: argparse.Namespace) -> int:
    return main(settings_from_args(DevstackSettings, args))

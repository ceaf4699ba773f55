"""The report of ``fleetgate simulate --protocol dmt`` (its arguments and run are in
:mod:`simulator.cli`): each device's outcome and a summary, or with ``--json`` the whole report.
"""

from __future__ import annotations

import json

from .dmt import DmtFleetReport

__all__ = ["print_report"]


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

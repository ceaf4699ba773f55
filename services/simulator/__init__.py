"""Device simulator: a fleet of Teltonika cameras (DualCam, DSM) uploading files over TCP.

Built on the device role of :mod:`camproto`; faults (bad CRCs, disconnects, garbage, slow or
fragmented links) are injected on demand. :func:`simulate` runs a fleet and returns a
:class:`FleetReport`; ``fleetgate simulate`` is the command line (:mod:`simulator.cli`).
"""

from .content import ContentSpec, DeviceKind, DevicePlan, plan_fleet
from .faults import Faults
from .fleet import (
    DEFAULT_PORT,
    DeviceOutcome,
    Fleet,
    FleetReport,
    Progress,
    SimulatedDevice,
    SimulationConfig,
    simulate,
)

__all__ = [
    "DEFAULT_PORT",
    "ContentSpec",
    "DeviceKind",
    "DeviceOutcome",
    "DevicePlan",
    "Faults",
    "Fleet",
    "FleetReport",
    "Progress",
    "SimulatedDevice",
    "SimulationConfig",
    "plan_fleet",
    "simulate",
]

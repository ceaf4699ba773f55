"""Service plumbing shared by the fleetgate services: settings base, logging, metrics, signals.

It knows nothing of topics, protocols, buckets or HTTP endpoints (only where S3 is); a helper
only one service needs lives in that service.
"""

from .lifecycle import stop_on_signals
from .logs import configure_logging
from .metrics import start_metrics_server
from .settings import CommonSettings, S3Settings

__all__ = [
    "CommonSettings",
    "S3Settings",
    "configure_logging",
    "start_metrics_server",
    "stop_on_signals",
]

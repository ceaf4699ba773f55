"""Service plumbing shared by the fleetgate services: settings base, logging, metrics, signals.

It knows nothing of topics, protocols, S3 or HTTP endpoints; a helper only one service needs
lives in that service.
"""

from .lifecycle import stop_on_signals
from .logs import configure_logging
from .metrics import start_metrics_server
from .settings import CommonSettings

__all__ = ["CommonSettings", "configure_logging", "start_metrics_server", "stop_on_signals"]

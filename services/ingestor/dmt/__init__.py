"""The Digital Matter adapter: telemetry records over ``dmtproto`` into ``fleetgate.records.v1``.

Digital Matter concerns only: records decoded to the shared telemetry layout and published
with their raw message, the device registry, session events, and the commit reply sent only
once Kafka acknowledged every record before it (:mod:`.session`). Sockets, limits, the read
loop, the Kafka sink and the drain are the edge's (:mod:`ingestor`).
"""

from .protocol import DmtProtocol
from .settings import DmtSettings

__all__ = ["DmtProtocol", "DmtSettings"]

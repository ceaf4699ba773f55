"""The Teltonika camera adapter: file transfers over ``camproto`` into the chunk topic.

Camera concerns only: transfer records and their coalescing into chunk records
(:mod:`.session`), durable progress and resume points (:mod:`.progress`, :mod:`.resume`),
protocol events to contract models (:mod:`.convert`). Sockets, limits, the read loop, the
Kafka sink and the drain are the edge's (:mod:`ingestor`).
"""

from .protocol import CameraProtocol
from .settings import CameraSettings

__all__ = ["CameraProtocol", "CameraSettings"]

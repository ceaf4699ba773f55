"""The protocols the ingestor hosts: one line each (see docs/adding-a-protocol.md)."""

from __future__ import annotations

from .adapter import Protocol
from .camera import CameraProtocol
from .dmt import DmtProtocol

__all__ = ["PROTOCOLS"]

#: name -> the protocol's :class:`~ingestor.adapter.Protocol`; its settings are read from
#: ``FLEETGATE_<NAME>_*`` and its listener runs unless ``FLEETGATE_<NAME>_ENABLED=false``.
PROTOCOLS: dict[str, type[Protocol]] = {
    CameraProtocol.name: CameraProtocol,
    DmtProtocol.name: DmtProtocol,
}

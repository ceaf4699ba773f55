"""The OEM JSON intake: Digital Matter's OEM Server POSTs device records to the ingestor.

An HTTP listener (aiohttp) on ``FLEETGATE_HTTP_PORT``, path ``POST /digitalmatter/oem``, for
the OEM Server's JSON HTTP(S) connector. Bodies are decoded by ``dmtproto.oem_json`` and
published as the binary protocol's records are (:mod:`.intake`); settings in :mod:`.settings`.
"""

from .intake import PATH, OemIntake
from .settings import HttpSettings

__all__ = ["PATH", "HttpSettings", "OemIntake"]

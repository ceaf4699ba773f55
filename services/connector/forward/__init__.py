"""Raw TCP forwarding: Digital Matter records to a third-party server in the device's own
binary protocol, as Digital Matter's OEM Server raw TCP connector does.

An endpoint with ``url: tcp://host:port`` and ``format: dmt`` reads ``fleetgate.dmt.raw.v1``
in its own consumer group and, per device, opens a connection as the device would: its HELLO
as the device sent it, its records (each the raw topic's message, byte for byte), a commit
request; the Kafka offset is committed only after the server's commit response. Pure parts in
:mod:`.plan`, one connection in :mod:`.session` (a thin adapter around ``dmtproto``'s device
role), the Kafka side in :mod:`.worker`.
"""

from .worker import ForwardWorker

__all__ = ["ForwardWorker"]

"""The connector: file events from Kafka to third-party HTTP endpoints as JSON webhooks.

Each endpoint of the YAML config reads ``fleetgate.files.v1`` in its own consumer group and
commits an event only after the endpoint answered 2xx for it (at least once).
"""

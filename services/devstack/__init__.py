"""The embedded default: a local Kafka-protocol broker and S3 server, and the pipeline on them.

``fleetgate devstack`` (what ``make run`` starts) and the tests both use :mod:`devstack.infra`.
"""

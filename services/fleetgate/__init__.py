"""fleetgate: a gateway from telematics devices' own TCP protocols to Kafka, S3 and webhooks.

This package is only the command-line front door (``fleetgate <subcommand>``); the work is
done by the service packages the subcommands dispatch to.
"""

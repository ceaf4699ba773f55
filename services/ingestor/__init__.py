"""The ingestor: camera TCP sessions in, Kafka records out (``fleetgate ingestor``)."""

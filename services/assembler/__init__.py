"""fleetgate's assembler: camera files from Kafka chunk records, verified, into S3.

``fleetgate assembler`` runs it (:mod:`assembler.cli`); :mod:`assembler.state` is the
reassembly logic without I/O beyond a spool directory, :mod:`assembler.keys` the object-key
scheme, :mod:`assembler.storage` the S3 side and :mod:`assembler.agents` the faust agent.
"""

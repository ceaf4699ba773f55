"""The ingestor: the edge that hosts device protocols (``fleetgate ingestor``).

Written once here: listeners and admission (:mod:`.server`), the read loop
(:mod:`.connection`), the Kafka sink and acknowledgement ledger (:mod:`.sink`), the
allow-list, settings and edge metrics. Each protocol is an adapter folder (``camera/``)
registered in :mod:`.protocols`; the contract is :mod:`.adapter`.
"""

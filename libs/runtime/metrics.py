"""The Prometheus ``/metrics`` endpoint of a service."""

from __future__ import annotations

from prometheus_client import start_http_server


def start_metrics_server(host: str, port: int) -> int | None:
    """Serve ``/metrics`` from a daemon thread; return the port, or None when ``port`` is 0."""
    if port == 0:
        return None
    server, _thread = start_http_server(port, addr=host)
    bound: int = server.server_address[1]
    return bound

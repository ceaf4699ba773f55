"""The Helm chart serves the OEM JSON intake when asked: its port on the pods and the load
balancer, FLEETGATE_HTTP_PORT in the ingestor's environment; off by default."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.ops.test_chart import by_kind, chart, container, env_of, render

__all__ = ["chart"]  # the module-scoped fixture, shared with tests/ops/test_chart.py


def test_off_by_default(chart: helm.Chart) -> None:
    documents = render(chart, {})
    ingestor = by_kind(documents, "Deployment")["fg-fleetgate-ingestor"]
    assert "FLEETGATE_HTTP_PORT" not in env_of(ingestor)
    assert "oem-http" not in [p["name"] for p in container(ingestor)["ports"]]


def test_on_with_its_port(chart: helm.Chart) -> None:
    values = {"ingestor": {"oemIntake": {"enabled": True, "port": 18088}}}
    documents = render(chart, values)
    service = by_kind(documents, "Service")["fg-fleetgate-ingestor"]
    assert {"name": "oem-http", "port": 18088, "targetPort": "oem-http", "protocol": "TCP"} in (
        service["spec"]["ports"]
    )
    ingestor = by_kind(documents, "Deployment")["fg-fleetgate-ingestor"]
    assert {"name": "oem-http", "containerPort": 18088, "protocol": "TCP"} in container(ingestor)[
        "ports"
    ]
    env = env_of(ingestor)
    assert env["FLEETGATE_HTTP_PORT"] == "18088" and env["FLEETGATE_HTTP_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("port", [5233, 9090])
def test_its_port_must_differ(chart: helm.Chart, port: int) -> None:
    values: dict[str, Any] = {"ingestor": {"oemIntake": {"enabled": True, "port": port}}}
    with pytest.raises(helm.HelmRenderError, match=r"ingestor\.oemIntake\.port \d+ is also"):
        chart.render(values=values, name="fg")

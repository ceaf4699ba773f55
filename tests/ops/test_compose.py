"""deploy/compose: valid against the Compose specification's schema, consistent with the
services' settings, the alerts and the dashboard; and, where Docker exists, brought up whole."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from connector.config import parse_config
from tests.ops.ops_helpers import docker_available, setting_variables

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
SCHEMA = Path(__file__).with_name("compose-spec.json")  # see compose-spec.SOURCE.md


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return loaded


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_the_stack_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d["services"]["ingestor"].update(restrat="always"), "restrat"),
        (lambda d: d["services"]["kafka"].update(ports="9092"), "ports"),
        (lambda d: d.update(servics={}), "servics"),
    ],
)
def test_the_schema_catches_mistakes(mutate: Any, fragment: str) -> None:
    document = compose()
    mutate(document)
    assert any(fragment in error for error in schema_errors(document))


def test_the_stack_holds_what_the_issue_lists() -> None:
    services = compose()["services"]
    assert services["kafka"]["image"].split(":-")[1].startswith("apache/kafka:")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert "-s3" in services["s3"]["command"]
    for name in ("ingestor", "assembler", "connector"):
        service = services[name]
        assert service["command"] == [name]
        assert service["read_only"] is True and service["user"] == "10001:10001"
        assert service["build"]["context"] == "../.."
    assert {"prometheus", "grafana", "topics", "webhook-sink"} <= set(services)


def test_the_ingestor_publishes_the_port_of_every_protocol() -> None:
    from ingestor.protocols import PROTOCOLS

    ingestor = compose()["services"]["ingestor"]
    published = {port.split(":")[0] for port in ingestor["ports"]}
    for name in PROTOCOLS:
        port = ingestor["environment"][f"FLEETGATE_{name.upper()}_PORT"]
        assert port in published, f"{name} listens on {port}, not published"


def test_every_file_the_stack_mounts_exists() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name} mounts a missing {source}"


def test_every_setting_given_to_a_service_is_one_of_its_settings() -> None:
    services = compose()["services"]
    for name in ("ingestor", "assembler", "connector"):
        fields = setting_variables(name)
        for variable in services[name]["environment"]:
            assert variable in fields, f"{name} has no setting for {variable}"


def test_prometheus_scrapes_the_services_and_loads_the_alerts() -> None:
    config = yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert jobs == {n: [f"{n}:9090"] for n in ("ingestor", "assembler", "connector")}
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert "../../charts/fleetgate/files/alerts.yaml:/etc/prometheus/alerts.yaml:ro" in mounts
    assert config["rule_files"] == ["/etc/prometheus/alerts.yaml"]


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    mounts = compose()["services"]["grafana"]["volumes"]
    assert (
        "../../charts/fleetgate/files/dashboard.json:/var/lib/grafana/dashboards/fleetgate.json:ro"
        in mounts
    )
    provider = yaml.safe_load(
        (COMPOSE / "grafana" / "provisioning" / "dashboards" / "fleetgate.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_the_connector_config_is_one_the_connector_accepts() -> None:
    config = parse_config((COMPOSE / "connector.yaml").read_text())
    assert [e.name for e in config.enabled] == ["local-sink"]


# --- the whole stack, where a Docker engine exists -------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    if not docker_available():
        pytest.skip("needs a Docker engine: the Compose stack runs Kafka, S3 and fleetgate images")
    from testcontainers.compose import DockerCompose

    with DockerCompose(COMPOSE, compose_file_name="compose.yaml", build=True, wait=True) as up:
        yield up


def _until(condition: Any, what: str, within: float = 180.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        try:
            result = condition()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def test_the_stack_takes_a_photo_to_a_webhook_with_alerts_and_dashboard(stack: Any) -> None:
    subprocess.run(
        [sys.executable, "-m", "fleetgate", "simulate", "--host", "127.0.0.1", "--port", "5232",
         "--devices", "1", "--photos", "1", "--videos", "0", "--timeout", "120"],
        check=True, timeout=180,
    )  # fmt: skip

    def webhook() -> bool:
        out, _ = stack.get_logs("webhook-sink")
        return '"file.stored"' in out

    _until(webhook, "a file.stored webhook at the sink")
    subprocess.run(
        [sys.executable, "-m", "fleetgate", "simulate", "--protocol", "dmt", "--host", "127.0.0.1",
         "--port", "5233", "--devices", "1", "--records", "20", "--timeout", "120"],
        check=True, timeout=180,
    )  # fmt: skip
    rules = _until(
        lambda: httpx.get("http://127.0.0.1:9090/api/v1/rules").json()["data"]["groups"],
        "Prometheus's rules",
    )
    alerts = {rule["name"] for group in rules for rule in group["rules"]}
    assert {"FleetgateNotReady", "FleetgateDeadLetters", "FleetgateConsumerLagGrowing"} <= alerts
    found = _until(
        lambda: httpx.get("http://127.0.0.1:3000/api/search", params={"query": "fleetgate"}).json(),
        "the dashboard in Grafana",
    )
    assert any(d.get("uid") == "fleetgate-pipeline" for d in found)
    up = httpx.get("http://127.0.0.1:9090/api/v1/query", params={"query": "fleetgate_ready"})
    assert {r["metric"]["job"] for r in up.json()["data"]["result"]} >= {
        "ingestor",
        "assembler",
        "connector",
    }

"""The Helm chart, rendered offline (Helm v4's library, no cluster) and checked against the
Kubernetes schemas, the values schema, the services' own settings and the connector's config
loader."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from connector.config import parse_config
from tests.ops.ops_helpers import setting_variables

CHART = Path(__file__).resolve().parents[2] / "charts" / "fleetgate"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas.
KUBE_VERSIONS = ("1.27", kubernetes_validate.utils.latest_version())
#: Kinds of CRDs (Prometheus Operator, KEDA): no schema in kubernetes-validate; validated against
#: their CRDs' schemas in test_chart_crds.py, and their contents checked in test_all_features.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def values_of(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    loaded: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    return loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every manifest the chart renders with ``values``, parsed (NOTES.txt left out)."""
    chart.validate_schema(values)
    rendered = chart.render(values=values, name="fg", namespace="fleet", is_install=True)
    documents: list[dict[str, Any]] = []
    for name, text in rendered.items():
        if name.endswith(".yaml"):
            documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return documents


def by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    first: dict[str, Any] = containers[0]
    return first


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


VARIANTS = [None, *CI_VALUES]
IDS = ["defaults", *(p.stem for p in CI_VALUES)]


def test_the_ci_values_files_cover_the_variants() -> None:
    assert {p.stem for p in CI_VALUES} >= {
        "minimal-values",
        "all-features-values",
        "existing-secrets-values",
        "monitoring-values",
        "camera-only-values",
    }


@pytest.mark.parametrize("values_file", VARIANTS, ids=IDS)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_is_valid_kubernetes(
    chart: helm.Chart, values_file: Path | None, kube_version: str
) -> None:
    documents = render(chart, values_of(values_file))
    assert documents
    for document in documents:
        if document["kind"] in CUSTOM_KINDS:
            continue
        # strict: unknown fields are errors too
        kubernetes_validate.validate(document, kube_version, strict=True)


@pytest.mark.parametrize("values_file", VARIANTS, ids=IDS)
def test_lint_finds_nothing(values_file: Path | None) -> None:
    report = helm.lint(CHART, values_of(values_file), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == []


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"ingestor": {"replicsa": 3}}, "replicsa"),
        ({"kafak": {"bootstrap": "k:9092"}}, "kafak"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
        ({"ingestor": {"service": {"externalTrafficPolicy": "local"}}}, "externalTrafficPolicy"),
        ({"assembler": {"replicas": "two"}}, "replicas"),
        ({"kafka": {"bootstrap": ""}}, "bootstrap"),
        ({"ingestor": {"env": {"fleetgate_x": "1"}}}, "fleetgate_x"),
        ({"logLevel": "LOUD"}, "logLevel"),
    ],
)
def test_a_typo_or_a_wrong_value_fails_the_schema(
    chart: helm.Chart, values: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=fragment):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmError):  # an install renders nothing either
        chart.render(values=values, name="fg", namespace="fleet")


def _schema_paths(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _schema_paths(sub, f"{path}.{key}" if path else key)


def _value_paths(values: Any, path: str = "") -> Iterator[str]:
    if isinstance(values, dict) and values:
        for key, sub in values.items():
            yield from _value_paths(sub, f"{path}.{key}" if path else key)
    else:
        yield path


def test_every_value_is_documented_and_every_object_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    nodes = dict(_schema_paths(schema))
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    free_form = set()  # maps and Kubernetes objects: their keys are the user's
    for path, node in nodes.items():
        assert node.get("description"), f"{path or 'the root'} has no description"
        if node.get("type") == "object" and "properties" in node and path != "connector.config":
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
        elif node.get("type") in ("object", "array"):
            free_form.add(path)
    for path in _value_paths(defaults):
        parent = path
        while parent not in nodes and "." in parent:
            parent = parent.rsplit(".", 1)[0]
        assert parent in nodes, f"{path} is not in values.schema.json"
        assert parent == path or parent in free_form, f"{path} is not documented"
    # and every leaf of the schema has a default in values.yaml
    value_paths = set(_value_paths(defaults))
    for path, node in nodes.items():
        if "properties" not in node and path and path != "global":
            assert any(v == path or v.startswith(path + ".") for v in value_paths), (
                f"{path} has no default in values.yaml"
            )


def test_defaults_deploy_the_three_services_hardened(chart: helm.Chart) -> None:
    documents = render(chart, {})
    deployments = by_kind(documents, "Deployment")
    assert set(deployments) == {
        "fg-fleetgate-ingestor",
        "fg-fleetgate-assembler",
        "fg-fleetgate-connector",
    }
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        main = container(deployment)
        assert main["args"] == [name.rsplit("-", 1)[1]]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        assert main["securityContext"]["allowPrivilegeEscalation"] is False
        assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert main["resources"]["requests"] and main["resources"]["limits"]
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }
        assert pod["automountServiceAccountToken"] is False
    assert set(by_kind(documents, "PodDisruptionBudget")) == set(deployments)
    for kind in ("HorizontalPodAutoscaler", "Secret", *CUSTOM_KINDS):
        assert by_kind(documents, kind) == {}, kind
    assert "fg-fleetgate-dashboard" not in by_kind(documents, "ConfigMap")


def test_the_ingestor_drains_within_its_grace_period(chart: helm.Chart) -> None:
    values = {"ingestor": {"drainSeconds": 45, "closeSeconds": 7, "preStopSeconds": 6}}
    ingestor = by_kind(render(chart, values), "Deployment")["fg-fleetgate-ingestor"]
    pod = ingestor["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 6 + 45 + 7 + 10
    assert container(ingestor)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "6"]
    env = env_of(ingestor)
    assert (env["FLEETGATE_DRAIN_TIMEOUT_SECONDS"], env["FLEETGATE_CLOSE_TIMEOUT_SECONDS"]) == (
        "45",
        "7",
    )
    override = {"ingestor": {"terminationGracePeriodSeconds": 300}}
    ingestor = by_kind(render(chart, override), "Deployment")["fg-fleetgate-ingestor"]
    assert ingestor["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 300


def test_devices_reach_every_enabled_protocol_through_a_local_load_balancer(
    chart: helm.Chart,
) -> None:
    values = {"ingestor": {"protocols": {"camera": {"port": 15232}, "dmt": {"port": 15233}}}}
    documents = render(chart, values)
    service = by_kind(documents, "Service")["fg-fleetgate-ingestor"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["ports"] == [
        {"name": "camera", "port": 15232, "targetPort": "camera", "protocol": "TCP"},
        {"name": "dmt", "port": 15233, "targetPort": "dmt", "protocol": "TCP"},
    ]
    ingestor = by_kind(documents, "Deployment")["fg-fleetgate-ingestor"]
    ports = container(ingestor)["ports"]
    assert {"name": "camera", "containerPort": 15232, "protocol": "TCP"} in ports
    assert {"name": "dmt", "containerPort": 15233, "protocol": "TCP"} in ports
    env = env_of(ingestor)
    assert env["FLEETGATE_CAMERA_ENABLED"] == env["FLEETGATE_DMT_ENABLED"] == "true"
    assert (env["FLEETGATE_CAMERA_PORT"], env["FLEETGATE_DMT_PORT"]) == ("15232", "15233")
    assert env["FLEETGATE_CAMERA_HOST"] == env["FLEETGATE_DMT_HOST"] == "0.0.0.0"


def test_the_default_ports_are_the_services_defaults(chart: helm.Chart) -> None:
    from ingestor.protocols import PROTOCOLS

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["ingestor"]["protocols"]
    assert set(defaults) == set(PROTOCOLS), "every protocol the ingestor hosts is in the chart"
    for name, protocol in PROTOCOLS.items():
        assert defaults[name]["port"] == protocol.settings_class.model_fields["port"].default
        assert defaults[name]["enabled"] is True


def test_a_disabled_protocol_is_neither_served_nor_exposed(chart: helm.Chart) -> None:
    documents = render(chart, values_of(CHART / "ci" / "camera-only-values.yaml"))
    service = by_kind(documents, "Service")["fg-fleetgate-ingestor"]
    assert [p["name"] for p in service["spec"]["ports"]] == ["camera"]
    ingestor = by_kind(documents, "Deployment")["fg-fleetgate-ingestor"]
    assert [p["name"] for p in container(ingestor)["ports"]] == ["metrics", "camera"]
    env = env_of(ingestor)
    assert env["FLEETGATE_DMT_ENABLED"] == "false"  # the service's default is on
    assert "FLEETGATE_DMT_PORT" not in env
    assert env["FLEETGATE_CAMERA_ENABLED"] == "true"


@pytest.mark.parametrize(
    ("protocols", "error"),
    [
        (
            {"camera": {"enabled": False}, "dmt": {"enabled": False}},
            r"every protocol is disabled",
        ),
        ({"dmt": {"port": 5232}}, r"ingestor\.protocols\.(camera|dmt)\.port 5232 is also"),
        ({"dmt": {"port": 9090}}, r"ingestor\.protocols\.dmt\.port 9090 is also metrics\.port"),
    ],
)
def test_protocol_ports_must_exist_and_differ(
    chart: helm.Chart, protocols: dict[str, Any], error: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=error):
        chart.render(values={"ingestor": {"protocols": protocols}}, name="fg")
    # without the ingestor, its protocols do not matter
    render(chart, {"ingestor": {"enabled": False, "protocols": protocols}})


def test_all_features(chart: helm.Chart) -> None:
    documents = render(chart, values_of(CHART / "ci" / "all-features-values.yaml"))
    deployments = by_kind(documents, "Deployment")
    for name in deployments:  # the HPA and KEDA own the replica counts
        assert "replicas" not in deployments[name]["spec"]
    hpa = by_kind(documents, "HorizontalPodAutoscaler")["fg-fleetgate-ingestor"]
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 20
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    assert hpa["spec"]["metrics"][1]["pods"]["metric"]["name"] == (
        "fleetgate_ingestor_connections_open"
    )

    scaled = by_kind(documents, "ScaledObject")
    assembler_triggers = scaled["fg-fleetgate-assembler"]["spec"]["triggers"]
    assert [t["metadata"]["consumerGroup"] for t in assembler_triggers] == ["fleetgate-assembler"]
    assert assembler_triggers[0]["metadata"]["topic"] == "fleetgate.camera.chunks.v1"
    connector_triggers = scaled["fg-fleetgate-connector"]["spec"]["triggers"]
    # one trigger per enabled endpoint: "insurer" is disabled
    assert [t["metadata"]["consumerGroup"] for t in connector_triggers] == [
        "fleetgate-connector-fleet-platform"
    ]
    for scaled_object in scaled.values():
        assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
        assert scaled_object["spec"]["scaleTargetRef"]["name"] in deployments

    secrets = by_kind(documents, "Secret")
    assert set(secrets) == {"fg-fleetgate-kafka", "fg-fleetgate-s3", "fg-fleetgate-connector"}
    connector = deployments["fg-fleetgate-connector"]
    assert [e["secretRef"]["name"] for e in container(connector)["envFrom"]] == [
        "fg-fleetgate-kafka",
        "fg-fleetgate-connector",
    ]
    assert env_of(connector)["FLEETGATE_S3_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "fg-fleetgate-s3", "key": "accessKey"}
    }

    # the connector's ConfigMap holds a config the connector itself accepts
    config_map = by_kind(documents, "ConfigMap")["fg-fleetgate-connector"]
    config = parse_config(config_map["data"]["connector.yaml"], env={"PLATFORM_TOKEN": "x"})
    assert [e.name for e in config.enabled] == ["fleet-platform"]

    monitor = by_kind(documents, "ServiceMonitor")["fg-fleetgate"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    metrics_services = [
        s
        for s in by_kind(documents, "Service").values()
        if s["metadata"]["name"].endswith("-metrics")
    ]
    assert len(metrics_services) == 3
    for service in metrics_services:
        assert (
            service["metadata"]["labels"].items()
            >= monitor["spec"]["selector"]["matchLabels"].items()
        )

    rule = by_kind(documents, "PrometheusRule")["fg-fleetgate"]
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"][:-1] == alerts["groups"]
    assert rule["spec"]["groups"][-1]["name"] == "acme"

    dashboard = by_kind(documents, "ConfigMap")["fg-fleetgate-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["fleetgate.json"]) == json.loads(
        (CHART / "files" / "dashboard.json").read_text()
    )


def test_existing_secrets_are_referenced_not_created(chart: helm.Chart) -> None:
    documents = render(chart, values_of(CHART / "ci" / "existing-secrets-values.yaml"))
    assert by_kind(documents, "Secret") == {}
    assert "fg-fleetgate-connector" not in by_kind(documents, "ConfigMap")
    deployments = by_kind(documents, "Deployment")
    assembler = env_of(deployments["fg-fleetgate-assembler"])
    assert assembler["FLEETGATE_S3_SECRET_KEY"] == {
        "secretKeyRef": {"name": "fleetgate-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    connector = deployments["fg-fleetgate-connector"]
    assert [e["secretRef"]["name"] for e in container(connector)["envFrom"]] == [
        "fleetgate-kafka",
        "fleetgate-endpoint-credentials",
    ]
    volumes = connector["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "fleetgate-endpoints"}} in volumes


def test_keda_on_the_connector_needs_its_endpoints(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"connector\.config\.endpoints"):
        chart.render(values={"connector": {"keda": {"enabled": True}}}, name="fg")


@pytest.mark.parametrize("values_file", VARIANTS, ids=IDS)
def test_every_setting_the_chart_sets_is_a_setting_of_the_service(
    chart: helm.Chart, values_file: Path | None
) -> None:
    """Catches a renamed setting: the services ignore unknown FLEETGATE_* variables."""
    values = values_of(values_file)
    for name, deployment in by_kind(render(chart, values), "Deployment").items():
        component = name.rsplit("-", 1)[1]
        fields = setting_variables(component)
        extra = set(values.get("kafka", {}).get("env", {}))  # the user's, checked by the user
        for variable in env_of(deployment):
            if variable.startswith("FLEETGATE_") and variable not in extra:
                assert variable in fields, f"{component} has no setting for {variable}"


def test_the_readme_install_command_uses_real_values(chart: helm.Chart) -> None:
    readme = (CHART.parents[1] / "README.md").read_text()
    section = readme.split("## Operating fleetgate\n", 1)[1].split("\n## ", 1)[0]
    for heading in ("### Install with Helm", "### Scale", "### Upgrade"):
        assert heading in section
    assert "### Metrics, dashboard, alerts and runbooks" in section
    settings = re.findall(r"--set ([\w.]+=\S+)", section)
    assert len(settings) >= 6
    values: dict[str, Any] = {}
    for setting in settings:
        merged = helm.parse_set_string(setting)
        for key, sub in merged.items():
            values[key] = {**values.get(key, {}), **sub} if isinstance(sub, dict) else sub
    chart.validate_schema(values)
    render(chart, values)
    for name in re.findall(
        r"`((?:ingestor|assembler|connector|metrics|s3|kafka)\.[\w.]+)`", section
    ):
        if name == "ingestor.replicsa":  # the README's example of a typo the schema catches
            continue
        node = json.loads((CHART / "values.schema.json").read_text())
        for part in name.split("."):
            assert part in node.get("properties", {}), f"the README names {name}: no such value"
            node = node["properties"][part]

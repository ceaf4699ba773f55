"""Every metric the dashboard and the alerts name exists on the running services.

The three services run as processes against a real broker and S3 server; each must turn ready
(/readyz 200), and the union of what their /metrics expose must hold every ``fleetgate_*``
name that the Grafana dashboard's queries and the alert rules use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from tests.conftest import S3
from tests.ops.ops_helpers import Services

CHART = Path(__file__).resolve().parents[2] / "charts" / "fleetgate"


def dashboard_queries() -> list[str]:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    queries: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            queries.extend(t["expr"] for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return queries


def alert_queries() -> list[str]:
    rules = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def names_in(queries: list[str]) -> set[str]:
    """The fleetgate metrics the queries select (parsed as PromQL: a bad query raises)."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    for query in queries:
        promql_parser.walk(promql_parser.parse(query), visit)
    return {name for name in names if name.startswith("fleetgate_")}


def test_the_queries_parse_and_name_metrics() -> None:
    assert len(dashboard_queries()) > 20 and len(alert_queries()) == 7
    assert names_in(dashboard_queries()) and names_in(alert_queries())
    query = "sum(rate(fleetgate_a_total[5m])) / fleetgate_b{x='fleetgate_c'} or up == 0"
    assert names_in([query]) == {"fleetgate_a_total", "fleetgate_b"}
    with pytest.raises(ValueError):
        names_in(["sum by (x (rate(fleetgate_a_total[5m]))"])


def test_every_metric_of_the_dashboard_and_alerts_exists(
    kafka: str, s3: S3, tmp_path: Path, services: Services
) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(
        "endpoints:\n"
        "  - name: crm\n"
        "    url: http://127.0.0.1:9/webhooks\n"  # nothing listens: no delivery is needed
        "    allow_private_network: true\n"
    )
    common = {"FLEETGATE_KAFKA_BOOTSTRAP": kafka}
    s3_env = {
        "FLEETGATE_S3_ENDPOINT": s3.endpoint,
        "FLEETGATE_S3_ACCESS_KEY": s3.access_key,
        "FLEETGATE_S3_SECRET_KEY": s3.secret_key,
        "FLEETGATE_S3_BUCKET": s3.bucket,
    }
    running = [
        services.start(
            "ingestor",
            FLEETGATE_CAMERA_HOST="127.0.0.1",
            FLEETGATE_CAMERA_PORT="0",
            FLEETGATE_DMT_HOST="127.0.0.1",
            FLEETGATE_DMT_PORT="0",
            **common,
        ),
        services.start(
            "assembler",
            FLEETGATE_SPOOL_DIR=str(tmp_path / "spool"),
            # the embedded broker holds a first group join for half the session timeout
            FLEETGATE_BROKER_SESSION_TIMEOUT="6",
            FLEETGATE_BROKER_REBALANCE_TIMEOUT="6",
            FLEETGATE_BROKER_HEARTBEAT_INTERVAL="1",
            **common,
            **s3_env,
        ),
        services.start(
            "connector",
            FLEETGATE_CONNECTOR_CONFIG=str(config),
            FLEETGATE_KAFKA_SESSION_TIMEOUT_MS="3000",
            FLEETGATE_KAFKA_HEARTBEAT_INTERVAL_MS="1000",
            **common,
            **s3_env,
        ),
    ]
    exposed: set[str] = set()
    for service in running:
        service.wait_ready()
        assert service.status("/healthz") == 200
        exposed |= service.metric_names()

    for what, queries in (("dashboard", dashboard_queries()), ("alerts", alert_queries())):
        missing = sorted(names_in(queries) - exposed)
        assert missing == [], f"the {what} name metrics no service exposes: {missing}"
    # what the issue asks the services to export, at zero from start-up
    assert {
        "fleetgate_ingestor_connections_open",
        "fleetgate_ingestor_connections_refused_total",
        "fleetgate_ingestor_sessions_closed_total",
        "fleetgate_ingestor_file_bytes_total",
        "fleetgate_ingestor_received_bytes_total",
        "fleetgate_ingestor_records_total",
        "fleetgate_ingestor_dmt_commits_total",
        "fleetgate_ingestor_crc_mismatches_total",
        "fleetgate_ingestor_resumes_total",
        "fleetgate_ingestor_transfer_seconds_bucket",
        "fleetgate_ingestor_kafka_produce_seconds_bucket",
        "fleetgate_ingestor_kafka_errors_total",
        "fleetgate_assembler_files_total",
        "fleetgate_assembler_file_bytes_total",
        "fleetgate_assembler_assembly_seconds_bucket",
        "fleetgate_assembler_transfers_in_progress",
        "fleetgate_assembler_s3_upload_seconds_bucket",
        "fleetgate_assembler_s3_errors_total",
        "fleetgate_connector_deliveries_total",
        "fleetgate_connector_dead_letters_total",
        "fleetgate_consumer_lag_records",
        "fleetgate_ready",
    } <= exposed
    ingestor_text = running[0].get("/metrics")
    assert ingestor_text is not None
    assert (
        'fleetgate_ingestor_connections_refused_total{protocol="camera",reason="not_ready"} 0.0'
        in ingestor_text.text
    )
    for protocol in ("camera", "dmt"):  # both hosted, both at zero
        for name in (
            "records_total",
            "received_bytes_total",
            "connections_open",
            "kafka_errors_total",
            "kafka_produce_seconds_count",
        ):
            assert f'fleetgate_ingestor_{name}{{protocol="{protocol}"}} 0.0' in ingestor_text.text
    # the camera's own edge metrics say their protocol too
    for name in ("crc_mismatches_total", "transfer_seconds_count", "durable_seconds_count"):
        assert f'fleetgate_ingestor_{name}{{protocol="camera"}} 0.0' in ingestor_text.text
    assert (
        'fleetgate_ingestor_resumes_total{protocol="camera",result="differs"} 0.0'
        in ingestor_text.text
    )
    # the dashboard shows Digital Matter
    dmt = names_in([q for q in dashboard_queries() if "dmt" in q or "records_total" in q])
    assert {
        "fleetgate_ingestor_records_total",
        "fleetgate_ingestor_dmt_commit_seconds_bucket",
    } <= dmt
    lag_lines = [
        line
        for service in running[1:]
        for line in (service.get("/metrics") or ingestor_text).text.splitlines()
        if line.startswith("fleetgate_consumer_lag_records{")
    ]
    assert any('group="fleetgate-assembler"' in line for line in lag_lines)
    assert any('group="fleetgate-connector-crm"' in line for line in lag_lines)

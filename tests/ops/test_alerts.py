"""The alert rules: the ones the issue lists, each complete and with its runbook section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "charts" / "fleetgate" / "files" / "alerts.yaml"
RUNBOOKS = ROOT / "docs" / "operations.md"


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_alerts_the_issue_lists() -> None:
    assert [rule["alert"] for rule in rules()] == [
        "FleetgateConsumerLagGrowing",
        "FleetgateDeadLetters",
        "FleetgateEndpointCircuitOpen",
        "FleetgateCrcErrorRatioHigh",
        "FleetgateKafkaProduceErrors",
        "FleetgateNoDeviceSessions",
        "FleetgateNotReady",
    ]


def test_every_alert_is_complete_and_has_a_runbook_section() -> None:
    docs = RUNBOOKS.read_text()
    headings = {h.lower() for h in re.findall(r"^### (\S+)$", docs, re.MULTILINE)}
    for rule in rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        assert rule["annotations"]["runbook_url"] == f"docs/operations.md#{name.lower()}"
        assert name.lower() in headings, f"docs/operations.md has no runbook for {name}"
        section = docs.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        for part in ("**Fires:**", "**Means:**", "**Do:**"):
            assert part in section, f"the runbook of {name} lacks {part}"
        if "for" in rule:
            assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), name
        promql_parser.parse(rule["expr"])  # raises on a broken expression

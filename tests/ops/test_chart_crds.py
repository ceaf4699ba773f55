"""The chart's custom resources (ServiceMonitor and PrometheusRule of the Prometheus Operator,
ScaledObject of KEDA) checked against their CRDs' schemas, offline: kubernetes-validate has no
CRD schemas, so node runs the validators @kubernetes-models compiles from them
(``validate_crds.mjs``; the packages are pinned in deploy/local and installed by ``make .venv``).

Those schemas accept unknown fields, which an API server prunes without a word; the script also
lists every field the schema puts no constraint on, so a misspelt field fails here too."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from tests.ops.test_chart import CHART, CI_VALUES, CUSTOM_KINDS, chart, render, values_of

__all__ = ["chart"]  # the module-scoped fixture, shared with tests/ops/test_chart.py

SCRIPT = Path(__file__).with_name("validate_crds.mjs")
NODE_MODULES = CHART.parents[1] / "deploy" / "local" / "node_modules"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js (node) to run the validators")


def validate(objects: list[dict[str, Any]]) -> list[dict[str, list[str]]]:
    """One node process for all ``objects``: per object, its schema errors and the fields its
    schema does not constrain (unknown to the CRD)."""
    assert NODE is not None
    package = NODE_MODULES / "@kubernetes-models"
    assert (package / "keda").is_dir() and (package / "prometheus-operator").is_dir(), (
        f"the CRD validators are not installed in {NODE_MODULES}: run `make .venv`"
    )
    done = subprocess.run(
        [NODE, str(SCRIPT), str(NODE_MODULES)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, list[str]]] = json.loads(done.stdout)
    assert len(results) == len(objects)
    return results


def custom_resources(chart: helm.Chart) -> list[tuple[str, dict[str, Any]]]:
    """(values file, object) for every custom resource the chart renders with a ci/ file."""
    found = []
    for path in CI_VALUES:
        for document in render(chart, values_of(path)):
            if document["kind"] in CUSTOM_KINDS:
                found.append((path.name, document))
    return found


def test_every_custom_resource_matches_its_crd(chart: helm.Chart) -> None:
    found = custom_resources(chart)
    assert {d["kind"] for _, d in found} == CUSTOM_KINDS  # every kind is checked somewhere
    results = validate([d for _, d in found])
    problems = [
        f"{source}: {d['kind']} {d['metadata']['name']}: {problem}"
        for (source, d), result in zip(found, results, strict=True)
        for problem in [
            *result["errors"],
            *(f"{f}: not in the CRD" for f in result["unconstrained"]),
        ]
    ]
    assert problems == []


_DELETE = object()


def edit(path: str, value: Any = _DELETE) -> Callable[[dict[str, Any]], None]:
    """A change of an object: the field at dotted ``path`` (list items by index) set or deleted."""

    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return change


#: (kind, change, what the validator must say): wrong types, missing required fields, a
#: version with no schema, then misspelt or unknown fields.
BROKEN = [
    ("ScaledObject", edit("spec.maxReplicaCount", "12"), "/spec/maxReplicaCount: must be integer"),
    ("ScaledObject", edit("spec.scaleTargetRef"), "must have required property scaleTargetRef"),
    ("ScaledObject", edit("spec.triggers.0.type"), "must have required property type"),
    ("ScaledObject", edit("spec.triggers.0.metadata.topic", 7), "/metadata/topic: must be string"),
    ("ServiceMonitor", edit("spec.selector"), "must have required property selector"),
    ("ServiceMonitor", edit("spec.endpoints.0.port", 9090), "/port: must be string"),
    ("PrometheusRule", edit("spec.groups.0.rules.0.for", 300), "/for: must be string"),
    ("PrometheusRule", edit("spec.groups.0.name"), "must have required property name"),
    ("ServiceMonitor", edit("apiVersion", "monitoring.coreos.com/v2"), "no CRD schema here"),
    ("ScaledObject", edit("spec.minReplicaCout", 1), "unconstrained /spec/minReplicaCout"),
    (
        "ServiceMonitor",
        edit("spec.endpoints.0.scrapeTimout", "5s"),
        "unconstrained /spec/endpoints/0/scrapeTimout",
    ),
    (
        "PrometheusRule",
        edit("spec.groups.0.rules.0.fro", "5m"),
        "unconstrained /spec/groups/0/rules/0/fro",
    ),
]


def test_a_broken_custom_resource_fails(chart: helm.Chart) -> None:
    """Each change of a valid object (from all-features-values.yaml) is caught, and only it."""
    valid = {
        d["kind"]: d
        for d in render(chart, values_of(CHART / "ci" / "all-features-values.yaml"))
        if d["kind"] in CUSTOM_KINDS
    }
    broken = []
    for kind, change, _ in BROKEN:
        obj = copy.deepcopy(valid[kind])
        change(obj)
        broken.append(obj)
    results = validate([*valid.values(), *broken])
    assert results[: len(valid)] == [{"errors": [], "unconstrained": []}] * len(valid)
    for (kind, _, expected), result in zip(BROKEN, results[len(valid) :], strict=True):
        said = [*result["errors"], *(f"unconstrained {f}" for f in result["unconstrained"])]
        assert len(said) == 1 and expected in said[0], (kind, expected, said)

"""The Grafana dashboard (deploy/grafana/dashboards/modelbench.json) asks only
for what a real server exports: every metric in every panel's and variable's
PromQL is a sample name on a scraped /metrics, every label it matches or
groups by is one that metric's series carry (or one Prometheus adds), and the
panels the deployment needs are there."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from . import promql as q
from .conftest import DEPLOY, Exported, module

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "modelbench.json"
# Labels Prometheus puts on every series it scrapes (deploy/prometheus/prometheus.yml).
TARGET_LABELS = {"job", "instance"}
# label_values(metric{...}, label): a Grafana variable's query, not PromQL.
LABEL_VALUES = re.compile(r"^label_values\((?:(?P<expr>.+),\s*)?(?P<label>\w+)\)$")


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [
        (f"panel {p['title']!r} {t['refId']}", t["expr"])
        for p in panels(dashboard)
        for t in p.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        text = variable["query"]
        text = text["query"] if isinstance(text, dict) else text
        match = LABEL_VALUES.match(text)
        assert match and match["expr"], f"variable {variable['name']}: unexpected query {text!r}"
        found.append((f"variable {variable['name']} (metric)", match["expr"]))
        grouped = f"count by ({match['label']}) ({match['expr']})"
        found.append((f"variable {variable['name']} (label)", grouped))
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_every_queried_metric_and_label_is_exported(
    dashboard: dict[str, Any], exported: Exported
) -> None:
    promql = module("promql_parser", "promql-parser")
    problems = []
    for where, expr in queries(dashboard):
        try:
            tree = q.parse(promql, expr)
        except ValueError as exc:
            problems.append(f"{where}: does not parse: {exc}: {expr}")
            continue
        for selector in q.selectors(promql, tree):
            labels = exported.labels.get(selector.name)
            if labels is None:
                problems.append(f"{where}: {selector.name} is not on the server's /metrics")
                continue
            unknown = selector.matched - labels - TARGET_LABELS - {"__name__"}
            if unknown:
                problems.append(f"{where}: {selector.name} has no label {sorted(unknown)}")
        for grouping in q.groupings(promql, tree):
            carried = set().union(*(exported.labels.get(s.name, set()) for s in grouping.selectors))
            unknown = grouping.labels - carried - TARGET_LABELS
            if unknown:
                problems.append(f"{where}: groups by {sorted(unknown)}, which no series there has")
    assert not problems, "\n".join(problems) + f"\nexported: {sorted(exported.labels)}"


def test_the_dashboard_shows_what_an_operator_needs(dashboard: dict[str, Any]) -> None:
    """Request rate, TTFT/ITL/E2E percentiles, tokens/s, KV cache use, queue
    length and errors, per model and version."""
    promql = module("promql_parser", "promql-parser")
    queried: set[str] = set()
    per_version: set[str] = set()
    for _, expr in queries(dashboard):
        tree = q.parse(promql, expr)
        queried |= {s.name for s in q.selectors(promql, tree)}
        for grouping in q.groupings(promql, tree):
            if {"model_name", "version"} <= grouping.labels:
                per_version |= {s.name for s in grouping.selectors}
    needed = {
        "modelbench:request_success_total",  # request rate, and aborts
        "modelbench:time_to_first_token_seconds_bucket",
        "modelbench:inter_token_latency_seconds_bucket",
        "modelbench:e2e_request_latency_seconds_bucket",
        "modelbench:generation_tokens_total",
        "modelbench:kv_cache_usage_perc",
        "modelbench:num_requests_waiting",
    }
    assert needed <= per_version, f"not shown per model and version: {sorted(needed - per_version)}"
    assert "modelbench:http_requests_total" in queried  # errors by status
    exprs = [expr for _, expr in queries(dashboard)]
    for histogram in ("time_to_first_token", "inter_token_latency", "e2e_request_latency"):
        quantile = re.compile(rf"histogram_quantile\((?P<q>[\d.]+), .*{histogram}_seconds_bucket")
        shown = {m["q"] for e in exprs for m in quantile.finditer(e)}
        assert {"0.5", "0.9", "0.99"} <= shown, f"{histogram}: percentiles {sorted(shown)}"


def test_panels_have_unique_ids_and_use_the_data_source_variable(
    dashboard: dict[str, Any],
) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in names
    for panel in panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]

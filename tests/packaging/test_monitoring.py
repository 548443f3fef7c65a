"""The chart's PrometheusRule and Grafana dashboard (both off by default).

The alerts run through `promtool test rules` (Prometheus's own rule engine, built from its Go module
by `make tools` into bin/promtool) on the rule group exactly as `helm template` renders it. That every
query parses as PromQL and names only series the operator exports is checked against a running
operator in tests/operations.rs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import CHART, _find_tool, find, run

PROMTOOL = _find_tool("promtool", "PROMTOOL", "prometheus-*")
ALERT_TESTS = Path(__file__).with_name("alerts") / "rootkey-operator.test.yaml"
ON = ("--set", "prometheusRule.enabled=true", "--set", "grafanaDashboard.enabled=true")


@pytest.fixture(scope="module")
def promtool() -> str:
    if not PROMTOOL:
        pytest.fail("promtool not found: run `make tools` (builds bin/promtool) or set $PROMTOOL")
    return PROMTOOL


def test_off_by_default(render):
    manifests = render()
    assert not find(manifests, "PrometheusRule")
    assert not [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-dashboard")]


def test_alert_rules_pass_promtool(render, promtool, tmp_path):
    (rule,) = find(render(*ON), "PrometheusRule")
    assert rule["metadata"]["namespace"] == "rootkey-system"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    checked = run([promtool, "check", "rules", str(tmp_path / "rules.yaml")])
    print(checked.stdout)
    tested = run([promtool, "test", "rules", str(tmp_path / ALERT_TESTS.name)])
    print(tested.stdout)
    assert "SUCCESS" in tested.stdout
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    tested_alerts = {
        case["alertname"]
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert alerts == tested_alerts, "every alert has a promtool test"


def test_alert_values_reach_the_rules(render):
    (rule,) = find(
        render(
            *ON,
            "--set",
            "prometheusRule.for.notReady=30m",
            "--set",
            "prometheusRule.keyExpiryDays=7",
            "--set",
            "prometheusRule.alertLabels.team=platform",
            "--set",
            "prometheusRule.labels.release=prometheus",
            "--set",
            'prometheusRule.operatorSelector=job="rootkey"',
        ),
        "PrometheusRule",
    )
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rules["AzureRootKeyNotReady"]["for"] == "30m"
    assert "< 7 * 86400" in rules["AzureRootKeyExpiringSoon"]["expr"]
    assert rules["AzureRootKeyOperatorDown"]["expr"] == 'absent(rootkey_operator_build_info{job="rootkey"})'
    assert all(r["labels"]["team"] == "platform" and r["labels"]["severity"] for r in rules.values())


def test_dashboard_config_map(render):
    (cm,) = [m for m in render(*ON) if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["rootkey-operator.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text())
    assert dashboard["uid"] == "rootkey-operator"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", "every panel uses the chosen data source"
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_servicemonitor_keeps_the_objects_namespace_label(render):
    (sm,) = find(render("--set", "metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["honorLabels"] is True

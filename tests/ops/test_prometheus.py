"""Every PromQL expression shipped in deploy/ is valid against a live Prometheus, and every
dashboard panel shows data once the stack has served some traffic.

Panels on vLLM's own ``vllm:*`` metrics cannot have data here (no vLLM runs): their syntax is
still checked through the API, and they live in their own row of the generation dashboard.
The alert rules are loaded by that same server (rule health checked) and unit-tested with
``promtool test rules``.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.ops.conftest import REPO, RULES, Prometheus

DASHBOARDS = sorted((REPO / "deploy" / "grafana").glob("*.json"))
RULE_TESTS = REPO / "deploy" / "prometheus" / "tests.yml"
# Grafana's variables, replaced as Grafana would with "All" selected; a 5-minute rate window
# spans the whole of the driven traffic, however slowly this machine ran it.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "${__rate_interval}": "5m",
    "$__interval": "15s",
    "$__range": "5m",
    "${service}": ".*",
    "$service": ".*",
}
LABEL_VALUES = re.compile(r"^label_values\(\s*([^,]+?)\s*,\s*(\w+)\s*\)$")


def expand(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise AssertionError(f"unknown Grafana variable left in {expr!r}")
    return expr


def panels(node: dict) -> list[dict]:
    """All panels of a dashboard, those nested in collapsed rows included."""
    found = []
    for panel in node.get("panels", []):
        found.append(panel)
        found.extend(panels(panel))
    return found


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expression) for every Prometheus target of every panel."""
    rows = []
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text(encoding="utf-8"))):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    rows.append((path.name, panel.get("title", "?"), target["expr"]))
    return rows


def rule_expressions() -> list[tuple[str, str]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for group in document["groups"]
        for rule in group["rules"]
    ]


def is_vllm(expr: str) -> bool:
    return "vllm:" in expr


def test_every_dashboard_and_every_panel_has_queries() -> None:
    names = {path.stem for path in DASHBOARDS}
    assert {"zhiku-overview", "zhiku-ingestion", "zhiku-retrieval", "zhiku-generation"} <= names
    for path in DASHBOARDS:
        graphs = [p for p in panels(json.loads(path.read_text(encoding="utf-8"))) if p.get("type") != "row"]
        assert graphs, f"{path.name} has no panels"
        for panel in graphs:
            assert any(t.get("expr") for t in panel.get("targets", [])), f"{path.name}: {panel['title']}"


@pytest.mark.parametrize(("dashboard", "title", "expr"), dashboard_targets(), ids=lambda v: str(v)[:60])
def test_dashboard_expression_is_valid_and_has_data(
    traffic: Prometheus, dashboard: str, title: str, expr: str
) -> None:
    reply = traffic.query(expand(expr))
    assert reply["status"] == "success", f"{dashboard} / {title}: {reply.get('error')}"
    if is_vllm(expr):
        return  # valid PromQL; no vLLM engine runs here to give it data
    values = [float(sample["value"][1]) for sample in reply["data"]["result"]]
    assert values, f"{dashboard} / {title}: no data for {expr}"
    assert any(not math.isnan(v) for v in values), f"{dashboard} / {title}: only NaN for {expr}"


def test_vllm_panels_are_kept_in_their_own_row() -> None:
    """vLLM's panels are the only ones allowed to be empty here: fence them off in one row."""
    for path in DASHBOARDS:
        current_row = ""
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            if panel.get("type") == "row":
                current_row = panel["title"]
            exprs = [t.get("expr", "") for p in [panel, *panels(panel)] for t in p.get("targets", [])]
            nested_row = panel["title"] if panel.get("type") == "row" else current_row
            if any(is_vllm(e) for e in exprs):
                where = f"{path.name}: {panel['title']}"
                assert "vLLM" in nested_row and all(is_vllm(e) for e in exprs), where


def test_template_variables_have_values(traffic: Prometheus) -> None:
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text(encoding="utf-8")).get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = LABEL_VALUES.match(query)
            assert match, f"{path.name}: variable {variable['name']} uses an unsupported query {query!r}"
            metric, label = match.groups()
            reply = httpx.get(
                f"{traffic.url}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10
            ).json()
            assert reply["status"] == "success" and reply["data"], f"{path.name}: ${variable['name']} empty"


@pytest.mark.parametrize(("name", "expr"), rule_expressions(), ids=lambda v: str(v)[:40])
def test_alert_expression_is_valid(traffic: Prometheus, name: str, expr: str) -> None:
    reply = traffic.query(expr)
    assert reply["status"] == "success", f"{name}: {reply.get('error')}"


def test_rules_load_and_evaluate_in_the_server(traffic: Prometheus) -> None:
    groups = httpx.get(f"{traffic.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(loaded) == {name for name, _ in rule_expressions()}
    unhealthy = {name: rule.get("lastError") for name, rule in loaded.items() if rule["health"] != "ok"}
    assert not unhealthy
    # Nothing is wrong with a freshly started, lightly used stack: no alert may be firing.
    firing = [name for name, rule in loaded.items() if rule.get("state") == "firing"]
    assert not firing


def test_every_process_is_scraped(traffic: Prometheus) -> None:
    reply = traffic.query('up{job=~"zhiku-.*"}')
    jobs = {sample["metric"]["job"]: sample["value"][1] for sample in reply["data"]["result"]}
    names = ("gateway", "embed", "retrieve", "generate", "ingest", "worker")
    # "stack": the launcher itself, which counts the restarts of the others (none here).
    assert jobs == {f"zhiku-{name}": "1" for name in (*names, "stack")}
    restarts = traffic.query("zhiku_stack_restarts_total")["data"]["result"]
    counted = {sample["metric"]["service"]: sample["value"][1] for sample in restarts}
    assert counted == dict.fromkeys(names, "0")


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=RULES.parent, check=False)


def test_promtool_check_rules(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests(promtool: str) -> None:
    result = _promtool(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The check above can fail: promtool does reject a rule file with bad PromQL."""
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum(rate(foo[5m])\n")
    assert _promtool(promtool, "check", "rules", str(broken)).returncode != 0

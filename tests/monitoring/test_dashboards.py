"""Grafana dashboards (monitoring/dashboards/*.json) and the metric names everything uses."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import COLLECTOR, MONITORING, REPO

DASHBOARDS = sorted((MONITORING / "dashboards").glob("*.json"))
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
APP_METRICS = REPO / "app" / "src" / "apptive_api" / "metrics.py"
DATASOURCE = "${datasource}"
GRID_WIDTH = 24
# Grafana's built-in variables, replaced by sample values so promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
METRIC_NAME = re.compile(r"\b((?:gluster|apptive)_[a-z0-9_]+)\b")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return panels


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _exprs(path: Path) -> list[str]:
    return [
        target["expr"]
        for panel in _panels(_load(path))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def _rule_exprs() -> list[str]:
    return [
        rule["expr"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    ]


def test_there_are_dashboards() -> None:
    assert DASHBOARDS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_dashboard_is_a_grafana_dashboard(path: Path) -> None:
    dashboard = _load(path)
    for key in ("uid", "title", "schemaVersion", "panels", "templating"):
        assert key in dashboard, f"{path.name}: no {key}"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    # Grafana fills `id` itself; a fixed one clashes on import.
    assert dashboard.get("id") is None
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_dashboard_uids_are_unique() -> None:
    uids = [_load(path)["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_panels_are_laid_out_without_overlap(path: Path) -> None:
    panels = _panels(_load(path))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']} overlaps {other}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_queries_use_the_datasource_variable(path: Path) -> None:
    """No data source uid of one Grafana baked in: the dashboard imports anywhere."""
    for panel in _panels(_load(path)):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_queries_are_valid_promql(path: Path, promtool: str, tmp_path: Path) -> None:
    """promtool parses each query as a recording rule: a typo fails here, not on a screen."""
    rules = []
    for number, expr in enumerate(_exprs(path)):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    rule_file = tmp_path / "dashboard-queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _used_names() -> set[str]:
    exprs = _rule_exprs() + [expr for path in DASHBOARDS for expr in _exprs(path)]
    # Label values ("apptive_api" as a job) are not metric names.
    unquoted = [QUOTED.sub('""', expr) for expr in exprs]
    return {name for expr in unquoted for name in METRIC_NAME.findall(expr)}


def test_gluster_metrics_used_are_ones_the_collector_writes() -> None:
    written = set(re.findall(r'Family\(\s*"(gluster_[a-z0-9_]+)"', COLLECTOR.read_text()))
    used = {name for name in _used_names() if name.startswith("gluster_")}
    assert used, "no gluster_* metric used"
    assert not used - written, f"not written by gluster_metrics.py: {sorted(used - written)}"


def test_apptive_metrics_used_are_ones_the_api_exports() -> None:
    if not APP_METRICS.exists():
        pytest.skip(f"{APP_METRICS.relative_to(REPO)} not there")
    source = APP_METRICS.read_text()
    for name in sorted(n for n in _used_names() if n.startswith("apptive_")):
        base = name.removesuffix("_total")
        for suffix in HISTOGRAM_SUFFIXES:
            base = base.removesuffix(suffix)
        assert f'"{base}"' in source, f"{name}: the API defines no metric {base}"

"""The alerting rules: valid for promtool, and every alert unit-tested."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import MONITORING

RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
TEST_FILES = sorted((MONITORING / "tests").glob("*.yml"))
SEVERITIES = {"critical", "warning"}


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _alerts() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in _load(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, cwd=MONITORING.parent, check=False
    )


def test_there_are_rules_and_tests() -> None:
    assert RULE_FILES, "monitoring/rules/*.yml is empty"
    assert TEST_FILES, "monitoring/tests/*.yml is empty"


def test_promtool_check_rules(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(promtool: str) -> None:
    result = _promtool(promtool, "test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    fired = {
        case["alertname"]
        for path in TEST_FILES
        for test in _load(path)["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    untested = sorted({alert["alert"] for alert in _alerts()} - fired)
    assert not untested, f"alerts without a test that sees them fire: {untested}"


def test_unit_tests_load_the_rule_files() -> None:
    for path in TEST_FILES:
        for rule_file in _load(path)["rule_files"]:
            assert (path.parent / rule_file).resolve() in RULE_FILES, f"{path}: {rule_file}"


def test_alert_names_are_unique() -> None:
    names = [alert["alert"] for alert in _alerts()]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("alert", _alerts(), ids=lambda alert: alert["alert"])
def test_alert_is_routable_and_explained(alert: dict[str, Any]) -> None:
    assert alert.get("labels", {}).get("severity") in SEVERITIES
    assert alert.get("annotations", {}).get("summary")
    assert alert.get("annotations", {}).get("description")

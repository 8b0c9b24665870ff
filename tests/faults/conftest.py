"""Fixtures for the fault tests: the lab (from tests/cluster), a load generator that is always
stopped and cleaned up, and a record of each fault's figures printed at the end of the run.

The lab comes from the environment like the cluster tests: LAB_INVENTORY, LAB_LB1_URL,
LAB_LB2_URL (default: the lab of `make lab`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import LB_URLS, REPO, Lab, Load, haproxy_status, load_lab, remove_users, wait_for

REPORT = Path(os.environ.get("FAULTS_REPORT", REPO / ".cache" / "faults-report.json"))
_figures: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="session")
def lab() -> Lab:
    return load_lab()


@pytest.fixture(autouse=True)
def healthy_lab(lab: Lab) -> None:
    """Every test starts from a whole lab: every API container UP on every LB."""
    expected = {name.replace("/", "-") for name in lab.containers}

    def all_up() -> bool:
        for lb in lab.hosts("lb"):
            status = haproxy_status(lab.container(lb))
            if {name for name, state in status.items() if state == "UP"} != expected:
                return False
        return True

    wait_for("every API container UP on every LB before the test", all_up, timeout=120)


@pytest.fixture
def start_load(lab: Any) -> Iterator[Callable[..., Load]]:
    """start_load(**kwargs) -> a running Load; stopped, and its users removed, afterwards."""
    loads: list[Load] = []

    def start(**kwargs: Any) -> Load:
        load = Load(LB_URLS, **kwargs).start()
        loads.append(load)
        return load

    yield start
    for load in loads:
        load.stop()
    remove_users(lab, [user for load in loads for user in load.users])


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """What a fault showed; printed after the run and written to FAULTS_REPORT."""
    return _figures.setdefault(request.node.name, {})


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _figures:
        return
    terminalreporter.section("fault figures")
    for name, values in _figures.items():
        terminalreporter.write_line(f"{name}:")
        for key, value in values.items():
            terminalreporter.write_line(f"    {key}: {value}")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(_figures, indent=2, default=str) + "\n")
    terminalreporter.write_line(f"(also in {REPORT})")

"""Fixtures of the scenario's tests, and the journal of the units under test on failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def inventory() -> str:
    return str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "units(*names): print these units' journal on failure")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """A failing test prints the journal of the units it is marked with."""
    report = yield
    marker = item.get_closest_marker("units")
    host = getattr(item, "funcargs", {}).get("host")
    if report.when == "call" and report.failed and marker is not None and host is not None:
        for unit in marker.args:
            out = host.run("journalctl --no-pager --lines=60 --unit %s", unit)
            report.sections.append(
                (f"journal of {unit} on {host.backend.get_hostname()}", out.stdout + out.stderr)
            )
    return report

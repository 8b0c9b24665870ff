"""Fixtures of the scenario's tests, and the journal of the units under test on failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import testinfra

HOST_NAMES = ("mol-glusterfs-a", "mol-glusterfs-b", "mol-glusterfs-c")


def inventory() -> str:
    return str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "units(*names): print these units' journal on failure")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """A failing test prints the journal of the units it is marked with, on its host(s)."""
    report = yield
    marker = item.get_closest_marker("units")
    if report.when == "call" and report.failed and marker is not None:
        funcargs = getattr(item, "funcargs", {})
        hosts = dict(funcargs.get("hosts") or {})
        if funcargs.get("host") is not None:
            hosts = {funcargs["host"].backend.get_hostname(): funcargs["host"]}
        for name, host in hosts.items():
            for unit in marker.args:
                out = host.run("journalctl --no-pager --lines=60 --unit %s", unit)
                report.sections.append((f"journal of {unit} on {name}", out.stdout + out.stderr))
    return report


@pytest.fixture(scope="session")
def hosts() -> dict[str, testinfra.host.Host]:
    """All hosts of the scenario, by name, for tests that span hosts."""
    return {
        name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory()}")
        for name in HOST_NAMES
    }

"""Fixtures for the haproxy scenario, and the journal of every host a failing test touched."""

import os
from pathlib import Path

import pytest
import testinfra
import yaml

JOURNAL_LINES = 60


def _scenario() -> dict:
    directory = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).parents[1]))
    return yaml.safe_load((directory / "molecule.yml").read_text())


def _platforms(group: str) -> list[dict]:
    return [p for p in _scenario()["platforms"] if group in p.get("groups", [])]


@pytest.fixture(scope="session")
def lbs(request: pytest.FixtureRequest) -> dict:
    """Every load balancer as a testinfra host, by platform name."""
    inventory = request.config.option.ansible_inventory
    return {
        p["name"]: testinfra.get_host(f"ansible://{p['name']}", ansible_inventory=inventory)
        for p in _platforms("lb")
    }


@pytest.fixture(scope="session")
def published() -> dict:
    """For each load balancer, the 127.0.0.1 port publishing each container port."""
    ports = {}
    for platform in _platforms("lb"):
        mapping = {}
        for spec in platform.get("published_ports", []):
            address, host_port, container_port = spec.split(":")
            assert address == "127.0.0.1", "tests only talk to the loopback address"
            mapping[int(container_port)] = int(host_port)
        ports[platform["name"]] = mapping
    return ports


@pytest.fixture(scope="session")
def stats_credentials() -> tuple[str, str]:
    """The stats page's user and password as the scenario sets them."""
    lb_vars = _scenario()["provisioner"]["inventory"]["group_vars"]["lb"]
    return lb_vars.get("haproxy_stats_user", "admin"), lb_vars["haproxy_stats_password"]


def _journal(host) -> str:
    result = host.run(f"journalctl -u haproxy --no-pager -n {JOURNAL_LINES}")
    return result.stdout or result.stderr


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failing test explains itself: attach HAProxy's journal of each host it used."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    hosts = {}
    if "host" in funcargs:
        hosts[funcargs["host"].backend.get_hostname()] = funcargs["host"]
    hosts.update(funcargs.get("lbs", {}))
    for name, host in hosts.items():
        try:
            report.sections.append((f"journal of haproxy on {name}", _journal(host)))
        except Exception as error:  # the report must not hide the test failure
            report.sections.append((f"journal of haproxy on {name}", f"unavailable: {error}"))

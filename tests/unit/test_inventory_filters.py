"""The inventory checks that site.yml runs before any host changes."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))

from apptive_inventory import (
    api_servers,
    api_targets,
    host_addresses,
    host_targets,
    inventory_problems,
)

Inventory = tuple[dict[str, list[str]], dict[str, dict[str, Any]]]


def _host(ip: str, ports: list[int] | None = None) -> dict[str, Any]:
    hostvars: dict[str, Any] = {
        "internal_ip": ip,
        "apptive_api_version": "1.0.0",
        "ansible_facts": {"all_ipv4_addresses": [ip]},
    }
    if ports is not None:
        hostvars["apptive_api_ports"] = ports
    return hostvars


@pytest.fixture
def good() -> Inventory:
    groups = {
        "all": ["a1", "a2", "a3", "lb1", "lb2", "mon1"],
        "ungrouped": [],
        "api": ["a1", "a2", "a3"],
        "storage": ["a1", "a2", "a3"],
        "lb": ["lb1", "lb2"],
        "monitoring": ["mon1"],
    }
    hostvars = {
        "a1": _host("10.0.0.1", [3601, 3602]),
        "a2": _host("10.0.0.2", [3601, 3602, 3603]),
        "a3": _host("10.0.0.3", [3601]),
        "lb1": _host("10.0.0.11"),
        "lb2": _host("10.0.0.12"),
        "mon1": _host("10.0.0.21"),
    }
    return groups, hostvars


def problems_after(good: Inventory, change: Any) -> list[str]:
    groups, hostvars = copy.deepcopy(good)
    change(groups, hostvars)
    return inventory_problems(groups, hostvars)


def test_a_good_inventory_has_no_problem(good: Inventory) -> None:
    assert inventory_problems(*good) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda g, h: h["a1"].update(apptive_api_ports=[3601, 3601]),
            "a1: apptive_api_ports lists port 3601 twice",
        ),
        (
            lambda g, h: h["a1"].update(apptive_api_ports=[80]),
            "a1: apptive_api_ports has 80, outside 1024-65535",
        ),
        (
            lambda g, h: h["a1"].update(apptive_api_ports=[70000]),
            "a1: apptive_api_ports has 70000, outside",
        ),
        (
            lambda g, h: h["a1"].update(apptive_api_ports=["3601"]),
            "a1: apptive_api_ports has '3601', which is not",
        ),
        (
            lambda g, h: h["a1"].update(apptive_api_ports=[]),
            "a1: apptive_api_ports must be a non-empty list",
        ),
        (
            lambda g, h: h["a1"].update(apptive_api_ports=3601),
            "a1: apptive_api_ports must be a non-empty list",
        ),
        (lambda g, h: h["a1"].pop("apptive_api_ports"), "a1: apptive_api_ports is not set"),
        (
            lambda g, h: h["a1"].update(apptive_api_ports=[9100]),
            "a1: apptive_api_ports has 9100, which node exporter",
        ),
        (
            lambda g, h: h["a1"].update(apptive_api_ports=[49152]),
            "inside the range glusterd gives to bricks",
        ),
        (
            lambda g, h: h["a2"].update(internal_ip="10.0.0.1"),
            "a2: internal_ip 10.0.0.1 port 3601 is also a1's",
        ),
        (
            lambda g, h: h["a1"].update(internal_ip="not-an-ip"),
            "a1: internal_ip 'not-an-ip' is not an IPv4",
        ),
        (
            lambda g, h: h["a1"].update(internal_ip="10.9.9.9"),
            "a1: internal_ip 10.9.9.9 is not an address of this host",
        ),
        (lambda g, h: h["a1"].update(internal_ip="0.0.0.0"), "a1: internal_ip 0.0.0.0 cannot be"),
        (
            lambda g, h: h["lb2"].update(internal_ip="10.0.0.11"),
            "lb2: internal_ip 10.0.0.11 is also lb1's",
        ),
        (lambda g, h: g.update(api=[]), "group 'api' is missing or empty"),
        (lambda g, h: g.pop("lb"), "group 'lb' is missing or empty"),
        (lambda g, h: g.update(storage=[]), "group 'storage' is missing or empty"),
        (lambda g, h: g.update(monitoring=[]), "group 'monitoring' is missing or empty"),
        (lambda g, h: g.update({"api-eu": ["a1"]}), "group 'api-eu': group names may hold only"),
        (
            lambda g, h: h["a1"].update(glusterfs_server_replica=4),
            "glusterfs_server_replica 4 is larger",
        ),
        (lambda g, h: g.update(storage=["a1", "a2"]), "replica 2 without an arbiter"),
        (
            lambda g, h: (
                h["a1"].update(glusterfs_server_arbiter=True)
                or g.update(storage=["a1", "a2", "a3", "lb1"])
            ),
            "glusterfs_server_arbiter needs exactly 3 storage hosts",
        ),
        (
            lambda g, h: h["a3"].update(apptive_api_version="latest"),
            "a3: apptive_api_version 'latest' is not",
        ),
    ],
)
def test_each_mistake_is_named(good: Inventory, change: Any, expected: str) -> None:
    problems = problems_after(good, change)
    assert any(expected in problem for problem in problems), problems


def test_every_container_is_a_backend(good: Inventory) -> None:
    groups, hostvars = good
    servers = api_servers(groups["api"], hostvars)
    assert len(servers) == 6
    assert servers[0] == {
        "name": "a1-apptive-api-1",
        "host": "a1",
        "container": "apptive-api-1",
        "address": "10.0.0.1",
        "port": 3601,
    }
    assert [s["name"] for s in servers].count("a2-apptive-api-3") == 1


def test_host_addresses(good: Inventory) -> None:
    groups, hostvars = good
    assert host_addresses(groups["lb"], hostvars) == [
        {"name": "lb1", "address": "10.0.0.11"},
        {"name": "lb2", "address": "10.0.0.12"},
    ]


class _Exploding(dict):
    def get(self, key: str, default: Any = None) -> Any:
        if key == "internal_ip":
            raise RuntimeError("'ansible_facts' is undefined")
        return super().get(key, default)


def test_an_unresolvable_address_is_named(good: Inventory) -> None:
    groups, hostvars = copy.deepcopy(good)
    hostvars["a1"] = _Exploding(hostvars["a1"])
    problems = inventory_problems(groups, hostvars)
    assert any(
        "a1: internal_ip is <cannot be resolved: 'ansible_facts' is undefined>" in p
        for p in problems
    ), problems


def test_scrape_targets(good: Inventory) -> None:
    _, hostvars = copy.deepcopy(good)
    hostvars["a1"]["group_names"] = ["api", "storage"]
    assert host_targets(["a1"], hostvars, 9100) == [
        {"targets": ["10.0.0.1:9100"], "labels": {"instance": "a1", "groups": ",api,storage,"}}
    ]
    assert api_targets(["a3"], hostvars) == [
        {"targets": ["10.0.0.3:3601"], "labels": {"host": "a3", "container": "apptive-api-1"}}
    ]

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
    rollout_plan,
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
        (
            lambda g, h: h["a1"].update(internal_ip="127.0.0.1"),
            "a1: internal_ip 127.0.0.1 is a loopback",
        ),
        # An API host that is a load balancer too: the API cannot have HAProxy's ports.
        (
            lambda g, h: (
                g.update(lb=["lb1", "lb2", "a1"]) or h["a1"].update(apptive_api_ports=[8404])
            ),
            "a1: apptive_api_ports has 8404, which haproxy_stats_port (lb) also uses",
        ),
        (
            lambda g, h: (
                g.update(lb=["lb1", "lb2", "a1"])
                or h["a1"].update(apptive_api_ports=[3601, 3700], haproxy_peer_port=3700)
            ),
            "a1: apptive_api_ports has 3700, which haproxy_peer_port (lb) also uses",
        ),
        (
            lambda g, h: (
                g.update(monitoring=["mon1", "a2"]) or h["a2"].update(apptive_api_ports=[9090])
            ),
            "a2: apptive_api_ports has 9090, which prometheus_web_listen_address (monitoring)",
        ),
        (
            lambda g, h: [h[x].update(apptive_api_rollout_batch=0) for x in ("a1", "a2", "a3")],
            "a1: apptive_api_rollout_batch 0 must be at least 1 host",
        ),
        (
            lambda g, h: [
                h[x].update(apptive_api_rollout_batch="150%") for x in ("a1", "a2", "a3")
            ],
            "apptive_api_rollout_batch '150%' must be at least 1 host, or a percentage from 1%",
        ),
        (
            lambda g, h: [
                h[x].update(apptive_api_rollout_batch="half") for x in ("a1", "a2", "a3")
            ],
            "a1: apptive_api_rollout_batch 'half' is neither a number of hosts nor a percentage",
        ),
        (
            lambda g, h: [h[x].update(apptive_api_rollout_batch=True) for x in ("a1", "a2", "a3")],
            "apptive_api_rollout_batch True is neither",
        ),
        (
            lambda g, h: h["a2"].update(apptive_api_rollout_batch=2),
            "apptive_api_rollout_batch differs between API hosts",
        ),
        (
            lambda g, h: h["a1"].update(apptive_api_rollout_drain_timeout=0),
            "a1: apptive_api_rollout_drain_timeout 0 must be a whole number of seconds",
        ),
        (
            lambda g, h: h["a1"].update(apptive_api_rollout_health_timeout="soon"),
            "a1: apptive_api_rollout_health_timeout 'soon' must be",
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


@pytest.mark.parametrize("batch", [1, 3, "2", "30%", "100%", "1%"])
def test_good_rollout_batches(good: Inventory, batch: Any) -> None:
    groups, hostvars = copy.deepcopy(good)
    for host in groups["api"]:
        hostvars[host]["apptive_api_rollout_batch"] = batch
    assert inventory_problems(groups, hostvars) == []


def test_monitoring_ports_of_an_api_host_that_is_not_a_monitoring_host(good: Inventory) -> None:
    groups, hostvars = copy.deepcopy(good)
    hostvars["a2"]["apptive_api_ports"] = [9090, 9093]
    assert inventory_problems(groups, hostvars) == []


def _container(name: str, port: int, version: str, state: str = "running") -> dict[str, Any]:
    return {
        "Names": [f"/{name}"],
        "State": state,
        "Labels": {
            "io.apptive.role": "api",
            "io.apptive.port": str(port),
            "io.apptive.version": version,
        },
    }


def test_rollout_plan_of_a_converged_host_is_empty() -> None:
    running = [
        _container("apptive-api-1", 3601, "1.0.0"),
        _container("apptive-api-2", 3602, "1.0.0"),
    ]
    assert rollout_plan(running, "a1", [3601, 3602], "1.0.0") == {
        "replace": [],
        "replace_ports": [],
        "remove": [],
        "stop": [],
        "drain": [],
        "ready": [],
    }


def test_rollout_plan_of_a_new_version_replaces_every_container() -> None:
    running = [
        _container("apptive-api-1", 3601, "1.0.0"),
        _container("apptive-api-2", 3602, "1.0.0"),
    ]
    plan = rollout_plan(running, "a1", [3601, 3602], "1.0.1")
    assert plan["replace"] == ["apptive-api-1", "apptive-api-2"]
    assert plan["replace_ports"] == [3601, 3602]
    assert plan["drain"] == plan["ready"] == ["a1-apptive-api-1", "a1-apptive-api-2"]
    assert plan["stop"] == ["apptive-api-1", "apptive-api-2"]


def test_rollout_plan_of_a_port_fewer_removes_the_last_container() -> None:
    running = [
        _container("apptive-api-1", 3601, "1.0.0"),
        _container("apptive-api-2", 3602, "1.0.0"),
        _container("apptive-api-3", 3603, "1.0.0"),
    ]
    plan = rollout_plan(running, "a2", [3601, 3602], "1.0.0")
    assert plan["replace"] == []
    assert plan["remove"] == ["apptive-api-3"]
    assert plan["drain"] == ["a2-apptive-api-3"]
    assert plan["ready"] == []
    assert plan["stop"] == ["apptive-api-3"]


def test_rollout_plan_of_a_new_port_a_moved_port_and_a_stopped_container() -> None:
    running = [
        _container("apptive-api-1", 3601, "1.0.0", state="exited"),
        _container("apptive-api-2", 3602, "1.0.0"),
    ]
    plan = rollout_plan(running, "a1", [3601, 3605, 3603], "1.0.0")
    assert plan["replace"] == ["apptive-api-1", "apptive-api-2", "apptive-api-3"]
    assert plan["replace_ports"] == [3601, 3605, 3603]
    # Only what runs is stopped: apptive-api-1 already is, apptive-api-3 does not exist.
    assert plan["stop"] == ["apptive-api-2"]


def test_rollout_plan_of_a_host_without_docker_yet() -> None:
    plan = rollout_plan(None, "a4", [3601, 3602], "1.0.0")
    assert plan["replace"] == ["apptive-api-1", "apptive-api-2"]
    assert plan["drain"] == ["a4-apptive-api-1", "a4-apptive-api-2"]
    assert plan["stop"] == []

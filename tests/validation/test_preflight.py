"""Bad input is refused up front: site.yml fails in its preflight plays, naming the mistake,
and no host changes.

Each case runs the real `ansible-playbook -i <copy of the lab inventory> site.yml` against the
lab, with one mistake: a variable given with -e, or a changed host_vars / hosts.yml in the copy.
The runs are started together, a few at a time (VALIDATION_JOBS, default 4), when the first
case asks for its result; each case then checks its own run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Run, container_of, copy_inventory, edit_yaml, run_site

JOBS = int(os.environ.get("VALIDATION_JOBS", "4"))


def host_vars(host: str, **values: Any) -> Callable[[Path], None]:
    def change(inventory: Path) -> None:
        edit_yaml(inventory / "host_vars" / f"{host}.yml", lambda data: (data or {}) | values)

    return change


def _address_of(container: str) -> str:
    """The lab host's address on the lab network, as its facts give it."""
    return subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
         container],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def hosts_yml(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(inventory: Path) -> None:
        edit_yaml(inventory / "hosts.yml", change)

    return apply


def _lb1_is_an_api_host_too(inventory: dict) -> None:
    inventory["all"]["children"]["api"]["hosts"]["lb1"] = None


def _a_group_with_a_hyphen(inventory: dict) -> None:
    inventory["all"]["children"]["api-eu"] = {"hosts": {"apptive1": None}}


def _no_monitoring_group(inventory: dict) -> None:
    del inventory["all"]["children"]["monitoring"]


def _lb_group_emptied(inventory: dict) -> None:
    inventory["all"]["children"]["lb"]["hosts"] = {}


@dataclass(frozen=True)
class Case:
    id: str
    expected: str
    extra: dict[str, Any] | None = None
    inventory: Callable[[Path], None] | None = None


CASES = [
    Case(
        "port-twice",
        "apptive1: apptive_api_ports lists port 3601 twice",
        inventory=host_vars("apptive1", apptive_api_ports=[3601, 3601]),
    ),
    Case(
        "port-below-1024",
        "apptive2: apptive_api_ports has 80, outside 1024-65535",
        inventory=host_vars("apptive2", apptive_api_ports=[80, 3602, 3603]),
    ),
    Case(
        "port-as-string",
        "apptive3: apptive_api_ports has '3601', which is not a whole number",
        inventory=host_vars("apptive3", apptive_api_ports=["3601", 3602]),
    ),
    Case(
        "port-of-node-exporter",
        "apptive1: apptive_api_ports has 9100, which node exporter uses",
        inventory=host_vars("apptive1", apptive_api_ports=[3601, 9100]),
    ),
    Case(
        "no-ports",
        "apptive3: apptive_api_ports must be a non-empty list of ports",
        inventory=host_vars("apptive3", apptive_api_ports=[]),
    ),
    Case(
        "two-hosts-one-address",
        "port 3601 is also apptive1's; two API hosts cannot listen on the same address and port",
        inventory=lambda inv: host_vars(
            "apptive2", internal_ip=_address_of(container_of("apptive1"))
        )(inv),
    ),
    Case(
        "address-of-another-machine",
        "apptive1: internal_ip 10.9.9.9 is not an address of this host",
        inventory=host_vars("apptive1", internal_ip="10.9.9.9"),
    ),
    Case(
        "loopback-address",
        "apptive3: internal_ip 127.0.0.1 is a loopback address",
        inventory=host_vars("apptive3", internal_ip="127.0.0.1"),
    ),
    Case(
        "api-port-of-haproxy-on-the-same-host",
        "lb1: apptive_api_ports has 8404, which haproxy_stats_port (lb) also uses on this host",
        inventory=lambda inv: (
            hosts_yml(_lb1_is_an_api_host_too)(inv),
            host_vars("lb1", apptive_api_ports=[8404])(inv),
        ),
    ),
    Case(
        "group-name-with-hyphen",
        "group 'api-eu': group names may hold only letters, digits and '_'",
        inventory=hosts_yml(_a_group_with_a_hyphen),
    ),
    Case(
        "no-monitoring-group",
        "group 'monitoring' is missing or empty",
        inventory=hosts_yml(_no_monitoring_group),
    ),
    Case(
        "lb-group-empty",
        "group 'lb' is missing or empty",
        inventory=hosts_yml(_lb_group_emptied),
    ),
    Case(
        "version-not-a-release",
        "apptive_api_version 'latest' is not a release version",
        extra={"apptive_api_version": "latest"},
    ),
    Case(
        "version-nowhere-to-be-had",
        "Refusing to deploy an image version that is not on the host or in the registry",
        extra={"apptive_api_version": "9.9.9"},
    ),
    Case(
        "rollout-batch-zero",
        "apptive_api_rollout_batch 0 must be at least 1 host",
        extra={"apptive_api_rollout_batch": 0},
    ),
    Case(
        "rollout-batch-over-100-percent",
        "apptive_api_rollout_batch '150%' must be at least 1 host, or a percentage from 1% to 100%",
        extra={"apptive_api_rollout_batch": "150%"},
    ),
    Case(
        "rollout-batch-in-the-inventory-differs",
        "apptive_api_rollout_batch differs between API hosts",
        inventory=host_vars("apptive2", apptive_api_rollout_batch=2),
    ),
    Case(
        "drain-timeout-zero",
        "apptive_api_rollout_drain_timeout 0 must be a whole number of seconds >= 1",
        extra={"apptive_api_rollout_drain_timeout": 0},
    ),
    Case(
        "replica-larger-than-storage",
        "glusterfs_server_replica 4 is larger than the storage group (3 hosts)",
        extra={"glusterfs_server_replica": 4},
    ),
    Case(
        "stats-without-password",
        "Set haproxy_stats_password",
        extra={"haproxy_stats_password": ""},
    ),
    Case(
        "stats-port-is-the-frontend-port",
        "haproxy_frontend_port (80), haproxy_stats_port (80) and haproxy_peer_port (10000) "
        "must be distinct",
        extra={"haproxy_stats_port": 80},
    ),
    Case(
        "restart-policy-unknown",
        "apptive_api_restart_policy must be one of",
        extra={"apptive_api_restart_policy": "sometimes"},
    ),
    Case(
        "bind-address-elsewhere",
        "apptive_api_bind_address=10.1.2.3 is not one of the host's IPv4 addresses",
        extra={"apptive_api_bind_address": "10.1.2.3"},
    ),
]


def _run_case(case: Case, workdir: Path) -> Run:
    inventory = copy_inventory(workdir / case.id)
    if case.inventory:
        case.inventory(inventory)
    args = ["-e", json.dumps(case.extra)] if case.extra else []
    return run_site(inventory, *args, timeout=1200)


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Future[Run]]]:
    workdir = Path(tempfile.mkdtemp(prefix="apptive-preflight-"))
    pool = ThreadPoolExecutor(max_workers=JOBS)
    futures = {case.id: pool.submit(_run_case, case, workdir) for case in CASES}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)
    shutil.rmtree(workdir, ignore_errors=True)


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 15
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_refused_in_preflight_without_a_change(case: Case, runs: dict[str, Future[Run]]) -> None:
    run = runs[case.id].result()
    tail = run.output[-3000:]
    assert run.rc != 0, f"site.yml succeeded despite the mistake:\n{tail}"
    assert case.expected in run.flat, f"message not found: {case.expected!r}\n{tail}"
    assert run.recap, f"no PLAY RECAP:\n{tail}"
    assert not run.changed_hosts(), f"hosts changed: {run.changed_hosts()}\n{tail}"
    later = [play for play in run.plays if not play.startswith("Preflight")]
    assert not later, f"plays after the preflight ran: {later}"
    assert sum(c.get("failed", 0) for c in run.recap.values()) > 0, tail

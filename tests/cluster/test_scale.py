"""Scale out and in by editing the inventory, under load, with nothing lost.

1. Out: a copy of the lab inventory gets apptive4 (group api only: a pure API host that mounts
   the volume from the storage hosts, two ports). lab/up.yml creates lab-apptive4, then
   `site.yml --tags storage,api,lb` (storage: the volume admits the new address) brings it into
   service: users reach its two containers through both load balancers, and users pinned
   before keep their container across the reload.
2. In, and a port fewer: a copy without apptive4 and with one port fewer on apptive2.
   `site.yml --tags api_containers,lb` (the hosts' Docker and mount need nothing):
   apptive4's servers and apptive2-apptive-api-3 leave both
   load balancers (drained first), apptive2's apptive-api-3 container is gone, their users are
   served elsewhere with their data. Then lab-apptive4 and its volumes are removed.
3. Back: `site.yml --tags storage,api_containers,lb` with the lab's own inventory brings
   apptive-api-3 back, and the volume stops admitting apptive4's address.

A few workers write and read other users through both load balancers the whole time: no
request may fail, through two reloads of HAProxy and the drains. The lab is restored even when
a step fails. Takes a while (three converges, one of them installing a host): see
docs/runbook.md for the figures.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import LB_URLS, REPO, container_of

LAB = REPO / os.environ.get("LAB_INVENTORY", "inventory/lab")
NEW_HOST = "apptive4"
_LAB_ALL = yaml.safe_load((LAB / "group_vars/all.yml").read_text())
# The lab's hosts have fixed addresses (host_vars: .11-.13, .21, .22, .31); .14 is free.
NEW_HOST_ADDRESS = str(ipaddress.ip_network(_LAB_ALL["lab_network_subnet"])[14])
NEW_CONTAINER = _LAB_ALL["ansible_host"].replace("{{ inventory_hostname }}", NEW_HOST)
NEW_PORTS = [3601, 3602]
REMOVED_SERVER = "apptive2-apptive-api-3"


def _ansible(tool: str, inventory: Path, *args: str, log: Path) -> None:
    env = {
        **os.environ,
        "ANSIBLE_VAULT_PASSWORD_FILE": str(LAB / ".vault-pass"),
        "ANSIBLE_NOCOLOR": "1",
    }
    with log.open("w") as out:
        proc = subprocess.run(
            [str(REPO / ".venv/bin" / tool), "-i", str(inventory), *args],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"{tool} {' '.join(args)} failed; last lines of {log}:\n" + _tail(log))


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text().splitlines()[-lines:])


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False).stdout


def _servers(lb: str) -> dict[str, tuple[int, int]]:
    """{server: (operational state, administrative state)} on one load balancer."""
    out = _docker(
        "exec", container_of(lb), "sh", "-c",
        "echo 'show servers state apptive_api' | socat stdio /run/haproxy/admin.sock",
    )  # fmt: skip
    rows = [line.split() for line in out.splitlines() if re.match(r"^\d+ ", line)]
    return {row[3]: (int(row[5]), int(row[6])) for row in rows}


def _remove_new_host() -> None:
    _docker("rm", "-f", NEW_CONTAINER)
    _docker("volume", "rm", f"{NEW_CONTAINER}-docker", f"{NEW_CONTAINER}-bricks")


def _inventory_copy(dest: Path) -> Path:
    shutil.copytree(LAB, dest, ignore=shutil.ignore_patterns(".vault-pass"))
    return dest


def _edit(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text()) if path.exists() else {}
    path.write_text(yaml.safe_dump(change(data or {}), sort_keys=False))


class Load:
    """Workers writing then reading their own users through both LBs; failures by status."""

    def __init__(self, workers: int = 3, users_per_worker: int = 20) -> None:
        prefix = str(random.randrange(10**11, 10**12))
        self.users = [
            [f"{prefix}{w}{n:03d}" for n in range(users_per_worker)] for w in range(workers)
        ]
        self.failed: Counter[str] = Counter()
        self.sent = 0
        self.acked: dict[str, dict[str, Any]] = {}
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._work, args=(mine,), daemon=True) for mine in self.users
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _work(self, users: list[str]) -> None:
        with requests.Session() as http:
            seq = 0
            while not self.stop.is_set():
                user = users[seq % len(users)]
                lbs = sorted(LB_URLS.values())
                write, read = (lbs[0], lbs[1]) if seq % 2 else (lbs[1], lbs[0])
                url = f"/api/users/{user}/records/load"
                body = {"user": user, "seq": seq}
                ok = self._call(http, "put", write + url, json=body)
                if ok:
                    self.acked[user] = body
                got = self._call(http, "get", read + url)
                if got is not None and user in self.acked and got.json() != self.acked[user]:
                    self.failed["stale read"] += 1
                seq += 1
                self.stop.wait(0.1)

    def _call(self, http: requests.Session, method: str, url: str, **kw: Any) -> Any:
        self.sent += 1
        try:
            response = http.request(method, url, timeout=40, **kw)
        except requests.RequestException as exc:
            self.failed[type(exc).__name__] += 1
            return None
        if response.status_code not in (200, 201):
            self.failed[str(response.status_code)] += 1
            return None
        return response


def _pin(users: list[str], lb: str = "lb1") -> dict[str, str]:
    """Write a record for each user; {user: the container that served it}."""
    served = {}
    with requests.Session() as http:
        for user in users:
            response = http.put(
                f"{LB_URLS[lb]}/api/users/{user}/records/pinned", json={"user": user}, timeout=30
            )
            assert response.status_code in (200, 201), (user, response.status_code, response.text)
            served[user] = response.headers["X-Served-By"]
    return served


def _where(users: list[str], lb: str) -> dict[str, str]:
    """Read each user's record back; {user: the container that served it}."""
    served = {}
    with requests.Session() as http:
        for user in users:
            response = http.get(f"{LB_URLS[lb]}/api/users/{user}/records/pinned", timeout=30)
            assert response.status_code == 200, (lb, user, response.status_code, response.text)
            assert response.json() == {"user": user}
            served[user] = response.headers["X-Served-By"]
    return served


def _new_users(count: int) -> list[str]:
    prefix = str(random.randrange(10**11, 10**12))
    return [f"{prefix}{n:04d}" for n in range(count)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Logs and inventories of the module; the lab is put back however the steps ended."""
    path = tmp_path_factory.mktemp("scale")
    yield path
    # Whatever happened: the lab's own inventory again, then no apptive4.
    try:
        if not (path / "restored").exists():
            _ansible(
                "ansible-playbook", LAB, "site.yml", "--tags", "storage,api,lb",
                log=path / "restore.log",
            )  # fmt: skip
    finally:
        _remove_new_host()


def test_scale_out_in_and_a_port_fewer(workdir: Path) -> None:
    timings: dict[str, float] = {}
    pinned_before = _pin(_new_users(30))

    # 1. Out.
    out_inv = _inventory_copy(workdir / "out")

    def add_host(hosts: dict) -> dict:
        hosts["all"]["children"]["api"]["hosts"][NEW_HOST] = None
        return hosts

    _edit(out_inv / "hosts.yml", add_host)
    _edit(
        out_inv / f"host_vars/{NEW_HOST}.yml",
        lambda _: {"apptive_api_ports": NEW_PORTS, "lab_ipv4_address": NEW_HOST_ADDRESS},
    )
    with Load() as load:
        started = time.monotonic()
        _ansible("ansible-playbook", out_inv, "lab/up.yml", log=workdir / "up.log")
        timings["lab/up.yml"] = time.monotonic() - started
        started = time.monotonic()
        _ansible(
            "ansible-playbook", out_inv, "site.yml", "--tags", "storage,api,lb",
            log=workdir / "out.log",
        )  # fmt: skip
        timings["scale out"] = time.monotonic() - started
    assert not load.failed, f"requests failed while scaling out: {dict(load.failed)}"

    new_servers = {f"{NEW_HOST}-apptive-api-{n}" for n in range(1, len(NEW_PORTS) + 1)}
    for lb in LB_URLS:
        servers = _servers(lb)
        assert new_servers <= set(servers), (lb, sorted(servers))
        assert all(servers[s][0] in (1, 2) and servers[s][1] == 0 for s in new_servers), servers
    assert _where(list(pinned_before), "lb2") == pinned_before, "the reload moved users"
    newcomers = _new_users(120)
    served = _pin(newcomers)
    on_new = {u: c for u, c in served.items() if c.startswith(f"{NEW_HOST}/")}
    assert {c.split("/")[1] for c in on_new.values()} == {"apptive-api-1", "apptive-api-2"}, (
        f"apptive4's containers got no user: {Counter(served.values())}"
    )
    assert _where(list(on_new), "lb2") == on_new, "lb2 sends apptive4's users elsewhere"

    # 2. In, and one port fewer on apptive2.
    in_inv = _inventory_copy(workdir / "in")
    _edit(
        in_inv / "host_vars/apptive2.yml",
        lambda data: data | {"apptive_api_ports": data["apptive_api_ports"][:-1]},
    )
    moved_users = [*served, *pinned_before]
    with Load() as load:
        started = time.monotonic()
        _ansible(
            "ansible-playbook", in_inv, "site.yml", "--tags", "api_containers,lb",
            log=workdir / "in.log",
        )  # fmt: skip
        timings["scale in + port fewer"] = time.monotonic() - started
    assert not load.failed, f"requests failed while scaling in: {dict(load.failed)}"
    for lb in LB_URLS:
        servers = _servers(lb)
        gone = [s for s in servers if s.startswith(f"{NEW_HOST}-") or s == REMOVED_SERVER]
        assert not gone, (lb, gone)
    assert (
        "apptive-api-3"
        not in _docker(
            "exec", container_of("apptive2"), "docker", "ps", "-a", "--format", "{{.Names}}"
        ).split()
    )
    after = _where(moved_users, "lb1")
    assert _where(moved_users, "lb2") == after, "the load balancers disagree on users"
    stale = {u: c for u, c in after.items() if c.startswith(f"{NEW_HOST}/")}
    assert not stale and not [c for c in after.values() if c == "apptive2/apptive-api-3"]
    moved = {
        u: (c, after[u])
        for u, c in pinned_before.items()
        if c != "apptive2/apptive-api-3" and after[u] != c
    }
    assert not moved, f"users of containers that stayed were moved: {moved}"
    _remove_new_host()

    # 3. Back to the lab's own inventory.
    started = time.monotonic()
    _ansible(
        "ansible-playbook", LAB, "site.yml", "--tags", "storage,api_containers,lb",
        log=workdir / "back.log",
    )  # fmt: skip
    timings["back"] = time.monotonic() - started
    (workdir / "restored").touch()
    for lb in LB_URLS:
        assert _servers(lb).get(REMOVED_SERVER, (0, 0))[0] in (1, 2), _servers(lb)
    print("timings:", json.dumps({k: round(v) for k, v in timings.items()}))

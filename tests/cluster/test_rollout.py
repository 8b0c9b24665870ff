"""A rolling upgrade of one host under load: its servers leave both load balancers and come
back, nobody else's do, and no request fails.

A copy of the lab inventory gives apptive3 another release (host_vars apptive_api_version: a
canary); `site.yml --tags api_containers` replaces apptive3's containers while a few workers
write and read users through both load balancers and a watcher polls both load balancers'
server states.
Then the lab's own inventory takes apptive3 back (the same rollout, the other way). A rollout
of every host, with figures, is `make bench-rollout` (docs/rollout.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from conftest import LB_URLS, REPO, container_of
from test_scale import Load

LAB = REPO / os.environ.get("LAB_INVENTORY", "inventory/lab")
HOST = "apptive3"


def _releases() -> tuple[str, str]:
    """The site's release and the next patch (the same source, relabelled by build-image.sh)."""
    site = yaml.safe_load((REPO / "group_vars/all/main.yml").read_text())["apptive_api_version"]
    major, minor, patch = site.split("-")[0].split(".")
    return site, f"{major}.{minor}.{int(patch) + 1}"


def _states(lb: str) -> dict[str, int]:
    out = subprocess.run(
        ["docker", "exec", container_of(lb), "sh", "-c",
         "echo 'show servers state apptive_api' | socat stdio /run/haproxy/admin.sock"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    rows = [line.split() for line in out.splitlines() if re.match(r"^\d+ ", line)]
    return {row[3]: int(row[6]) for row in rows}


class Watch:
    """Every server that was seen out of service (admin state drain or maint) on some LB."""

    def __init__(self) -> None:
        self.out: dict[str, set[str]] = {lb: set() for lb in LB_URLS}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stop.is_set():
            for lb in LB_URLS:
                self.out[lb] |= {s for s, admin in _states(lb).items() if admin & 0x09}
            self.stop.wait(1)


def _site(inventory: Path, log: Path) -> float:
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inventory), "site.yml",
             "--tags", "api_containers"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, check=False,
            env={**os.environ, "ANSIBLE_VAULT_PASSWORD_FILE": str(LAB / ".vault-pass"),
                 "ANSIBLE_NOCOLOR": "1"},
        )  # fmt: skip
    assert proc.returncode == 0, "\n".join(log.read_text().splitlines()[-40:])
    return time.monotonic() - started


def _versions(host: str) -> set[str]:
    out = subprocess.run(
        ["docker", "exec", container_of(host), "docker", "ps", "--filter", "label=io.apptive.role=api",
         "--format", '{{.Label "io.apptive.version"}}'],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return set(out.split())


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    running = _versions(HOST)
    other = next(v for v in _releases() if v not in running)
    if not (REPO / "dist" / f"apptive-api-{other}.tar").exists():
        subprocess.run(["bash", str(REPO / "scripts/build-image.sh"), other], check=True)
    inventory = tmp_path / "inventory"
    shutil.copytree(LAB, inventory, ignore=shutil.ignore_patterns(".vault-pass"))
    path = inventory / "host_vars" / f"{HOST}.yml"
    data = yaml.safe_load(path.read_text()) | {"apptive_api_version": other}
    path.write_text(yaml.safe_dump(data))
    yield inventory, other
    _site(LAB, tmp_path / "back.log")


def test_one_host_rolls_under_load_without_a_failed_request(
    canary: tuple[Path, str], tmp_path: Path
) -> None:
    inventory, version = canary
    with Load() as load, Watch() as watch:
        seconds = _site(inventory, tmp_path / "rollout.log")
    assert not load.failed, f"{dict(load.failed)} of {load.sent} requests failed"
    assert _versions(HOST) == {version}
    mine = {s for s in _states("lb1") if s.startswith(f"{HOST}-")}
    for lb in LB_URLS:
        assert watch.out[lb] & mine, f"{lb} never took {HOST}'s servers out"
        assert watch.out[lb] <= mine, f"{lb} took other servers out: {watch.out[lb] - mine}"
        states = _states(lb)
        assert all(states[s] == 0 for s in mine), f"{lb} did not put them back: {states}"
    health = requests.get(f"{LB_URLS['lb1']}/health", timeout=10)
    assert health.status_code == 200
    print(f"rollout of {HOST} to {version}: {seconds:.0f} s, {load.sent} requests, 0 failed")

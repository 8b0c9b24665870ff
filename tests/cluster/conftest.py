"""Fixtures for tests that run against the lab (`make lab`).

Traffic goes only to the lab's ports published on 127.0.0.1; the lab's layout comes from the
lab inventory itself, so a host added there is expected here too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_URL = os.environ.get("LAB_PROMETHEUS_URL", "http://127.0.0.1:9090")
LB_URLS = {
    "lb1": os.environ.get("LAB_LB1_URL", "http://127.0.0.1:8080"),
    "lb2": os.environ.get("LAB_LB2_URL", "http://127.0.0.1:8081"),
}


@dataclass(frozen=True)
class Lab:
    inventory: dict
    containers: frozenset[str]

    def hosts(self, group: str) -> list[str]:
        return list(self.inventory.get(group, {}).get("hosts", []))

    def container(self, host: str) -> str:
        """The Docker container that stands in for an inventory host."""
        return rendered(host, str(self.inventory["_meta"]["hostvars"][host]["ansible_host"]))


def container_of(host: str) -> str:
    """The lab container of an inventory host, read from the lab inventory's group_vars."""
    inventory_dir = REPO / os.environ.get("LAB_INVENTORY", "inventory/lab")
    template = yaml.safe_load((inventory_dir / "group_vars/all.yml").read_text())["ansible_host"]
    return rendered(host, template)


def rendered(host: str, value: str) -> str:
    """`ansible-inventory --list` leaves templates as they are: the lab's ansible_host is
    "lab-{{ inventory_hostname }}"; this is the only template the lab inventories use there."""
    value = re.sub(r"\{\{\s*inventory_hostname\s*\}\}", host, value)
    if "{{" in value:
        raise ValueError(f"{host}: cannot render {value!r} without Ansible")
    return value


def _inventory() -> dict:
    inventory_dir = os.environ.get("LAB_INVENTORY", "inventory/lab")
    out = subprocess.run(
        [str(REPO / ".venv/bin/ansible-inventory"), "-i", inventory_dir, "--list"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "ANSIBLE_VAULT_PASSWORD_FILE": str(REPO / inventory_dir / ".vault-pass"),
        },
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def lab() -> Lab:
    inventory = _inventory()
    hostvars = inventory["_meta"]["hostvars"]
    containers = frozenset(
        f"{host}/apptive-api-{index}"
        for host in inventory["api"]["hosts"]
        for index in range(1, len(hostvars[host]["apptive_api_ports"]) + 1)
    )
    for name, url in LB_URLS.items():
        try:
            requests.get(f"{url}/health", timeout=5)
        except requests.ConnectionError:
            pytest.fail(f"{name} does not answer on {url}: bring the lab up with `make lab`")
    return Lab(inventory=inventory, containers=containers)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def user_ids() -> list[str]:
    """100 users no earlier run has written: a random 12-digit prefix per test."""
    prefix = str(secrets.randbelow(9 * 10**11) + 10**11)
    return [f"{prefix}{n:03d}" for n in range(100)]

"""The lab as the hardening tests see it: its inventory (tests/cluster's), its host containers,
the ports it publishes on this machine, and the lb group's vault.

The lab comes from the environment like the cluster tests (LAB_INVENTORY, default the lab of
`make lab`); its published stats ports come from the inventory itself.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _cluster_conftest() -> Any:
    """tests/cluster/conftest.py under a name of its own: `conftest` may be another file's."""
    name = "apptive_cluster_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, REPO / "tests" / "cluster" / "conftest.py"
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_cluster = _cluster_conftest()


@cache
def inventory() -> dict[str, Any]:
    return dict(_cluster._inventory())


def inventory_dir() -> Path:
    return REPO / os.environ.get("LAB_INVENTORY", "inventory/lab")


def hostvars(host: str) -> dict[str, Any]:
    return dict(inventory()["_meta"]["hostvars"][host])


def hosts(group: str) -> list[str]:
    return list(inventory().get(group, {}).get("hosts", []))


def container(host: str) -> str:
    """`ansible-inventory --list` leaves templates as they are: the lab's ansible_host is
    "lab-{{ inventory_hostname }}"; this is the only template the lab inventories use there."""
    value = re.sub(r"\{\{\s*inventory_hostname\s*\}\}", host, str(hostvars(host)["ansible_host"]))
    if "{{" in value:
        raise ValueError(f"{host}: cannot render {value!r} without Ansible")
    return value


def internal_ip(host: str) -> str:
    """The host's address on the lab network: what internal_ip resolves to there."""
    return subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            container(host),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def published_url(host: str, container_port: int) -> str:
    """http://<address>:<port> on this machine for a port the lab publishes for a host."""
    for spec in hostvars(host).get("lab_published_ports", []):
        match = re.fullmatch(r"(?:(\d+\.\d+\.\d+\.\d+):)?(\d+):(\d+)", str(spec))
        if match and int(match.group(3)) == container_port:
            return f"http://{match.group(1) or '127.0.0.1'}:{match.group(2)}"
    pytest.skip(f"{host} publishes no port for {container_port} in this lab inventory")


def vault_secrets() -> dict[str, str]:
    """The lb group's vault, read with `ansible-vault view` (never stored anywhere else)."""
    vault_file = inventory_dir() / "group_vars" / "lb" / "vault.yml"
    password_file = os.environ.get(
        "ANSIBLE_VAULT_PASSWORD_FILE", str(inventory_dir() / ".vault-pass")
    )
    out = subprocess.run(
        [str(REPO / ".venv/bin/ansible-vault"), "view", str(vault_file)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "ANSIBLE_VAULT_PASSWORD_FILE": password_file},
    ).stdout
    pairs = re.findall(r'^(\w+):\s*"?([^"\n]*)"?\s*$', out, re.MULTILINE)
    return dict(pairs)


def api_containers(host: str) -> list[str]:
    return [f"apptive-api-{n}" for n in range(1, len(hostvars(host)["apptive_api_ports"]) + 1)]

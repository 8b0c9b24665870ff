"""Helpers for tests that run site.yml against the lab with a changed copy of its inventory.

The copy lives in the test's tmp_path (hosts.yml, host_vars, group_vars, the lab's vault file);
the vault password file stays where `make lab` put it. Output is JSON-formatted and colourless
so that messages can be searched for as they were written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / os.environ.get("LAB_INVENTORY", "inventory/lab")
VAULT_PASS = LAB_INVENTORY / ".vault-pass"


@dataclass
class Run:
    rc: int
    output: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    plays: list[str] = field(default_factory=list)

    @property
    def flat(self) -> str:
        """The output with every run of white space made one space (messages wrap)."""
        return " ".join(self.output.split())

    def changed_hosts(self) -> dict[str, int]:
        return {host: c["changed"] for host, c in self.recap.items() if c.get("changed")}


def parse(rc: int, output: str) -> Run:
    run = Run(rc=rc, output=output)
    run.plays = re.findall(r"^PLAY \[(.*?)\] \*+$", output, re.M)
    tail = output[output.rfind("PLAY RECAP") :] if "PLAY RECAP" in output else ""
    for line in tail.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line)
        if match:
            run.recap[match.group(1)] = {
                key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(2))
            }
    return run


def run_site(inventory: Path, *args: str, timeout: float = 1800) -> Run:
    """ansible-playbook -i <inventory> site.yml <args>, from the repository root."""
    env = {
        **os.environ,
        "ANSIBLE_VAULT_PASSWORD_FILE": str(VAULT_PASS),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
    }
    proc = subprocess.run(
        [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inventory), "site.yml", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return parse(proc.returncode, proc.stdout + proc.stderr)


def container_of(host: str) -> str:
    """The lab container of an inventory host ("lab-{{ inventory_hostname }}" in the lab)."""
    template = yaml.safe_load((LAB_INVENTORY / "group_vars/all.yml").read_text())["ansible_host"]
    return re.sub(r"\{\{\s*inventory_hostname\s*\}\}", host, template)


def copy_inventory(dest: Path) -> Path:
    """A copy of the lab inventory (without its vault password file) at dest."""
    shutil.copytree(LAB_INVENTORY, dest, ignore=shutil.ignore_patterns(".vault-pass"))
    return dest


def edit_yaml(path: Path, change: Callable[[Any], Any]) -> None:
    """Load a YAML file of the inventory copy (or start from {}), change it, write it back."""
    data = yaml.safe_load(path.read_text()) if path.exists() else {}
    result = change(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data if result is None else result, sort_keys=False))


@pytest.fixture(scope="session", autouse=True)
def _lab_is_up() -> None:
    if not VAULT_PASS.exists():
        pytest.skip(f"no lab: {VAULT_PASS} is missing (make lab)")

"""`site.yml --check --diff` changes nothing and shows what a run would change.

On the converged lab it fails nowhere and reports no change. With one port fewer on apptive2
(a copy of the inventory) it shows the diff of haproxy.cfg on both load balancers, with the
stats password masked, and still changes nothing: the container and its backend server are
where they were. The two runs go side by side.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import (
    LAB_INVENTORY,
    REPO,
    VAULT_PASS,
    Run,
    container_of,
    copy_inventory,
    edit_yaml,
    run_site,
)

REMOVED = "apptive2-apptive-api-3"


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False).stdout


def _server_states(lb_container: str) -> dict[str, str]:
    out = _docker(
        "exec", lb_container, "sh", "-c",
        "echo 'show servers state apptive_api' | socat stdio /run/haproxy/admin.sock",
    )  # fmt: skip
    rows = [line.split() for line in out.splitlines() if re.match(r"^\d+ ", line)]
    # Administrative state only: the operational one follows health checks on its own.
    return {row[3]: row[6] for row in rows}


def _containers(host_container: str) -> set[str]:
    return set(_docker("exec", host_container, "docker", "ps", "--format", "{{.Names}}").split())


def _stats_password() -> str:
    out = subprocess.run(
        [str(REPO / ".venv/bin/ansible-vault"), "view", "--vault-password-file", str(VAULT_PASS),
         str(LAB_INVENTORY / "group_vars/lb/vault.yml")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split(":", 1)[1].strip().strip("\"'")


def _one_port_fewer(workdir: Path) -> Run:
    inventory = copy_inventory(workdir / "inventory")
    edit_yaml(
        inventory / "host_vars/apptive2.yml",
        lambda data: data | {"apptive_api_ports": data["apptive_api_ports"][:-1]},
    )
    return run_site(inventory, "--check", "--diff", "--tags", "api_containers,lb")


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Future[Run]]]:
    workdir = Path(tempfile.mkdtemp(prefix="apptive-check-"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            "converged": pool.submit(run_site, LAB_INVENTORY, "--check", "--diff"),
            "port_fewer": pool.submit(_one_port_fewer, workdir),
        }
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def before() -> dict[str, object]:
    """What runs, read before the check runs start (the fixture order of the first test)."""
    return {
        "lb1": _server_states(container_of("lb1")),
        "lb2": _server_states(container_of("lb2")),
        "apptive2": _containers(container_of("apptive2")),
    }


def test_converged_lab_reports_nothing_to_change(
    before: dict[str, object], runs: dict[str, Future[Run]]
) -> None:
    run = runs["converged"].result()
    tail = run.output[-3000:]
    assert run.rc == 0, tail
    assert not run.changed_hosts(), f"check mode would change: {run.changed_hosts()}\n{tail}"
    assert all(c.get("failed", 0) == 0 for c in run.recap.values()), tail
    assert set(run.recap) >= {"apptive1", "apptive2", "apptive3", "lb1", "lb2", "mon1"}


def test_one_port_fewer_shows_the_haproxy_diff_and_changes_nothing(
    before: dict[str, object], runs: dict[str, Future[Run]]
) -> None:
    run = runs["port_fewer"].result()
    tail = run.output[-3000:]
    assert run.rc == 0, tail
    removed_lines = re.findall(rf"^-\s+server {REMOVED} \S+:3603$", run.output, re.M)
    assert len(removed_lines) == 2, f"expected the server line removed on lb1 and lb2:\n{tail}"
    assert not re.search(r"^[-+]\s+server (?!" + REMOVED + ")", run.output, re.M), (
        "only apptive2's third server should leave the configuration"
    )
    assert _stats_password() not in run.output, "the stats password is in the output"
    changed = run.changed_hosts()
    assert {"apptive2", "lb1", "lb2"} <= set(changed), changed
    assert not {"apptive1", "apptive3", "mon1"} & set(changed), changed
    # Nothing really changed: the container runs, both LBs still have the server as before.
    assert "apptive-api-3" in _containers(container_of("apptive2"))
    assert _server_states(container_of("lb1")) == before["lb1"]
    assert _server_states(container_of("lb2")) == before["lb2"]

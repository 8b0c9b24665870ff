"""Bad inputs stop the play in preflight, with a message naming the variable."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import inventory


def run_preflight(extra_vars: dict[str, object]) -> tuple[int, list[str]]:
    """Runs preflight.yml; returns its exit code and the messages of the failed tasks."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    # Nothing else may write to stdout, which must hold only the JSON.
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    proc = subprocess.run(
        [
            "ansible-playbook",
            "--inventory",
            inventory(),
            "--extra-vars",
            json.dumps(extra_vars),
            "preflight.yml",
        ],
        cwd=os.environ["MOLECULE_SCENARIO_DIRECTORY"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        result = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"no JSON from ansible-playbook:\n{proc.stderr}") from exc
    messages = [
        " ".join(str(res.get("msg", "")).split())
        for play in result["plays"]
        for task in play["tasks"]
        for res in task["hosts"].values()
        if res.get("failed")
    ]
    return proc.returncode, messages


def test_preflight_passes_with_the_scenario_inputs() -> None:
    rc, messages = run_preflight({})
    assert (rc, messages) == (0, [])


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ({"glusterfs_client_servers": []}, "glusterfs_client_servers is empty"),
        (
            {"glusterfs_server_cluster_hosts": ["mol-glusterfs-a", "mol-glusterfs-x"]},
            "(unknown: mol-glusterfs-x)",
        ),
        (
            {
                "glusterfs_server_arbiter": True,
                "glusterfs_server_cluster_hosts": ["mol-glusterfs-a", "mol-glusterfs-b"],
            },
            "glusterfs_server_cluster_hosts (2) must be a multiple of 3",
        ),
    ],
    ids=["no-client-servers", "unknown-cluster-host", "arbiter-needs-3"],
)
def test_preflight_rejects(extra_vars: dict[str, object], message: str) -> None:
    rc, messages = run_preflight(extra_vars)
    assert rc != 0
    assert messages, "the play failed, but no task did"
    # Each host stops at its first failed check: a host left out of a list fails another one.
    assert any(message in m for m in messages), messages
    assert all("glusterfs_" in m for m in messages), messages

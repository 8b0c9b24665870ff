"""Check mode on the converged hosts reports no change (molecule's own check step only runs)."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import inventory


def test_check_mode_reports_no_change() -> None:
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    # Nothing else may write to stdout, which must hold only the JSON.
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    proc = subprocess.run(
        ["ansible-playbook", "--inventory", inventory(), "--check", "converge.yml"],
        cwd=os.environ["MOLECULE_SCENARIO_DIRECTORY"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        result = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"no JSON from ansible-playbook --check:\n{proc.stderr}") from exc
    changed = [
        f"{task['task']['name']} on {name}"
        for play in result["plays"]
        for task in play["tasks"]
        for name, res in task["hosts"].items()
        if res.get("changed")
    ]
    stats = result["stats"]
    assert proc.returncode == 0, f"--check failed: {stats}\n{proc.stderr[-3000:]}"
    assert not changed, f"--check would change: {changed}"
    assert all(s["changed"] == 0 and s["failures"] == 0 for s in stats.values()), stats

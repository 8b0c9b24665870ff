"""Bad input stops the role in preflight, with a message that says what to fix."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SCENARIO = Path(__file__).resolve().parents[1]
PROJECT = SCENARIO.parents[1]
SERVER = {"name": "app1", "address": "10.0.0.1", "port": 8081}

# id: (extra vars, what the failure message must say). "valid" is the scenario's own input.
CASES = {
    "valid": ({}, None),
    "no-servers": ({"haproxy_backend_servers": []}, "haproxy_backend_servers is empty"),
    "name-repeats": (
        {"haproxy_backend_servers": [SERVER, {**SERVER, "port": 8082}]},
        "repeated names: app1;",
    ),
    "endpoint-repeats": (
        {"haproxy_backend_servers": [SERVER, {**SERVER, "name": "app2"}]},
        "repeated address:port: 10.0.0.1:8081;",
    ),
    "port-range": ({"haproxy_backend_servers": [{**SERVER, "port": 70000}]}, "bad ports: 70000."),
    "no-password": ({"haproxy_stats_password": ""}, "Set haproxy_stats_password"),
    "not-a-peer": ({"haproxy_peer_name": "elsewhere"}, "haproxy_peer_name (elsewhere) must be"),
    "port-clash": ({"haproxy_stats_port": 80}, "must be distinct ports"),
}


def preflight(inventory: str, extra_vars: dict) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        ANSIBLE_ROLES_PATH=str(PROJECT / "roles"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    command = [
        str(Path(sys.executable).with_name("ansible-playbook")),
        *("-i", inventory, "-e", json.dumps(extra_vars)),
        str(SCENARIO / "preflight-check.yml"),
    ]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=PROJECT, env=env, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest) -> dict:
    """Every case's run; they change nothing, so they run side by side."""
    inventory = request.config.option.ansible_inventory
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(preflight, inventory, v) for case, (v, _) in CASES.items()}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", CASES)
def test_preflight(results, case):
    result, message = results[case], CASES[case][1]
    if message is None:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    else:
        assert result.returncode != 0, f"{case} passed preflight"
        # The failure may be on stdout or stderr, its message wrapped over several lines.
        output = " ".join((result.stdout + result.stderr).split())
        assert message in output, output[-3000:]

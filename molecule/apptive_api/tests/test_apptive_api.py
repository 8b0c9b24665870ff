"""The apptive_api role on one host: two hardened containers, healthy, on the host address only.

Runs on the converged host (ports 3601 and 3602), before side_effect.yml changes anything. On a
failed assertion a test prints the containers' logs and health checks, so a red CI run explains
itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

# The release the site deploys, which tests/unit/test_release.py ties to the app's own version,
# so `make image` has built its archive before Molecule runs.
VERSION = yaml.safe_load(
    (Path(__file__).resolve().parents[3] / "group_vars/all/main.yml").read_text()
)["apptive_api_version"]
CONTAINERS = {"apptive-api-1": 3601, "apptive-api-2": 3602}
STORE = "/mnt/apptive_store"
UID = "10001"

# Runs inside the host (not on the controller): the ports are published on the host's own
# address, which only the host and its network can reach. Prints status, X-Served-By, body.
HTTP_CLIENT = r"""
import json, sys, urllib.error, urllib.request
method, url, body = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None
data = body.encode() if body is not None else None
req = urllib.request.Request(url, data=data, method=method,
                             headers={"Content-Type": "application/json"})
try:
    resp = urllib.request.urlopen(req, timeout=30)
except urllib.error.HTTPError as exc:
    resp = exc
print(json.dumps({"status": resp.status, "served_by": resp.headers.get("X-Served-By"),
                  "body": resp.read().decode()}))
"""


@contextlib.contextmanager
def diagnostics(host) -> Iterator[None]:
    """On a failed assertion, print what an operator would look at first, then re-raise."""
    try:
        yield
    except AssertionError:
        print(host.run("docker ps -a --filter label=io.apptive.role=api").stdout)
        for name in CONTAINERS:
            health = host.run("docker inspect --format '{{json .State.Health}}' %s", name).stdout
            logs = host.run("docker logs --tail 40 %s 2>&1", name).stdout
            print(f"--- {name} health: {health}\n--- {name} logs:\n{logs}")
        raise


def inspect(host, name: str) -> dict:
    return json.loads(host.check_output("docker inspect %s", name))[0]


def host_ip(host) -> str:
    addresses = host.interface.default("inet").addresses
    assert addresses, "the host has no IPv4 address on its default interface"
    return addresses[0]


def http(host, method: str, url: str, body: str | None = None) -> dict:
    args = [method, url] + ([body] if body is not None else [])
    cmd = "python3 -c %s " + " ".join(["%s"] * len(args))
    return json.loads(host.check_output(cmd, HTTP_CLIENT, *args))


@pytest.mark.parametrize("name,port", CONTAINERS.items())
def test_container_runs_healthy(host, name, port):
    with diagnostics(host):
        info = inspect(host, name)
        # One slow probe on a loaded machine flips a container to unhealthy for a cycle: wait
        # (bounded) for it to be healthy again rather than read a single moment.
        deadline = time.monotonic() + 60
        while info["State"]["Health"]["Status"] != "healthy" and time.monotonic() < deadline:
            time.sleep(2)
            info = inspect(host, name)
        assert info["State"]["Running"]
        assert info["State"]["Health"]["Status"] == "healthy"
        assert info["Config"]["Image"] == f"apptive-api:{VERSION}"
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert info["Config"]["Labels"]["io.apptive.role"] == "api"
        assert info["Config"]["Labels"]["io.apptive.port"] == str(port)
        assert info["Config"]["Labels"]["io.apptive.version"] == VERSION
        assert f"APPTIVE_INSTANCE=mol-apptive-api-a/{name}" in info["Config"]["Env"]
        # Interval and command of the health check come from the role, not only the image.
        healthcheck = info["Config"]["Healthcheck"]
        assert healthcheck["Interval"] == 2_000_000_000
        assert healthcheck["Test"][0] == "CMD"


@pytest.mark.parametrize("name,port", CONTAINERS.items())
def test_container_is_hardened(host, name, port):
    with diagnostics(host):
        info = inspect(host, name)
        hc = info["HostConfig"]
        assert info["Config"]["User"] == f"{UID}:{UID}"
        assert hc["ReadonlyRootfs"] is True
        assert "/tmp" in hc["Tmpfs"]
        assert hc["CapDrop"] == ["ALL"]
        assert not hc["CapAdd"]
        assert hc["SecurityOpt"] == ["no-new-privileges:true"]
        assert hc["Memory"] == 256 * 1024 * 1024
        assert hc["PidsLimit"] == 128
        assert not hc["Privileged"]
        # The process itself, not only the configuration.
        status = host.check_output("docker exec %s cat /proc/1/status", name)
        assert f"Uid:\t{UID}\t{UID}" in status
        assert "NoNewPrivs:\t1" in status
        assert "CapEff:\t0000000000000000" in status


@pytest.mark.parametrize("name,port", CONTAINERS.items())
def test_container_mounts_the_store(host, name, port):
    with diagnostics(host):
        mounts = {m["Destination"]: m for m in inspect(host, name)["Mounts"]}
        assert mounts["/data/apptive"]["Source"] == STORE
        assert mounts["/data/apptive"]["RW"] is True


@pytest.mark.parametrize("name,port", CONTAINERS.items())
def test_port_published_on_host_address_only(host, name, port):
    ip = host_ip(host)
    with diagnostics(host):
        bindings = inspect(host, name)["HostConfig"]["PortBindings"]
        assert bindings == {"3600/tcp": [{"HostIp": ip, "HostPort": str(port)}]}
        assert host.socket(f"tcp://{ip}:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
        assert not host.socket(f"tcp://127.0.0.1:{port}").is_listening


def test_only_the_listed_containers_exist(host):
    # Exactly one container per port carries the API label, nothing else.
    names = host.check_output(
        "docker ps -a --filter label=io.apptive.role=api --format '{{.Names}}'"
    ).split()
    assert sorted(names) == sorted(CONTAINERS)


def test_health_through_the_host_address(host):
    ip = host_ip(host)
    with diagnostics(host):
        answer = http(host, "GET", f"http://{ip}:3601/health")
        assert answer["status"] == 200, answer
        assert answer["served_by"] == "mol-apptive-api-a/apptive-api-1"
        body = json.loads(answer["body"])
        assert body["status"] == "ok"
        assert body["version"] == VERSION
        assert body["instance"] == "mol-apptive-api-a/apptive-api-1"


def test_record_round_trip_through_the_shared_store(host):
    ip = host_ip(host)
    record = json.dumps({"molecule": "apptive_api", "n": 1})
    with diagnostics(host):
        put = http(host, "PUT", f"http://{ip}:3602/api/users/4242/records/molecule", record)
        assert put["status"] in (200, 201), put
        assert put["served_by"] == "mol-apptive-api-a/apptive-api-2"
        got = http(host, "GET", f"http://{ip}:3602/api/users/4242/records/molecule")
        assert got["status"] == 200, got
        assert json.loads(got["body"]) == json.loads(record)
        # The other container sees the same store.
        other = http(host, "GET", f"http://{ip}:3601/api/users/4242/records/molecule")
        assert other["status"] == 200, other
        assert json.loads(other["body"]) == json.loads(record)


def test_image_archive_cached(host):
    archive = host.file(f"/var/cache/apptive/apptive-api-{VERSION}.tar")
    assert archive.is_file
    assert archive.user == "root"
    assert archive.mode == 0o640


def test_check_mode_reports_no_change():
    """`ansible-playbook --check` of the converge playbook on the converged host changes nothing.

    Runs on the controller with Molecule's own inventory and ansible.cfg (from the environment
    Molecule gives the verifier), so the role is judged exactly as converge ran it.
    """
    scenario = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    # The ansible-playbook of the venv pytest runs from, even when that venv is not on PATH.
    venv_playbook = Path(sys.executable).with_name("ansible-playbook")
    playbook = str(venv_playbook) if venv_playbook.exists() else "ansible-playbook"
    result = subprocess.run(
        [playbook, "--check", "-i", str(inventory), str(scenario / "converge.yml")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
        timeout=600,
    )
    recap = result.stdout.split("PLAY RECAP", 1)[-1]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "changed=0" in recap and "failed=0" in recap, result.stdout[-6000:]

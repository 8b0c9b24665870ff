"""Security settings of the running lab, read from its hosts with testinfra (docker backend).

Each assertion names the role variable that provides the setting, so a failure says what is
missing where.
"""

from __future__ import annotations

import json
import re
from typing import Any

import requests
from labhosts import (
    api_containers,
    container,
    hosts,
    internal_ip,
    inventory,
    inventory_dir,
    published_url,
    vault_secrets,
)

APP_UID = 10001


def _inspect(target: Any, name: str) -> dict[str, Any]:
    return dict(json.loads(target.check_output(f"docker inspect {name}"))[0])


def _proc_status(target: Any, name: str) -> dict[str, str]:
    text = target.check_output(f"docker exec {name} cat /proc/1/status")
    return dict(re.findall(r"^(\w+):\s+(.*)$", text, re.MULTILINE))


# --- API containers ----------------------------------------------------------------------------


def test_api_containers_are_confined(target: Any, api_host: str) -> None:
    address = internal_ip(api_host)
    for name in api_containers(api_host):
        info = _inspect(target, name)
        config, host_config = info["Config"], info["HostConfig"]
        where = f"{api_host}/{name}"

        assert config["User"] == f"{APP_UID}:{APP_UID}", f"{where}: apptive_api_user"
        assert host_config["ReadonlyRootfs"] is True, f"{where}: read_only in apptive_api"
        assert host_config["CapDrop"] == ["ALL"], f"{where}: cap_drop [ALL] in apptive_api"
        assert not host_config["CapAdd"], f"{where}: capabilities added: {host_config['CapAdd']}"
        assert host_config["Privileged"] is False, where
        assert any(
            opt.startswith("no-new-privileges") and not opt.endswith("false")
            for opt in host_config["SecurityOpt"] or []
        ), f"{where}: no-new-privileges in apptive_api's security_opts"
        assert host_config["Memory"] > 0, f"{where}: apptive_api_memory"
        assert (host_config["PidsLimit"] or 0) > 0, f"{where}: apptive_api_pids_limit"

        bindings = [b for per_port in host_config["PortBindings"].values() for b in per_port]
        assert bindings, f"{where}: no published port"
        assert {b["HostIp"] for b in bindings} == {address}, (
            f"{where}: published on {bindings}, expected {address} only "
            "(apptive_api_bind_address: internal_ip)"
        )

        # The running process, not only its configuration.
        status = _proc_status(target, name)
        assert status["Uid"].split() == [str(APP_UID)] * 4, f"{where}: Uid {status['Uid']}"
        assert int(status["CapEff"], 16) == 0, f"{where}: effective caps {status['CapEff']}"
        assert int(status["CapBnd"], 16) == 0, f"{where}: bounding caps {status['CapBnd']}"
        assert status["NoNewPrivs"] == "1", f"{where}: NoNewPrivs {status['NoNewPrivs']}"
        mounts = target.check_output(f"docker exec {name} cat /proc/1/mounts").splitlines()
        root = next(line.split()[3] for line in mounts if line.split()[1] == "/")
        assert root.split(",")[0] == "ro", f"{where}: root mounted {root}"


def test_api_ports_listen_on_internal_ip_only(target: Any, api_host: str) -> None:
    address = internal_ip(api_host)
    for name in api_containers(api_host):
        port = _inspect(target, name)["HostConfig"]["PortBindings"]["3600/tcp"][0]["HostPort"]
        assert target.socket(f"tcp://{address}:{port}").is_listening, f"{api_host}:{port}"
        for wildcard in ("0.0.0.0", "::"):
            assert not target.socket(f"tcp://{wildcard}:{port}").is_listening, (
                f"{api_host}/{name} listens on {wildcard}:{port}"
            )


# --- HAProxy -----------------------------------------------------------------------------------


def test_runtime_socket_is_local_only(target: Any, lb_host: str) -> None:
    sock = target.file("/run/haproxy/admin.sock")
    assert sock.is_socket, "haproxy_runtime_socket"
    assert sock.mode == 0o660, f"mode {sock.mode:o}: `stats socket ... mode 660` in haproxy.cfg"
    assert sock.user == "root" or sock.user == "haproxy", sock.user
    assert sock.group == "haproxy", sock.group
    # Debian's unit adds the master CLI (-S /run/haproxy-master.sock): connecting needs write
    # permission on the socket, which only its owner (root) may have.
    master = target.file("/run/haproxy-master.sock")
    if master.exists:
        assert master.user == "root" and master.mode & 0o022 == 0, f"master {master.mode:o}"
    # Every runtime socket in the configuration is a unix path, none on an address.
    lines = target.check_output("grep -E '^\\s*stats socket' /etc/haproxy/haproxy.cfg").splitlines()
    assert lines, "no runtime socket configured"
    for line in lines:
        where = line.split()[2]
        assert where.startswith("/") and not where.startswith(("ipv4@", "ipv6@")), line
    # What HAProxy listens on over TCP: the frontend, stats/metrics and peers, nothing else.
    listening = target.check_output("ss -Hltnp").splitlines()
    haproxy_ports = {
        int(line.split()[3].rsplit(":", 1)[1]) for line in listening if '"haproxy"' in line
    }
    assert haproxy_ports == {80, 8404, 10000}, haproxy_ports


def test_haproxy_config_is_not_world_readable(target: Any, lb_host: str) -> None:
    cfg = target.file("/etc/haproxy/haproxy.cfg")
    assert cfg.mode & 0o007 == 0, f"haproxy.cfg mode {cfg.mode:o} (it holds the stats password)"


def test_stats_page_needs_the_vault_password(lb_host: str) -> None:
    vault_file = (inventory_dir() / "group_vars" / "lb" / "vault.yml").read_text()
    assert vault_file.startswith("$ANSIBLE_VAULT;"), "the stats password is not in a vault"
    password = vault_secrets()["vault_haproxy_stats_password"]
    user = "admin"
    url = f"{published_url(lb_host, 8404)}/stats"

    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, auth=(user, password + "x"), timeout=10).status_code == 401
    answer = requests.get(url, auth=(user, password), timeout=10)
    assert answer.status_code == 200, answer.status_code
    assert "apptive_api" in answer.text
    # Prometheus scrapes /metrics on the same internal listener, by design without a password.
    assert requests.get(url.replace("/stats", "/metrics"), timeout=10).status_code == 200


def test_stats_listener_is_on_internal_ip(target: Any, lb_host: str) -> None:
    address = internal_ip(lb_host)
    assert target.socket(f"tcp://{address}:8404").is_listening, "haproxy_stats_address"
    assert not target.socket("tcp://0.0.0.0:8404").is_listening, "haproxy_stats_address"


# --- Gluster -----------------------------------------------------------------------------------


def test_gluster_admits_only_cluster_hosts(target: Any, storage_host: str) -> None:
    out = target.check_output("gluster volume get apptive auth.allow")
    value = next(line.split()[1] for line in out.splitlines() if line.startswith("auth.allow"))
    allowed = set(value.split(","))
    cluster = set(hosts("storage")) | set(hosts("api"))
    expected = {internal_ip(host) for host in cluster} | {"127.0.0.1"}
    assert "*" not in value, f"auth.allow is {value}: glusterfs_server_auth_allow"
    assert allowed <= expected | cluster, (
        f"auth.allow admits {sorted(allowed - expected - cluster)} beyond the cluster hosts"
    )
    missing = {internal_ip(host) for host in hosts("api")} - allowed
    assert not missing, f"API hosts not admitted: {missing} (glusterfs_server_auth_allow_extra)"


# --- node exporter -----------------------------------------------------------------------------


def test_node_exporter_listens_on_internal_ip_only(target: Any, any_host: str) -> None:
    address = internal_ip(any_host)
    assert target.service("prometheus-node-exporter").is_running
    assert target.socket(f"tcp://{address}:9100").is_listening, "node_exporter_listen_address"
    for other in ("0.0.0.0", "::", "127.0.0.1"):
        assert not target.socket(f"tcp://{other}:9100").is_listening, (
            f"{any_host}: node exporter on {other}:9100 (node_exporter_listen_address)"
        )


def test_inventory_is_the_lab() -> None:
    # Never against production: every host must be a container of this machine.
    for host in inventory()["_meta"]["hostvars"]:
        assert container(host), host

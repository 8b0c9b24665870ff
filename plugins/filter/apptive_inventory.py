"""Filters that turn the inventory into what the tiers need from each other.

The load balancers need every API container as a backend, Prometheus needs every target, and
site.yml needs the inventory checked as a whole before any host changes. One role sees one
host; these see them all. A rollout needs to know, before it touches a host, which of its API
containers the run will replace: only their servers are taken out of the load balancers.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

PORT_MIN = 1024
PORT_MAX = 65535
# glusterd hands brick ports out from this range on storage hosts (glusterd.vol base-port).
GLUSTER_BRICK_PORTS = range(49152, 61000)
# Ports the other tiers already take on a host of theirs.
RESERVED_PORTS = {
    9100: "node exporter",
    24007: "glusterd",
    24008: "glusterd (RDMA)",
}
# Ports the services of the other groups listen on by default (their roles' defaults), for an
# API host that is also in one of those groups; a variable set in the inventory wins.
GROUP_PORTS = {
    "lb": {
        "haproxy_frontend_port": 80,
        "haproxy_stats_port": 8404,
        "haproxy_peer_port": 10000,
    },
    "monitoring": {
        "prometheus_web_listen_address": "0.0.0.0:9090",
        "alertmanager_web_listen_address": "0.0.0.0:9093",
        "alertmanager_cluster_listen_address": "",
    },
}
REQUIRED_GROUPS = ("api", "storage", "lb", "monitoring")
BATCH_RE = re.compile(r"^(\d+)%$")
# Rollout settings (group_vars/all/rollout.yml) that must be whole numbers of seconds above 0.
ROLLOUT_SECONDS = ("apptive_api_rollout_drain_timeout", "apptive_api_rollout_health_timeout")
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
GROUP_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Unresolved(str):
    """A variable whose template failed (say, a fact that was never gathered)."""

    def __repr__(self) -> str:
        return f"<cannot be resolved: {self!s}>"


def _hostvar(hostvars: Mapping[str, Any], host: str, name: str, default: Any = None) -> Any:
    try:
        return hostvars[host].get(name, default)
    except KeyError:
        return default
    except Exception as exc:  # any template error: report it against the variable, go on
        return Unresolved(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def api_servers(
    hosts: Iterable[str],
    hostvars: Mapping[str, Any],
    ports_var: str = "apptive_api_ports",
    address_var: str = "internal_ip",
) -> list[dict[str, Any]]:
    """Every API container of every host: the LB backends and the API scrape targets.

    Names follow the containers (`<host>-apptive-api-<n>`), so a server in HAProxy's stats is
    the container of the same name on that host.
    """
    servers = []
    for host in hosts:
        address = _hostvar(hostvars, host, address_var)
        for index, port in enumerate(_hostvar(hostvars, host, ports_var) or [], start=1):
            servers.append(
                {
                    "name": f"{host}-apptive-api-{index}",
                    "host": host,
                    "container": f"apptive-api-{index}",
                    "address": address,
                    "port": int(port),
                }
            )
    return servers


def host_addresses(
    hosts: Iterable[str], hostvars: Mapping[str, Any], address_var: str = "internal_ip"
) -> list[dict[str, Any]]:
    """`[{name, address}]` for hosts: HAProxy peers, Gluster clients, scrape targets."""
    return [{"name": host, "address": _hostvar(hostvars, host, address_var)} for host in hosts]


def host_targets(
    hosts: Iterable[str], hostvars: Mapping[str, Any], port: int, address_var: str = "internal_ip"
) -> list[dict[str, Any]]:
    """Prometheus static_configs, one per host, labelled with the inventory name.

    `groups` lists the host's groups between commas (",api,storage,"), so rules can select
    API hosts with a regex whatever else a host is.
    """
    targets = []
    for host in hosts:
        group_names = _hostvar(hostvars, host, "group_names") or []
        targets.append(
            {
                "targets": [f"{_hostvar(hostvars, host, address_var)}:{int(port)}"],
                "labels": {"instance": host, "groups": f",{','.join(group_names)},"},
            }
        )
    return targets


def api_targets(hosts: Iterable[str], hostvars: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Prometheus static_configs for every API container, labelled by host and container."""
    return [
        {
            "targets": [f"{server['address']}:{server['port']}"],
            "labels": {"host": server["host"], "container": server["container"]},
        }
        for server in api_servers(hosts, hostvars)
    ]


def _container_name(container: Mapping[str, Any]) -> str:
    names = container.get("Names") or [""]
    return str(names[0]).lstrip("/")


def rollout_plan(
    containers: Iterable[Mapping[str, Any]] | None,
    host: str,
    ports: list[int],
    version: str,
) -> dict[str, Any]:
    """Which API containers of `host` this run replaces or removes, from what runs now.

    `containers` is what community.docker.docker_host_info lists (verbose, label
    io.apptive.role=api); None when Docker cannot be asked yet (a new host): then every
    container is new. A container is replaced when it is missing, not running, or its
    `io.apptive.port` / `io.apptive.version` labels differ from the wish; it is removed when its
    index is beyond the port list. Server names follow api_servers().
    """
    current = {_container_name(c): c for c in containers or []}
    replace, replace_ports = [], []
    for index, port in enumerate(ports, start=1):
        name = f"apptive-api-{index}"
        running = current.get(name)
        labels = (running or {}).get("Labels") or {}
        if (
            running is None
            or running.get("State") != "running"
            or labels.get("io.apptive.port") != str(port)
            or labels.get("io.apptive.version") != str(version)
        ):
            replace.append(name)
            replace_ports.append(int(port))
    wanted = {f"apptive-api-{index}" for index in range(1, len(ports) + 1)}
    remove = sorted(name for name in current if name not in wanted)
    return {
        "replace": replace,
        "replace_ports": replace_ports,
        "remove": remove,
        # Running now and about to go: stopped as soon as their servers are drained.
        "stop": [
            name
            for name in replace + remove
            if name in current and current[name].get("State") == "running"
        ],
        # Out of the load balancers before the change: every server whose container goes away.
        "drain": [f"{host}-{name}" for name in replace + remove],
        # Back in once the new containers answer: the replaced ones only.
        "ready": [f"{host}-{name}" for name in replace],
    }


def _listen_port(value: Any) -> int | None:
    """A port from `80` or `"0.0.0.0:9090"`; None when there is none (an empty address)."""
    text = str(value or "").rsplit(":", 1)[-1]
    return int(text) if text.isdigit() else None


def _shared_ports(
    host: str, hostvars: Mapping[str, Any], groups: Mapping[str, list[str]]
) -> dict[int, str]:
    """{port: "variable (group)"} of the other tiers' listeners on an API host in their group."""
    taken = {}
    for group, variables in GROUP_PORTS.items():
        if host not in (groups.get(group) or []):
            continue
        for name, default in variables.items():
            port = _listen_port(_hostvar(hostvars, host, name, default))
            if port is not None:
                taken[port] = f"{name} ({group})"
    return taken


def _batch_problem(host: str, batch: Any) -> str | None:
    if batch is None:  # unset: the rollout play's default, 1
        return None
    text = str(batch).strip()
    percent = BATCH_RE.match(text)
    if isinstance(batch, bool) or not (text.isdigit() or percent):
        return (
            f"{host}: apptive_api_rollout_batch {batch!r} is neither a number of hosts nor a "
            "percentage (e.g. 1 or '30%')"
        )
    number = int(percent.group(1)) if percent else int(text)
    if number < 1 or (percent and number > 100):
        return (
            f"{host}: apptive_api_rollout_batch {batch!r} must be at least 1 host, or a "
            "percentage from 1% to 100%"
        )
    return None


def _rollout_problems(api_hosts: list[str], hostvars: Mapping[str, Any]) -> list[str]:
    problems = []
    batches: dict[str, str] = {}
    for host in api_hosts:
        batch = _hostvar(hostvars, host, "apptive_api_rollout_batch")
        problem = _batch_problem(host, batch)
        if problem:
            problems.append(problem)
        batches.setdefault(str(batch), host)
        for name in ROLLOUT_SECONDS:
            value = _hostvar(hostvars, host, name, 1)  # unset: the playbook's default
            if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
                problems.append(f"{host}: {name} {value!r} must be a whole number of seconds >= 1")
    if len(batches) > 1:
        problems.append(
            "apptive_api_rollout_batch differs between API hosts ("
            + ", ".join(f"{host}: {batch}" for batch, host in batches.items())
            + "); the rollout takes one batch size for the whole group"
        )
    return problems


def _port_problems(host: str, ports: Any, is_storage: bool) -> list[str]:
    if ports is None:
        return [f"{host}: apptive_api_ports is not set; an API host needs at least one port"]
    if not isinstance(ports, list) or not ports:
        return [f"{host}: apptive_api_ports must be a non-empty list of ports, got {ports!r}"]
    problems = []
    seen: set[int] = set()
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int):
            problems.append(f"{host}: apptive_api_ports has {port!r}, which is not a whole number")
            continue
        if not PORT_MIN <= port <= PORT_MAX:
            problems.append(f"{host}: apptive_api_ports has {port}, outside {PORT_MIN}-{PORT_MAX}")
        if port in seen:
            problems.append(f"{host}: apptive_api_ports lists port {port} twice")
        seen.add(port)
        if port in RESERVED_PORTS:
            problems.append(
                f"{host}: apptive_api_ports has {port}, which {RESERVED_PORTS[port]} uses"
            )
        if is_storage and port in GLUSTER_BRICK_PORTS:
            problems.append(
                f"{host}: apptive_api_ports has {port}, inside the range glusterd gives to "
                f"bricks ({GLUSTER_BRICK_PORTS.start}-{GLUSTER_BRICK_PORTS.stop - 1}) on a "
                "storage host"
            )
    return problems


def _address_problems(host: str, address: Any, facts: Mapping[str, Any] | None) -> list[str]:
    if isinstance(address, Unresolved) or address is None:
        return [f"{host}: internal_ip is {address!r}; set it in the inventory or gather facts"]
    try:
        ip = ipaddress.IPv4Address(str(address))
    except ValueError:
        return [f"{host}: internal_ip {address!r} is not an IPv4 address"]
    if ip.is_unspecified or ip.is_multicast:
        return [f"{host}: internal_ip {address} cannot be a host's address"]
    if ip.is_loopback:
        return [
            f"{host}: internal_ip {address} is a loopback address; the other hosts (the load "
            "balancers, Prometheus) cannot reach it"
        ]
    if facts:
        mine = facts.get("all_ipv4_addresses") or []
        if mine and str(ip) not in mine:
            return [
                f"{host}: internal_ip {address} is not an address of this host "
                f"(it has {', '.join(mine)})"
            ]
    return []


def inventory_problems(groups: Mapping[str, list[str]], hostvars: Mapping[str, Any]) -> list[str]:
    """Every mistake in the inventory as a whole, each naming the host and variable.

    Runs before any host changes; an empty list means site.yml may go on.
    """
    problems = []
    for name in groups:
        if name not in ("all", "ungrouped") and not GROUP_NAME_RE.match(name):
            problems.append(
                f"group '{name}': group names may hold only letters, digits and '_' "
                "(Ansible reads a hyphen as an operator in patterns)"
            )
    for name in REQUIRED_GROUPS:
        if not groups.get(name):
            problems.append(f"group '{name}' is missing or empty; site.yml needs at least one host")

    api_hosts = groups.get("api") or []
    storage_hosts = set(groups.get("storage") or [])
    listeners: dict[tuple[str, int], str] = {}
    for host in api_hosts:
        ports = _hostvar(hostvars, host, "apptive_api_ports")
        problems += _port_problems(host, ports, host in storage_hosts)
        address = _hostvar(hostvars, host, "internal_ip")
        problems += _address_problems(host, address, _hostvar(hostvars, host, "ansible_facts"))
        taken = _shared_ports(host, hostvars, groups)
        for port in ports if isinstance(ports, list) else []:
            if port in taken:
                problems.append(
                    f"{host}: apptive_api_ports has {port}, which {taken[port]} also uses on "
                    "this host"
                )
            other = listeners.setdefault((str(address), port), host)
            if other != host:
                problems.append(
                    f"{host}: internal_ip {address} port {port} is also {other}'s; "
                    "two API hosts cannot listen on the same address and port"
                )

    seen_addresses: dict[str, str] = {}
    for host in sorted(set(groups.get("all") or [])):
        address = str(_hostvar(hostvars, host, "internal_ip"))
        other = seen_addresses.setdefault(address, host)
        if other != host:
            problems.append(f"{host}: internal_ip {address} is also {other}'s")

    problems += _storage_problems(sorted(storage_hosts), hostvars)
    problems += _rollout_problems(api_hosts, hostvars)

    for host in groups.get("all") or []:
        version = _hostvar(hostvars, host, "apptive_api_version")
        if host in api_hosts and not VERSION_RE.match(str(version)):
            problems.append(
                f"{host}: apptive_api_version {version!r} is not a release version (N.N.N)"
            )
    return problems


def _storage_problems(storage_hosts: list[str], hostvars: Mapping[str, Any]) -> list[str]:
    if not storage_hosts:
        return []
    problems = []
    first = storage_hosts[0]
    replica = _hostvar(hostvars, first, "glusterfs_server_replica")
    arbiter = bool(_hostvar(hostvars, first, "glusterfs_server_arbiter", False))
    count = len(storage_hosts)
    if replica not in (None, "") and (not str(replica).isdigit() or int(replica) > count):
        problems.append(
            f"{first}: glusterfs_server_replica {replica} is larger than the storage group "
            f"({count} hosts); a replica count needs as many storage hosts"
        )
    if count == 2 and not arbiter:
        problems.append(
            "group 'storage' has 2 hosts: replica 2 without an arbiter splits its brain on a "
            "network partition; add a third host or set glusterfs_server_arbiter"
        )
    if arbiter and count != 3:
        problems.append(
            f"glusterfs_server_arbiter needs exactly 3 storage hosts, the group has {count}"
        )
    return problems


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "apptive_api_servers": api_servers,
            "apptive_host_addresses": host_addresses,
            "apptive_host_targets": host_targets,
            "apptive_api_targets": api_targets,
            "apptive_inventory_problems": inventory_problems,
            "apptive_api_rollout_plan": rollout_plan,
        }

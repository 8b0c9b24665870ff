"""Filters that turn the inventory into what the tiers need from each other.

The load balancers need every API container as a backend, Prometheus needs every target, and
site.yml needs the inventory checked as a whole before any host changes. One role sees one
host; these see them all.
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
REQUIRED_GROUPS = ("api", "storage", "lb", "monitoring")
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
        for port in ports if isinstance(ports, list) else []:
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
        }

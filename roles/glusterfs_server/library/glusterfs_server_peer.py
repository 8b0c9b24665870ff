#!/usr/bin/python
# Part of the glusterfs_server role (the gluster.gluster collection is not available here).
from __future__ import annotations

DOCUMENTATION = r"""
module: glusterfs_server_peer
short_description: Probe hosts into the GlusterFS trusted storage pool
description:
  - Reads C(gluster --xml pool list) and probes (C(gluster peer probe)) every name in O(peers)
    that the local glusterd does not know yet, then waits until every peer is connected and
    C(Peer in Cluster).
  - Names that resolve to an address of this host are skipped (a host never probes itself).
  - Probing a known peer by a new name makes the pool learn that name; this is how the first
    host, known to the others only by its address, becomes known by name.
options:
  peers:
    description: The names to probe, as the other servers resolve them.
    type: list
    elements: str
    required: true
  timeout:
    description: Seconds to wait until every peer is connected and in the cluster.
    type: int
    default: 90
notes:
  - Supports check mode; on a host where gluster is not installed yet, check mode reports every
    name as to be probed.
author: apptive platform team
"""

EXAMPLES = r"""
- name: Probe the other servers
  glusterfs_server_peer:
    peers: [gfs-a, gfs-b, gfs-c]
"""

RETURN = r"""
probed:
  description: Names probed by this run (in check mode, the names that would be).
  returned: always
  type: list
  elements: str
peers:
  description: The pool as seen from this host after the run.
  returned: always
  type: list
  elements: dict
"""

import socket  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.glusterfs_cli import (  # noqa: E402
    PEER_IN_CLUSTER,
    GlusterCli,
    GlusterError,
    Peer,
    op_errno,
    op_errstr,
    op_ret,
)

# opErrno of `peer probe` when nothing was done (cli/src/cli-rpc-ops.c, GF_PROBE_*).
PROBE_LOCALHOST = 1
PROBE_ALREADY_FRIEND = 2


def is_local(name: str) -> bool:
    """True when the name resolves to an address of this host (one we can bind to)."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return False
    for family, _type, _proto, _canon, sockaddr in infos:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((sockaddr[0], 0))
            except OSError:
                continue
            return True
    return False


def unsettled(peers: list[Peer]) -> list[Peer]:
    return [p for p in peers if not p.is_self and not (p.connected and p.state == PEER_IN_CLUSTER)]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "peers": {"type": "list", "elements": "str", "required": True},
            "timeout": {"type": "int", "default": 90},
        },
        supports_check_mode=True,
    )
    names: list[str] = [n for n in module.params["peers"] if n]
    result: dict[str, Any] = {"changed": False, "probed": [], "peers": []}

    binary = module.get_bin_path("gluster", required=not module.check_mode)
    if binary is None:
        # Check mode on a host where the package would only now be installed.
        result.update(changed=bool(names), probed=names, msg="gluster is not installed yet")
        module.exit_json(**result)

    cli = GlusterCli(module, binary)
    try:
        pool = cli.pool()
        known = {n for p in pool if not p.is_self for n in p.hostnames}
        missing = [n for n in names if n not in known and not is_local(n)]
        result["probed"] = missing
        result["changed"] = bool(missing)
        if module.check_mode:
            result["peers"] = [p.as_dict() for p in pool]
            module.exit_json(**result)

        probed = []
        for name in missing:
            root = cli.run("peer", "probe", name)
            if op_ret(root) != 0:
                raise GlusterError(f"gluster peer probe {name} failed: {op_errstr(root)}")
            if op_errno(root) not in (PROBE_LOCALHOST, PROBE_ALREADY_FRIEND):
                probed.append(name)
        result["probed"] = probed
        result["changed"] = bool(probed)

        # A probe returns before the peers have exchanged their state: wait until they settle,
        # otherwise a volume create that follows would fail on a peer still "Accepted". Without
        # a probe nothing is awaited: a peer that is down must not block a run that fixes others.
        deadline = time.monotonic() + module.params["timeout"]
        pool = cli.pool()
        while probed and unsettled(pool) and time.monotonic() < deadline:
            time.sleep(1)
            pool = cli.pool()
        result["peers"] = [p.as_dict() for p in pool]
        waiting = unsettled(pool)
        if probed and waiting:
            module.fail_json(
                msg="peers not connected and in the cluster after "
                f"{module.params['timeout']}s: "
                + ", ".join(f"{'/'.join(p.hostnames)} ({p.state_str})" for p in waiting),
                **result,
            )
    except GlusterError as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Part of the haproxy_server_state role: HAProxy's runtime API, spoken over its unix socket.
from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_server_state
short_description: Put HAProxy backend servers in ready, drain or maint through the runtime API
description:
  - Reads C(show servers state <backend>) from the runtime API socket and sends
    C(set server <backend>/<server> state <state>) for every listed server whose administrative
    state differs, all in one connection; reports changed only for those.
  - V(drain) never takes a server out of maintenance (a server in maint stays there), V(maint)
    stops all traffic to the server, V(ready) clears both.
  - Optionally waits, bounded, until the servers carry no request any more (O(sessions_timeout))
    or until HAProxy's health checks see them up (O(up_timeout)).
  - Servers the backend does not have are reported in RV(missing) and otherwise ignored: a
    server that the load balancer does not know yet needs no drain. A missing socket (HAProxy
    not installed yet) is not an error either; RV(present) is then false. Nor is a socket that
    refuses connections (HAProxy stopped): a load balancer that does not run sends no request
    anywhere, so there is nothing to drain on it; RV(running) is then false, with a warning.
  - Without O(state), only reports.
options:
  socket:
    description: Path of the runtime API socket (C(stats socket ... level admin)).
    type: path
    default: /run/haproxy/admin.sock
  backend:
    description: Name of the backend section.
    type: str
    required: true
  servers:
    description: Names of the servers to act on.
    type: list
    elements: str
    default: []
  state:
    description: Administrative state wanted for O(servers). Omit to only report.
    type: str
    choices: [ready, drain, maint]
  sessions_timeout:
    description:
      - Seconds to wait, after the change, until no request is in flight on O(servers)
        (C(scur) of C(show stat) is 0). When they are still busy after that long the module
        does not fail; it returns RV(sessions_left) and a warning.
    type: float
    default: 0
  up_timeout:
    description:
      - With O(state=ready), seconds to wait until HAProxy's health checks see every server up.
        Fails after that long, naming the servers and their check status.
    type: float
    default: 0
  settle:
    description:
      - With O(up_timeout), how many seconds a server must have been up before it counts. HAProxy
        marks a server that leaves maint up at once and checks it right away; one failed check
        takes it down again, which this lets happen first.
    type: int
    default: 1
  poll_interval:
    description: Seconds between two reads while waiting.
    type: float
    default: 0.5
notes:
  - Supports check mode (reports what would change, sends nothing).
  - Stick-table entries of a server in drain still send its users to it; in maint its users go
    to another server and their entries are rewritten to name that server (HAProxy 2.6).
author: apptive platform team
"""

EXAMPLES = r"""
- name: Take two servers out of load balancing, then out of service
  haproxy_server_state:
    backend: apptive_api
    servers: [api1-apptive-api-1, api1-apptive-api-2]
    state: maint
    sessions_timeout: 30

- name: Back into service once their health checks pass
  haproxy_server_state:
    backend: apptive_api
    servers: [api1-apptive-api-1, api1-apptive-api-2]
    state: ready
    up_timeout: 60
"""

RETURN = r"""
present:
  description: Whether the runtime API socket exists.
  returned: always
  type: bool
changed_servers:
  description: Servers whose state this run changed (in check mode, would change).
  returned: always
  type: list
  elements: str
missing:
  description: Servers of O(servers) that the backend does not have.
  returned: always
  type: list
  elements: str
servers:
  description: >-
    Every server of the backend after the run: C(id), C(admin) (ready, drain or maint),
    C(admin_flags), C(operational) (up, starting, stopping or down), C(check) (HAProxy's check
    status code), C(since) (seconds since its last state change).
  returned: always
  type: dict
running:
  description: Whether HAProxy answered on the socket.
  returned: always
  type: bool
sessions_left:
  description: Requests still in flight on O(servers) when the wait for them ended.
  returned: always
  type: int
"""

import csv  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

# srv_admin_state bits (HAProxy 2.6, include/haproxy/server-t.h).
ADMF_FMAINT = 0x01  # forced into maintenance (set server ... state maint)
ADMF_IMAINT = 0x02  # inherited from a tracked server
ADMF_CMAINT = 0x04  # "disabled" in the configuration
ADMF_FDRAIN = 0x08  # forced into drain (set server ... state drain)
ADMF_IDRAIN = 0x10  # inherited drain
ADMF_RMAINT = 0x20  # address resolution failed
ADMF_MAINT = ADMF_FMAINT | ADMF_IMAINT | ADMF_CMAINT | ADMF_RMAINT
ADMF_DRAIN = ADMF_FDRAIN | ADMF_IDRAIN
# srv_op_state values.
OPERATIONAL = {0: "down", 1: "starting", 2: "up", 3: "stopping"}


class RuntimeApiError(Exception):
    pass


def ask(path: str, command: str, timeout: float = 10) -> str:
    """One command (or several joined by ';') on a fresh connection; the answer as text."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def parse_servers_state(text: str) -> dict[str, dict[str, Any]]:
    """`show servers state <backend>`: a version line, a '#' header, one row per server."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((line for line in lines if line.startswith("#")), None)
    if header is None:
        raise RuntimeApiError(text.strip() or "empty answer to 'show servers state'")
    names = header.lstrip("# ").split()
    servers = {}
    for line in lines:
        fields = line.split()
        if line.startswith("#") or len(fields) != len(names):
            continue
        row = dict(zip(names, fields, strict=True))
        admin = int(row["srv_admin_state"])
        servers[row["srv_name"]] = {
            "id": int(row["srv_id"]),
            "admin": "maint" if admin & ADMF_MAINT else "drain" if admin & ADMF_DRAIN else "ready",
            "admin_flags": admin,
            "operational": OPERATIONAL.get(int(row["srv_op_state"]), row["srv_op_state"]),
            "check": int(row["srv_check_status"]),
            "since": int(row["srv_time_since_last_change"]),
        }
    return servers


def parse_sessions(text: str, backend: str) -> dict[str, int]:
    """`show stat <backend> 4 -1` (CSV of the servers): current sessions per server."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("#"):
        raise RuntimeApiError(text.strip() or "empty answer to 'show stat'")
    rows = csv.DictReader([lines[0].lstrip("# "), *lines[1:]])
    return {
        row["svname"]: int(row["scur"] or 0)
        for row in rows
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND")
    }


def needs_change(server: dict[str, Any], state: str) -> bool:
    flags = server["admin_flags"]
    if state == "maint":
        return not flags & ADMF_FMAINT
    if state == "drain":
        # A server in maintenance stays there: drain would let its sticky users back in.
        return not flags & (ADMF_FMAINT | ADMF_FDRAIN)
    return bool(flags & (ADMF_FMAINT | ADMF_FDRAIN))


class Runtime:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.path = module.params["socket"]
        self.backend = module.params["backend"]

    def ask(self, command: str) -> str:
        try:
            return ask(self.path, command)
        except OSError as exc:
            self.module.fail_json(msg=f"runtime API {self.path}: {command!r}: {exc}")
        raise AssertionError("unreachable")

    def servers(self) -> dict[str, dict[str, Any]]:
        answer = self.ask(f"show servers state {self.backend}")
        try:
            return parse_servers_state(answer)
        except RuntimeApiError as exc:
            self.module.fail_json(msg=f"backend {self.backend}: {exc}")
        raise AssertionError("unreachable")

    def sessions(self) -> dict[str, int]:
        answer = self.ask(f"show stat {self.backend} 4 -1")
        try:
            return parse_sessions(answer, self.backend)
        except RuntimeApiError as exc:
            self.module.fail_json(msg=f"backend {self.backend}: {exc}")
        raise AssertionError("unreachable")

    def set_state(self, names: list[str], state: str) -> None:
        commands = ";".join(f"set server {self.backend}/{name} state {state}" for name in names)
        answer = self.ask(commands).strip()
        # Success is silent; every refusal is one line of text ("No such server.", ...).
        if answer:
            self.module.fail_json(msg=f"HAProxy refused '{commands}': {answer}")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "default": "/run/haproxy/admin.sock"},
            "backend": {"type": "str", "required": True},
            "servers": {"type": "list", "elements": "str", "default": []},
            "state": {"type": "str", "choices": ["ready", "drain", "maint"]},
            "sessions_timeout": {"type": "float", "default": 0},
            "up_timeout": {"type": "float", "default": 0},
            "settle": {"type": "int", "default": 1},
            "poll_interval": {"type": "float", "default": 0.5},
        },
        supports_check_mode=True,
    )
    params = module.params
    result: dict[str, Any] = {
        "changed": False,
        "present": os.path.exists(params["socket"]),
        "running": False,
        "changed_servers": [],
        "missing": [],
        "servers": {},
        "sessions_left": 0,
    }
    if not result["present"]:
        module.exit_json(msg=f"{params['socket']} does not exist: HAProxy is not set up", **result)
    try:
        ask(params["socket"], "show info")
    except ConnectionRefusedError:
        module.warn(f"HAProxy does not answer on {params['socket']}: it is not running here")
        module.exit_json(**result)
    result["running"] = True

    runtime = Runtime(module)
    before = runtime.servers()
    wanted = [name for name in params["servers"] if name in before]
    result["missing"] = [name for name in params["servers"] if name not in before]
    state = params["state"]
    if state:
        result["changed_servers"] = [n for n in wanted if needs_change(before[n], state)]
        result["changed"] = bool(result["changed_servers"])
    if module.check_mode or not state:
        result["servers"] = before
        module.exit_json(**result)

    if result["changed_servers"]:
        runtime.set_state(result["changed_servers"], state)

    if wanted and params["sessions_timeout"] > 0:
        deadline = time.monotonic() + params["sessions_timeout"]
        while True:
            busy = {n: c for n, c in runtime.sessions().items() if n in wanted and c > 0}
            result["sessions_left"] = sum(busy.values())
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(params["poll_interval"])
        if result["sessions_left"]:
            module.warn(
                f"still {result['sessions_left']} request(s) in flight on "
                f"{', '.join(sorted(busy))} after {params['sessions_timeout']:g} s; going on"
            )

    if state == "ready" and wanted and params["up_timeout"] > 0:
        deadline = time.monotonic() + params["up_timeout"]
        while True:
            now = runtime.servers()
            down = {
                n: now[n]
                for n in wanted
                if now[n]["operational"] not in ("up", "starting")
                or now[n]["since"] < params["settle"]
            }
            if not down:
                break
            if time.monotonic() >= deadline:
                module.fail_json(
                    msg=(
                        f"not up after {params['up_timeout']:g} s: "
                        + ", ".join(
                            f"{n} ({s['operational']}, check status {s['check']})"
                            for n, s in sorted(down.items())
                        )
                    ),
                    **result,
                )
            time.sleep(params["poll_interval"])

    result["servers"] = runtime.servers()
    module.exit_json(**result)


if __name__ == "__main__":
    main()

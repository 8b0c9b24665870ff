# Shared by the role's modules (library/): run the gluster CLI and read its XML output.
# The human-readable output changes between releases; the --xml output is the stable interface.
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

# gluster's peer states (glusterd-sm.h): 3 is "Peer in Cluster", the only settled one.
PEER_IN_CLUSTER = 3
# Volume status codes of `volume info` (glusterd.h): 0 created, 1 started, 2 stopped.
VOLUME_STARTED = 1


class GlusterError(Exception):
    """The gluster CLI failed, or answered something we cannot read."""


@dataclass
class Peer:
    uuid: str
    hostnames: list[str]
    connected: bool
    state: int | None
    state_str: str
    is_self: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "hostnames": self.hostnames,
            "connected": self.connected,
            "state": self.state_str,
            "self": self.is_self,
        }


@dataclass
class Volume:
    name: str
    status: int
    status_str: str
    type_str: str
    replica_count: int
    arbiter_count: int
    bricks: list[str]
    options: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status_str,
            "type": self.type_str,
            "replica_count": self.replica_count,
            "arbiter_count": self.arbiter_count,
            "bricks": self.bricks,
            "options": self.options,
        }


class GlusterCli:
    """Runs `gluster --mode=script --xml ...` through an AnsibleModule."""

    def __init__(self, module: Any, binary: str) -> None:
        self.module = module
        self.binary = binary

    def run(self, *args: str) -> ET.Element:
        """Runs a command and returns the parsed <cliOutput>; opRet is left to the caller."""
        cmd = [self.binary, "--mode=script", "--xml", *args]
        rc, out, err = self.module.run_command(cmd)
        try:
            root = ET.fromstring(out)
        except ET.ParseError as exc:
            raise GlusterError(
                f"{' '.join(cmd)} (rc={rc}) did not answer XML: {exc}; stdout: {out!r}; "
                f"stderr: {err!r}. Is glusterd running?"
            ) from exc
        if root.tag != "cliOutput":
            raise GlusterError(f"{' '.join(cmd)}: unexpected XML root <{root.tag}>")
        return root

    def run_ok(self, *args: str) -> ET.Element:
        """Runs a command that must succeed (opRet 0)."""
        root = self.run(*args)
        if op_ret(root) != 0:
            raise GlusterError(f"gluster {' '.join(args)} failed: {op_errstr(root)}")
        return root

    def pool(self) -> list[Peer]:
        root = self.run_ok("pool", "list")
        peers = []
        for elem in root.iterfind("./peerStatus/peer"):
            hostname = text(elem, "hostname")
            names = [h.text or "" for h in elem.iterfind("./hostnames/hostname")] or [hostname]
            state = text(elem, "state")
            peers.append(
                Peer(
                    uuid=text(elem, "uuid"),
                    hostnames=[n for n in names if n],
                    connected=text(elem, "connected") == "1",
                    state=int(state) if state else None,
                    state_str=text(elem, "stateStr"),
                    # The local glusterd lists itself as "localhost" with neither state
                    # nor a hostnames list.
                    is_self=hostname == "localhost" and elem.find("state") is None,
                )
            )
        return peers

    def volume(self, name: str) -> Volume | None:
        """The volume's info, or None when it does not exist."""
        root = self.run("volume", "info", name)
        if op_ret(root) != 0:
            # "Volume does not exist" (and "Volume <name> does not exist" in older releases).
            if "does not exist" in op_errstr(root):
                return None
            raise GlusterError(f"gluster volume info {name} failed: {op_errstr(root)}")
        elem = root.find("./volInfo/volumes/volume")
        if elem is None:
            return None
        return Volume(
            name=text(elem, "name"),
            status=int(text(elem, "status") or -1),
            status_str=text(elem, "statusStr"),
            type_str=text(elem, "typeStr"),
            replica_count=int(text(elem, "replicaCount") or 1),
            arbiter_count=int(text(elem, "arbiterCount") or 0),
            bricks=[text(b, "name") for b in elem.iterfind("./bricks/brick")],
            options={text(o, "name"): text(o, "value") for o in elem.iterfind("./options/option")},
        )


def text(elem: ET.Element, tag: str) -> str:
    child = elem.find(tag)
    return (child.text or "").strip() if child is not None else ""


def op_ret(root: ET.Element) -> int:
    try:
        return int(text(root, "opRet"))
    except ValueError:
        return -1


def op_errno(root: ET.Element) -> int:
    try:
        return int(text(root, "opErrno"))
    except ValueError:
        return -1


def op_errstr(root: ET.Element) -> str:
    return text(root, "opErrstr") or text(root, "output") or "(no message)"

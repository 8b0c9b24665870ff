#!/usr/bin/python3
"""Gluster health for node exporter's textfile collector.

Asks glusterd (`gluster --xml ...`) for peers, volumes, bricks and pending heals, and writes
the answer in Prometheus's text format to `<textfile dir>/gluster.prom`, atomically: node
exporter never reads half a file. Run by gluster-metrics.timer; needs root (the gluster CLI
talks to glusterd's root-only socket). Standard library only: it runs on the storage hosts'
system Python.

When glusterd does not answer, the file still gets written, with `gluster_up 0` and no volume
series: unknown is not the same as down, and the alert on gluster_up says so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

OUTPUT_NAME = "gluster.prom"
# glusterd reports a volume's state as a number: 0 created, 1 started, 2 stopped.
VOLUME_STARTED = "1"

Runner = Callable[[Sequence[str]], str]


class GlusterError(Exception):
    """glusterd did not answer, or answered with an error."""


@dataclass(frozen=True)
class Peer:
    hostname: str
    connected: bool


@dataclass(frozen=True)
class Volume:
    name: str
    started: bool
    bricks: tuple[str, ...]
    # Only replicated and dispersed volumes heal; asking a distribute volume is an error.
    heals: bool


@dataclass(frozen=True)
class BrickHeal:
    brick: str
    connected: bool
    entries: int | None
    split_brain: int | None


@dataclass
class Family:
    name: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))


# --- parsing ------------------------------------------------------------------------------


def _root(xml_text: str) -> ET.Element:
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as error:
        first_line = xml_text.strip().splitlines()[0] if xml_text.strip() else "no output"
        raise GlusterError(f"not gluster XML ({error}): {first_line}") from error
    op_ret = root.findtext("opRet")
    if op_ret is not None and op_ret.strip() != "0":
        raise GlusterError(root.findtext("opErrstr") or f"opRet {op_ret}")
    return root


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def parse_peer_status(xml_text: str) -> list[Peer]:
    """`gluster --xml peer status`: the other peers of this host's pool."""
    root = _root(xml_text)
    return [
        Peer(
            hostname=(peer.findtext("hostname") or peer.findtext("uuid") or "").strip(),
            connected=(peer.findtext("connected") or "").strip() == "1",
        )
        for peer in root.iterfind("./peerStatus/peer")
    ]


def parse_volume_info(xml_text: str) -> list[Volume]:
    """`gluster --xml volume info`: every volume with the bricks it is configured with."""
    root = _root(xml_text)
    volumes = []
    for volume in root.iterfind("./volInfo/volumes/volume"):
        bricks = tuple(
            (brick.findtext("name") or brick.text or "").strip()
            for brick in volume.iterfind("./bricks/brick")
        )
        replica = _int(volume.findtext("replicaCount")) or 1
        disperse = _int(volume.findtext("disperseCount")) or 0
        volumes.append(
            Volume(
                name=(volume.findtext("name") or "").strip(),
                started=(volume.findtext("status") or "").strip() == VOLUME_STARTED,
                bricks=bricks,
                heals=replica > 1 or disperse > 0,
            )
        )
    return volumes


def parse_volume_status(xml_text: str) -> dict[str, bool]:
    """`gluster --xml volume status VOL`: `{"host:/path": online}` for the bricks it lists.

    Bricks of a peer that glusterd cannot reach are missing from the answer, not listed as
    offline: compare with the bricks from `volume info`.
    """
    root = _root(xml_text)
    online = {}
    for node in root.iterfind("./volStatus/volumes/volume/node"):
        path = (node.findtext("path") or "").strip()
        # Daemons (self-heal, NFS, quota) are listed as nodes too; only bricks have a path.
        if not path.startswith("/"):
            continue
        hostname = (node.findtext("hostname") or "").strip()
        online[f"{hostname}:{path}"] = (node.findtext("status") or "").strip() == "1"
    return online


def parse_heal_info(xml_text: str) -> list[BrickHeal]:
    """`gluster --xml volume heal VOL info summary` (or plain `info`): entries per brick.

    The summary counts pending and split-brain entries; plain `info` lists the entries with
    their total. A brick that heal info could not reach has no counts.
    """
    root = _root(xml_text)
    bricks = []
    for brick in root.iterfind("./healInfo/bricks/brick"):
        status = (brick.findtext("status") or "").strip()
        total = brick.findtext("totalNumberOfEntries")
        if total is None:
            total = brick.findtext("numberOfEntries")
        bricks.append(
            BrickHeal(
                brick=(brick.findtext("name") or "").strip(),
                connected=status == "Connected",
                entries=_int(total),
                split_brain=_int(brick.findtext("numberOfEntriesInSplitBrain")),
            )
        )
    return bricks


# --- collecting ---------------------------------------------------------------------------


def gluster_runner(binary: str, timeout: float) -> Runner:
    """Runs `gluster --xml ARGS`; returns its XML even when the exit status is not 0.

    gluster exits non-zero with an XML answer for some errors (heal on a stopped volume) and
    with plain text when glusterd is down; the XML carries the reason in both cases.
    """

    def run(args: Sequence[str]) -> str:
        try:
            result = subprocess.run(
                [binary, "--xml", *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise GlusterError(f"gluster {' '.join(args)}: {error}") from error
        if "<cliOutput" not in result.stdout:
            message = (result.stdout + result.stderr).strip() or f"exit status {result.returncode}"
            raise GlusterError(f"gluster {' '.join(args)}: {message}")
        return result.stdout

    return run


def collect(run: Runner, volumes: Iterable[str] = (), heal: bool = True) -> list[Family]:
    """Everything the file holds except the collector's own timing."""
    up = Family("gluster_up", "1 if glusterd answered the collector's queries.")
    families = [up]
    try:
        peers = parse_peer_status(run(["peer", "status"]))
        known = {volume.name: volume for volume in parse_volume_info(run(["volume", "info"]))}
    except GlusterError as error:
        print(f"gluster_metrics: {error}", file=sys.stderr)
        up.add(0)
        return families
    up.add(1)

    peer_count = Family("gluster_peers", "Peers in this host's trusted pool, itself excluded.")
    peers_connected = Family("gluster_peers_connected", "Peers glusterd is connected to.")
    peer_connected = Family("gluster_peer_connected", "1 if glusterd is connected to the peer.")
    peer_count.add(len(peers))
    peers_connected.add(sum(peer.connected for peer in peers))
    for peer in peers:
        peer_connected.add(int(peer.connected), peer=peer.hostname)
    families += [peer_count, peers_connected, peer_connected]

    started = Family("gluster_volume_started", "1 if the volume exists and is started.")
    brick_total = Family("gluster_volume_bricks", "Bricks the volume is configured with.")
    bricks_online = Family("gluster_volume_bricks_online", "Bricks of the volume online.")
    brick_online = Family("gluster_brick_online", "1 if the brick's process is online.")
    status_ok = Family(
        "gluster_volume_status_success", "1 if `gluster volume status` answered for the volume."
    )
    heal_ok = Family(
        "gluster_volume_heal_info_success", "1 if `gluster volume heal info` answered."
    )
    heal_entries = Family(
        "gluster_volume_heal_entries",
        "Entries waiting for self-heal: the largest count of any reachable brick.",
    )
    split_brain = Family(
        "gluster_volume_split_brain_entries",
        "Entries in split brain: the largest count of any reachable brick.",
    )
    brick_heal = Family("gluster_brick_heal_entries", "Entries the brick holds for self-heal.")
    brick_split = Family(
        "gluster_brick_split_brain_entries", "Entries of the brick in split brain."
    )
    families += [started, brick_total, bricks_online, brick_online, status_ok]
    families += [heal_ok, heal_entries, split_brain, brick_heal, brick_split]

    for name in list(volumes) or sorted(known):
        volume = known.get(name)
        if volume is None:
            print(f"gluster_metrics: volume {name} does not exist", file=sys.stderr)
            started.add(0, volume=name)
            brick_total.add(0, volume=name)
            continue
        started.add(int(volume.started), volume=name)
        brick_total.add(len(volume.bricks), volume=name)
        online = _volume_status(run, volume)
        status_ok.add(int(online is not None), volume=name)
        online = online or {}
        bricks_online.add(sum(online.get(brick, False) for brick in volume.bricks), volume=name)
        for brick in volume.bricks:
            brick_online.add(int(online.get(brick, False)), volume=name, brick=brick)
        if not (heal and volume.heals and volume.started):
            continue
        try:
            counts = parse_heal_info(run(["volume", "heal", name, "info", "summary"]))
        except GlusterError as error:
            print(f"gluster_metrics: {error}", file=sys.stderr)
            heal_ok.add(0, volume=name)
            continue
        heal_ok.add(1, volume=name)
        reachable = [count for count in counts if count.connected and count.entries is not None]
        for count in reachable:
            brick_heal.add(count.entries or 0, volume=name, brick=count.brick)
            if count.split_brain is not None:
                brick_split.add(count.split_brain, volume=name, brick=count.brick)
        if reachable:
            heal_entries.add(max(count.entries or 0 for count in reachable), volume=name)
            split_brain.add(max(count.split_brain or 0 for count in reachable), volume=name)
    return families


def _volume_status(run: Runner, volume: Volume) -> dict[str, bool] | None:
    if not volume.started:
        # glusterd refuses status for a stopped volume; none of its bricks run.
        return {}
    try:
        return parse_volume_status(run(["volume", "status", volume.name]))
    except GlusterError as error:
        print(f"gluster_metrics: {error}", file=sys.stderr)
        return None


# --- writing ------------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(families: Iterable[Family]) -> str:
    """Prometheus text format; families without samples are left out."""
    lines = []
    for family in families:
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} gauge")
        for labels, value in family.samples:
            text = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
            name = f"{family.name}{{{text}}}" if text else family.name
            lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write next to the target and rename over it: readers see the old or the new file.

    The temporary name does not end in .prom, so node exporter never reads it.
    """
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def main(argv: Sequence[str] | None = None, run: Runner | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--textfile-dir", type=Path, required=True)
    parser.add_argument(
        "--volume",
        action="append",
        default=[],
        help="volume to report on; repeat for several (default: every volume)",
    )
    parser.add_argument("--no-heal", action="store_true", help="skip `volume heal ... info`")
    parser.add_argument("--gluster", default="gluster", help="the gluster CLI")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per gluster call")
    args = parser.parse_args(argv)

    started = time.monotonic()
    runner = run or gluster_runner(args.gluster, args.timeout)
    families = collect(runner, args.volume, heal=not args.no_heal)
    duration = Family("gluster_collector_duration_seconds", "How long the last run took.")
    duration.add(round(time.monotonic() - started, 3))
    last_run = Family(
        "gluster_collector_last_run_timestamp_seconds", "When the last run finished (Unix time)."
    )
    last_run.add(round(time.time(), 3))
    target = args.textfile_dir / OUTPUT_NAME
    try:
        write_atomically(target, render([*families, duration, last_run]))
    except OSError as error:
        print(f"gluster_metrics: cannot write {target}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

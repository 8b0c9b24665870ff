"""The pool, the volume and its mount on three servers that are their own clients."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest
import testinfra
from conftest import HOST_NAMES

VOLUME = "apptive"
MOUNT = "/mnt/apptive_store"
SENTINEL = f"{MOUNT}/.apptive-store"
OWNER = 10001


def gluster_xml(host: testinfra.host.Host, *args: str) -> ET.Element:
    out = host.check_output("gluster --mode=script --xml " + " ".join(["%s"] * len(args)), *args)
    root = ET.fromstring(out)
    assert root.findtext("opRet") == "0", out
    return root


@pytest.mark.units("glusterd")
def test_glusterd_runs_and_starts_at_boot(host: testinfra.host.Host) -> None:
    glusterd = host.service("glusterd")
    assert glusterd.is_running
    assert glusterd.is_enabled
    # The role's drop-in is loaded: restart on failure, after the brick file system.
    assert host.check_output("systemctl show --property=Restart glusterd") == "Restart=on-failure"
    assert "/bricks" in host.check_output("systemctl show --property=RequiresMountsFor glusterd")


@pytest.mark.units("glusterd")
def test_every_peer_is_connected_and_known_by_name(host: testinfra.host.Host) -> None:
    me = host.backend.get_hostname()
    peers = gluster_xml(host, "pool", "list").findall("./peerStatus/peer")
    assert len(peers) == len(HOST_NAMES)
    assert all(p.findtext("connected") == "1" for p in peers)
    others = [p for p in peers if p.findtext("hostname") != "localhost"]
    assert all(p.findtext("stateStr") == "Peer in Cluster" for p in others)
    names = {h.text for p in others for h in p.iterfind("./hostnames/hostname")}
    assert set(HOST_NAMES) - {me} <= names


@pytest.mark.units("glusterd")
def test_volume_is_a_started_replica_3_with_the_options(host: testinfra.host.Host) -> None:
    volume = gluster_xml(host, "volume", "info", VOLUME).find("./volInfo/volumes/volume")
    assert volume is not None
    assert volume.findtext("statusStr") == "Started"
    assert volume.findtext("typeStr") == "Replicate"
    assert volume.findtext("replicaCount") == "3"
    assert [b.findtext("name") for b in volume.iterfind("./bricks/brick")] == [
        f"{name}:/bricks/{VOLUME}" for name in HOST_NAMES
    ]
    options = {o.findtext("name"): o.findtext("value") for o in volume.iterfind("./options/option")}
    assert options["cluster.quorum-type"] == "auto"
    assert options["cluster.server-quorum-type"] == "server"
    assert options["network.ping-timeout"] == "10"
    assert options["storage.owner-uid"] == str(OWNER)
    assert options["storage.owner-gid"] == str(OWNER)
    allowed = options["auth.allow"].split(",")
    assert "127.0.0.1" in allowed
    assert host.interface.default().addresses[0] in allowed


@pytest.mark.units("glusterd")
def test_bricks_are_online(host: testinfra.host.Host) -> None:
    status = gluster_xml(host, "volume", "status", VOLUME)
    bricks = [n for n in status.iterfind(".//node") if n.findtext("path") == f"/bricks/{VOLUME}"]
    assert len(bricks) == len(HOST_NAMES)
    assert all(b.findtext("status") == "1" for b in bricks)


def test_volume_is_in_fstab_with_backup_servers(host: testinfra.host.Host) -> None:
    fstab = [line.split() for line in host.file("/etc/fstab").content_string.splitlines()]
    entries = [f for f in fstab if len(f) >= 4 and f[1] == MOUNT]
    assert len(entries) == 1
    src, _path, fstype, opts = entries[0][:4]
    assert (src, fstype) == (f"{HOST_NAMES[0]}:/{VOLUME}", "glusterfs")
    assert "_netdev" in opts.split(",")
    assert f"backup-volfile-servers={HOST_NAMES[1]}:{HOST_NAMES[2]}" in opts.split(",")


@pytest.mark.units("mnt-apptive_store.mount")
def test_volume_is_mounted_and_systemd_knows_the_mount_unit(host: testinfra.host.Host) -> None:
    mount = host.mount_point(MOUNT)
    assert mount.exists
    assert mount.filesystem == "fuse.glusterfs"
    assert host.service("mnt-apptive_store.mount").is_running
    root = host.file(MOUNT)
    assert (root.uid, root.gid) == (OWNER, OWNER)


def test_sentinel_exists_owned_by_the_api_uid(host: testinfra.host.Host) -> None:
    sentinel = host.file(SENTINEL)
    assert sentinel.is_file
    assert (sentinel.uid, sentinel.gid) == (OWNER, OWNER)


def test_docker_is_ordered_after_the_mount(host: testinfra.host.Host) -> None:
    dropin = host.file("/etc/systemd/system/docker.service.d/50-glusterfs-client-mount.conf")
    assert dropin.is_file
    lines = dropin.content_string.splitlines()
    assert "Wants=mnt-apptive_store.mount" in lines
    assert "After=mnt-apptive_store.mount" in lines


@pytest.mark.units("glusterd", "mnt-apptive_store.mount")
def test_file_written_on_a_is_read_on_c(hosts: dict[str, testinfra.host.Host]) -> None:
    writer, reader = hosts[HOST_NAMES[0]], hosts[HOST_NAMES[2]]
    path, token = f"{MOUNT}/molecule-{uuid.uuid4().hex}", uuid.uuid4().hex
    # Written as the API's uid: the volume root belongs to it.
    writer.check_output(
        "setpriv --reuid=%s --regid=%s --clear-groups sh -c 'printf %%s %s > %s'",
        str(OWNER),
        str(OWNER),
        token,
        path,
    )
    try:
        assert reader.file(path).content_string == token
        assert reader.file(path).uid == OWNER
    finally:
        writer.run("rm -f %s", path)


@pytest.mark.units("glusterd")
def test_a_server_mounts_the_volume_through_localhost(
    hosts: dict[str, testinfra.host.Host],
) -> None:
    host = hosts[HOST_NAMES[1]]
    target = "/run/molecule-localhost-mount"
    host.check_output("mkdir -p %s", target)
    try:
        host.check_output("mount -t glusterfs localhost:/%s %s", VOLUME, target)
        assert host.file(f"{target}/.apptive-store").is_file
    finally:
        host.run("umount %s", target)
        host.run("rmdir %s", target)

"""Faults under steady load, against a lab: every acknowledged write must still be there.

Each test starts a bounded load of reads and writes for many users through both load balancers,
injects one fault, restores it (also on failure, through finalizers), then reads back every
acknowledged write and compares checksums. What each fault showed (failed writes, recovery
times) is printed at the end of the run and written to .cache/faults-report.json.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import requests
from faultkit import (
    LB_URLS,
    STORE_MOUNT,
    VOLUME,
    Load,
    Watcher,
    api_containers,
    container_state,
    docker,
    haproxy_status,
    host_ip,
    in_host,
    server_name,
    wait_for,
)

# HAProxy's checks (roles/haproxy defaults): inter 2 s, fall 2, rise 2, check timeout 5 s.
TAKEN_OUT_WITHIN_S = 2 * 2 + 5


def _since(start: float, when: float | None) -> float | None:
    return None if when is None else round(when - start, 1)


@contextmanager
def _watch_lbs(lab: Any, servers: list[str]) -> Iterator[dict[str, Watcher]]:
    """Each LB's status of `servers` (a tuple in that order), polled in the background."""
    with ExitStack() as stack:
        watchers = {}
        for lb in lab.hosts("lb"):
            lb_container = lab.container(lb)

            def probe(lb_container: str = lb_container) -> tuple[str, ...]:
                status = haproxy_status(lb_container)
                return tuple(status.get(name, "missing") for name in servers)

            watchers[lb] = stack.enter_context(Watcher(probe))
        yield watchers


def _all(state: str) -> Callable[[tuple[str, ...]], bool]:
    return lambda statuses: all(s.split()[0] == state for s in statuses)


def _latest(watcher: Watcher) -> tuple[str, ...]:
    return tuple(watcher.changes[-1][1]) if watcher.changes else ()


def _check_nothing_lost(load: Load, figures: dict[str, Any]) -> None:
    back = load.read_back()
    figures["read_back"] = f"{back['acknowledged']} acknowledged keys, {len(back['problems'])} bad"
    assert not back["problems"], f"acknowledged writes lost or wrong: {back['problems'][:10]}"
    assert not load.mismatches, f"reads returned other values: {load.mismatches[:10]}"


def _gluster_heal_pending(storage_container: str) -> dict[str, str]:
    """brick -> pending heal entries ("-" when the brick is not connected)."""
    xml = in_host(
        storage_container, "gluster", "volume", "heal", VOLUME, "info", "--xml", timeout=60
    )
    bricks = re.findall(
        r"<brick[^>]*>\s*<name>([^<]+)</name>\s*<status>([^<]*)</status>"
        r"\s*<numberOfEntries>([^<]*)</numberOfEntries>",
        xml,
    )
    return {name: entries if status == "Connected" else "-" for name, status, entries in bricks}


def _underlying_dir_listing(host_container: str) -> list[str]:
    """What is in the mount point's own directory, beneath whatever is mounted on it."""
    script = (
        "set -e; d=$(mktemp -d /run/rootview.XXXXXX); mount --bind / $d;"
        f" ls -A $d{STORE_MOUNT}; umount $d; rmdir $d"
    )
    return in_host(host_container, "sh", "-c", script).split()


# --- 1. an API container killed ----------------------------------------------------------------


def test_api_container_killed(
    lab: Any, start_load: Callable[..., Load], figures: dict[str, Any], request: Any
) -> None:
    host = lab.hosts("api")[0]
    host_container = lab.container(host)
    victim = "apptive-api-1"
    instance = f"{host}/{victim}"
    server = server_name(host, victim)
    request.addfinalizer(lambda: in_host(host_container, "docker", "start", victim, check=False))

    load = start_load()
    load.wait_warm()
    its_users = {user for user, owners in load.owners().items() if instance in owners}
    assert its_users, f"no user was on {instance}: nothing to move"
    started_before = container_state(host_container, victim)[2]

    with (
        _watch_lbs(lab, [server]) as lbs,
        Watcher(lambda: container_state(host_container, victim)[:2]) as docker_view,
    ):
        killed = load.mark("kill")
        in_host(host_container, "docker", "kill", victim)

        def back_in_service() -> bool:
            state = container_state(host_container, victim)
            return (
                state[2] != started_before
                and state[1] == "healthy"
                and all(w.first(_all("DOWN"), killed) for w in lbs.values())
                and all(_latest(w) == ("UP",) for w in lbs.values())
            )

        wait_for(f"{victim} restarted and back in HAProxy", back_in_service, timeout=120)
        load.settle(2)
    load.stop()

    down = [w.first(lambda s: s[0].startswith("DOWN"), killed) for w in lbs.values()]
    up = [
        w.first(lambda s: s[0] == "UP", max(filter(None, down), default=killed))
        for w in lbs.values()
    ]
    running = docker_view.first(lambda s: s[0] == "running", killed + 0.1)
    healthy = docker_view.first(lambda s: s[1] == "healthy", killed + 0.1)
    summary = load.summary(fault_at=killed)
    moved = load.owners(since=killed, until=min(filter(None, up), default=None))
    figures.update(
        {
            "failed_writes": summary["writes_failed"],
            "failed_reads": summary["reads_failed"],
            "recovery_s (kill -> last failed request)": summary["recovery_s"],
            "haproxy_down_s (per LB)": [_since(killed, t) for t in down],
            "docker_running_again_s": _since(killed, running),
            "docker_healthy_again_s": _since(killed, healthy),
            "haproxy_up_again_s (per LB)": [_since(killed, t) for t in up],
            "its_users": len(its_users),
            "requests": summary["requests"],
            "failure_kinds": summary["failure_kinds"],
        }
    )

    assert all(down), f"HAProxy never marked {server} DOWN: {[w.changes for w in lbs.values()]}"
    assert max(d - killed for d in down if d) <= TAKEN_OUT_WITHIN_S, figures
    assert summary["reads_failed"] == 0, summary
    # While it was out, its users were answered by other containers.
    served_elsewhere = {u for u in its_users if moved.get(u, set()) - {instance}}
    assert served_elsewhere, f"none of {len(its_users)} users was served elsewhere"
    assert running and healthy, f"Docker did not bring {victim} back: {docker_view.changes}"
    _check_nothing_lost(load, figures)


# --- 2. a whole API host stopped and started ---------------------------------------------------


def test_api_host_stopped_and_started(
    lab: Any, start_load: Callable[..., Load], figures: dict[str, Any], request: Any
) -> None:
    host = lab.hosts("api")[-1]
    host_container = lab.container(host)
    servers = [server_name(host, c) for c in api_containers(lab, host)]
    address_before = host_ip(host_container)
    request.addfinalizer(lambda: docker("start", host_container, check=False))

    load = start_load()
    load.wait_warm()
    with _watch_lbs(lab, servers) as lbs:
        stopped = load.mark("stop")
        docker("stop", "-t", "30", host_container)
        stop_took = time.time() - stopped
        wait_for(
            f"{host}'s containers DOWN on every LB",
            lambda: all(_all("DOWN")(_latest(w)) for w in lbs.values()),
            timeout=30,
            every=0.5,
        )
        load.settle(5)
        started = load.mark("start")
        docker("start", host_container)
        address_after = host_ip(host_container)
        figures["address"] = f"{address_before} -> {address_after}"
        assert address_after == address_before, (
            f"{host} came back on {address_after}, was {address_before}: HAProxy's backends, "
            "Gluster's auth.allow and Prometheus's targets keep the old address until site.yml reruns"
        )
        wait_for(
            f"{host}'s containers UP again on every LB",
            lambda: all(
                _all("UP")(_latest(w)) and w.first(_all("UP"), started) for w in lbs.values()
            ),
            timeout=240,
            every=1,
        )
        load.settle(2)
    load.stop()

    down = [w.first(_all("DOWN"), stopped) for w in lbs.values()]
    up = [w.first(_all("UP"), started) for w in lbs.values()]
    summary = load.summary(fault_at=stopped)
    figures.update(
        {
            "failed_writes": summary["writes_failed"],
            "failed_reads": summary["reads_failed"],
            "recovery_s (stop -> last failed request)": summary["recovery_s"],
            "docker_stop_took_s": round(stop_took, 1),
            "haproxy_all_down_s (per LB)": [_since(stopped, t) for t in down],
            "back_in_service_s (start -> all UP, per LB)": [_since(started, t) for t in up],
            "requests": summary["requests"],
            "failure_kinds": summary["failure_kinds"],
        }
    )
    healthy = {c: container_state(host_container, c)[1] for c in api_containers(lab, host)}
    assert set(healthy.values()) == {"healthy"}, healthy
    assert summary["reads_failed"] == 0, summary
    _check_nothing_lost(load, figures)


# --- 3. one storage host stopped: quorum, then self-heal ---------------------------------------


def test_storage_host_stopped_then_healed(
    lab: Any, start_load: Callable[..., Load], figures: dict[str, Any], request: Any
) -> None:
    storage = lab.hosts("storage")
    host = storage[1] if len(storage) > 1 else storage[0]
    host_container = lab.container(host)
    survivor = lab.container(next(h for h in storage if h != host))
    request.addfinalizer(lambda: docker("start", host_container, check=False))

    load = start_load()
    load.wait_warm()
    stopped = load.mark("stop")
    docker("stop", "-t", "30", host_container)
    load.settle(8)
    # Two of three bricks: the volume takes writes (cluster.quorum-type auto) ...
    probe = f"{STORE_MOUNT}/.fault-probe-{int(stopped)}"
    in_host(survivor, "sh", "-c", f"echo quorum > {probe} && cat {probe} && rm {probe}")
    started = load.mark("start")
    during = [o for o in load.snapshot() if o.method == "PUT" and stopped + 1 < o.ended < started]
    acked_during = sum(1 for o in during if o.ok)
    docker("start", host_container)

    # ... and the restarted host mounts the store again by itself (fstab, _netdev).
    def mounted() -> bool:
        out = in_host(
            host_container,
            "sh",
            "-c",
            f"findmnt -n -o FSTYPE {STORE_MOUNT} && test -e {STORE_MOUNT}/.apptive-store",
            check=False,
            timeout=30,
        )
        return out.strip() == "fuse.glusterfs"

    wait_for(f"{STORE_MOUNT} mounted again on {host}", mounted, timeout=180)
    remounted = time.time()

    def healed() -> dict[str, str] | None:
        pending = _gluster_heal_pending(survivor)
        return pending if pending and set(pending.values()) == {"0"} else None

    # Bounded: the self-heal daemon starts an index heal when a brick comes back.
    wait_for("`gluster volume heal apptive info` to show nothing pending", healed, timeout=240)
    heal_done = time.time()
    servers = (
        [server_name(host, c) for c in api_containers(lab, host)]
        if host in lab.hosts("api")
        else []
    )
    if servers:
        wait_for(
            f"{host}'s containers UP again on every LB",
            lambda: all(
                _all("UP")(
                    tuple(haproxy_status(lab.container(lb)).get(s, "missing") for s in servers)
                )
                for lb in lab.hosts("lb")
            ),
            timeout=120,
        )
    load.settle(2)
    load.stop()

    summary = load.summary(fault_at=stopped)
    fstab = in_host(host_container, "grep", f" {STORE_MOUNT} ", "/etc/fstab").split()
    figures.update(
        {
            "failed_writes": summary["writes_failed"],
            "failed_reads": summary["reads_failed"],
            "writes_acked_while_down": f"{acked_during} of {len(during)}",
            "recovery_s (stop -> last failed request)": summary["recovery_s"],
            "remounted_s (start -> mount back)": _since(started, remounted),
            "healed_s (start -> nothing pending)": _since(started, heal_done),
            "fstab_options": fstab[3] if len(fstab) > 3 else fstab,
            "failure_kinds": summary["failure_kinds"],
        }
    )
    assert acked_during > 0, f"no write acknowledged while {host} was down: {summary}"
    assert "_netdev" in figures["fstab_options"]
    _check_nothing_lost(load, figures)


# --- 4. one LB stopped -------------------------------------------------------------------------


def test_lb_stopped_peer_keeps_every_user(
    lab: Any, start_load: Callable[..., Load], figures: dict[str, Any], request: Any
) -> None:
    down_lb, other_lb = lab.hosts("lb")[:2]
    lb_container = lab.container(down_lb)
    address_before = host_ip(lb_container)
    request.addfinalizer(lambda: docker("start", lb_container, check=False))

    # A client that knows both LBs: no HTTP answer at all -> the same request to the other one.
    load = start_load(failover=True)
    load.wait_warm(requests_per_user=3)
    before = load.owners()
    split = {u: sorted(c) for u, c in before.items() if len(c) != 1}
    assert not split, f"users on two containers before the fault: {split}"

    stopped = load.mark("stop")
    docker("stop", "-t", "10", lb_container)
    stop_done = time.time()
    load.settle(10)
    started = load.mark("start")
    docker("start", lb_container)
    address_after = host_ip(lb_container)

    def answers() -> bool:
        try:
            return requests.get(f"{LB_URLS[down_lb]}/health", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    wait_for(f"{down_lb} answering again", answers, timeout=120, every=0.5)
    back = time.time()
    load.settle(8)
    load.stop()

    during = [o for o in load.snapshot() if stop_done < o.started and o.ended < started and o.ok]
    after = load.owners(since=back + 1)
    moved_during = {
        o.user: o.served_by for o in during if o.served_by not in before.get(o.user, set())
    }
    moved_after = {u: sorted(c) for u, c in after.items() if c != before.get(u)}
    summary = load.summary(fault_at=stopped)
    figures.update(
        {
            "failed_writes": summary["writes_failed"],
            "failed_reads": summary["reads_failed"],
            "client_failovers": summary["client_failovers"],
            "served_by_the_other_lb_while_down": len(during),
            "users_moved_while_down": len(moved_during),
            "users_moved_after_restart": len(moved_after),
            "back_s (start -> answering)": _since(started, back),
            "address": f"{address_before} -> {address_after}",
            "failure_kinds": summary["failure_kinds"],
        }
    )
    assert {o.lb for o in during} <= {other_lb}, "requests answered by the stopped LB"
    assert len({o.user for o in during}) == len(load.users), "not every user was served"
    assert not moved_during, f"users on another container while {down_lb} was down: {moved_during}"
    assert summary["writes_failed"] == 0 and summary["reads_failed"] == 0, summary
    assert address_after == address_before, figures["address"]
    assert not moved_after, f"users on another container after {down_lb} came back: {moved_after}"
    _check_nothing_lost(load, figures)


# --- 5. HAProxy reloaded under load ------------------------------------------------------------


def test_haproxy_reload_drops_nothing(
    lab: Any, start_load: Callable[..., Load], figures: dict[str, Any]
) -> None:
    load = start_load()
    load.wait_warm()
    before = load.owners()
    first = load.mark("reload")
    reloads = 0
    for lb in lab.hosts("lb"):
        for _ in range(3):
            in_host(lab.container(lb), "systemctl", "reload", "haproxy")
            reloads += 1
            load.settle(1.5)
    load.settle(3)
    load.stop()

    after = load.owners(since=first)
    moved = {u: sorted(c) for u, c in after.items() if c != before.get(u)}
    summary = load.summary(fault_at=first)
    figures.update(
        {
            "reloads": reloads,
            "requests": summary["requests"],
            "failed_requests": summary["writes_failed"] + summary["reads_failed"],
            "users_moved": len(moved),
            "failure_kinds": summary["failure_kinds"],
        }
    )
    assert summary["writes_failed"] == 0 and summary["reads_failed"] == 0, summary
    assert not moved, f"the stick table lost users across reloads: {moved}"
    _check_nothing_lost(load, figures)


# --- 6. the store unmounted on a host ----------------------------------------------------------


def test_store_unmounted_on_a_host(
    lab: Any, start_load: Callable[..., Load], figures: dict[str, Any], request: Any
) -> None:
    host = lab.hosts("api")[0]
    host_container = lab.container(host)
    containers = api_containers(lab, host)
    restarted = containers[0]
    server = server_name(host, restarted)
    baseline = _underlying_dir_listing(host_container)

    def restore() -> None:
        in_host(
            host_container,
            "sh",
            "-c",
            f"mountpoint -q {STORE_MOUNT} || mount {STORE_MOUNT}",
            check=False,
        )
        if container_state(host_container, restarted)[1] != "healthy":
            in_host(host_container, "docker", "restart", restarted, check=False)

    request.addfinalizer(restore)

    load = start_load()
    load.wait_warm()
    unmounted = load.mark("umount")
    in_host(host_container, "umount", "-l", STORE_MOUNT)
    load.settle(8)
    # Running containers keep their own reference to the FUSE mount (Docker binds it rprivate):
    # they go on serving from the volume, which is safe. What the sentinel guards against is a
    # container that starts on the bare mount point, so restart one now.
    running_states = {c: container_state(host_container, c)[1] for c in containers}
    local_while_running = in_host(host_container, "ls", "-A", STORE_MOUNT).split()
    in_host(host_container, "docker", "restart", restarted)
    restarted_at = time.time()
    wait_for(
        f"{restarted} unhealthy and out of every LB",
        lambda: (
            container_state(host_container, restarted)[1] == "unhealthy"
            and all(
                haproxy_status(lab.container(lb)).get(server, "").startswith("DOWN")
                for lb in lab.hosts("lb")
            )
        ),
        timeout=60,
    )
    out_at = time.time()
    load.settle(4)
    local_while_out = in_host(host_container, "ls", "-A", STORE_MOUNT).split()

    remounted = load.mark("mount")
    in_host(host_container, "mount", STORE_MOUNT)
    # A remount does not reach a running container's bind of the bare directory.
    time.sleep(8)
    came_back_alone = container_state(host_container, restarted)[1] == "healthy"
    if not came_back_alone:
        in_host(host_container, "docker", "restart", restarted)
    wait_for(
        f"{restarted} healthy and UP on every LB",
        lambda: (
            container_state(host_container, restarted)[1] == "healthy"
            and all(haproxy_status(lab.container(lb)).get(server) == "UP" for lb in lab.hosts("lb"))
        ),
        timeout=90,
    )
    back_at = time.time()
    load.settle(2)
    load.stop()
    after = _underlying_dir_listing(host_container)

    summary = load.summary(fault_at=unmounted)
    figures.update(
        {
            "running_containers_after_umount": running_states,
            "restarted_container_out_of_lbs_s": _since(restarted_at, out_at),
            "came_back_after_remount_without_restart": came_back_alone,
            "back_in_service_s (mount -> UP)": _since(remounted, back_at),
            "failed_writes": summary["writes_failed"],
            "failed_reads": summary["reads_failed"],
            "failure_kinds": summary["failure_kinds"],
            "local_dir_files": after,
        }
    )
    assert not local_while_running and not local_while_out, (
        f"written to the bare mount point: {local_while_running or local_while_out}"
    )
    assert after == baseline == [], f"files under the mount point: {after}"
    _check_nothing_lost(load, figures)

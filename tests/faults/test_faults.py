"""Faults under steady load, against a lab: every acknowledged write must still be there.

Each test starts a bounded load of reads and writes for many users through both load balancers,
injects one fault, restores it (also on failure, through finalizers), then reads back every
acknowledged write and compares checksums. What each fault showed (failed writes, recovery
times) is printed at the end of the run and written to .cache/faults-report.json.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
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
    haproxy_servers,
    haproxy_status,
    host_ip,
    in_host,
    server_name,
    wait_for,
)

# HAProxy's checks (roles/haproxy defaults): inter 2 s, fall 2, rise 2, check timeout 5 s; plus
# 3 s for this test's own polling (`docker exec` into the LBs on a loaded machine).
TAKEN_OUT_WITHIN_S = 2 * 2 + 5 + 3


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


def _load_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """What the load saw, in the same words for every fault."""
    return {
        "requests": summary["requests"],
        "failed_writes": summary["writes_failed"],
        "failed_reads": summary["reads_failed"],
        "recovery_s (fault -> last failed request)": summary["recovery_s"],
        "slowest_request_s (after the fault)": summary["slowest_request_s"],
        "resent_after_idle_close": summary["idle_close_retries"],
        "failures": summary["failure_kinds"],
        "failures_by_container": summary["failures_by_container"],
    }


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


def _health_from_host(host_container: str, name: str) -> str:
    """`GET /health` of an API container on its published address, from inside its host."""
    binding = in_host(
        host_container,
        "docker",
        "inspect",
        "-f",
        '{{range (index .HostConfig.PortBindings "3600/tcp")}}{{.HostIp}}:{{.HostPort}}{{end}}',
        name,
    ).strip()
    script = (
        "import urllib.request, urllib.error\n"
        "try:\n"
        f"    r = urllib.request.urlopen('http://{binding}/health', timeout=5)\n"
        "    print(r.status, r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code, e.read().decode())\n"
        "except OSError:\n"
        "    pass\n"
    )
    return in_host(host_container, "python3", "-c", script, check=False).strip()


def _underlying_dir_listing(host_container: str) -> list[str]:
    """What is in the mount point's own directory, beneath whatever is mounted on it."""
    script = (
        "set -e; d=$(mktemp -d /run/rootview.XXXXXX); mount --bind / $d;"
        f" ls -A $d{STORE_MOUNT}; umount $d; rmdir $d"
    )
    return in_host(host_container, "sh", "-c", script).split()


# --- 1. an API container killed ----------------------------------------------------------------

KILLS = {
    # `docker kill` counts as a manual stop for Docker: unless-stopped does not restart it.
    "docker_kill": "docker kill {name}",
    # The process dying by itself (a crash, the OOM killer): the restart policy applies.
    "process_crash": "kill -9 $(docker inspect -f '{{{{.State.Pid}}}}' {name})",
}


@pytest.mark.parametrize("how", sorted(KILLS))
def test_api_container_killed(
    lab: Any, start_load: Callable[..., Load], figures: dict[str, Any], request: Any, how: str
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

    def restarted(state: tuple[str, str, str]) -> bool:
        return state[0] == "running" and state[2] != started_before

    with (
        _watch_lbs(lab, [server]) as lbs,
        Watcher(lambda: container_state(host_container, victim)) as docker_view,
    ):
        killed = load.mark("kill")
        in_host(host_container, "sh", "-c", KILLS[how].format(name=victim))
        started_by_hand = None
        if how == "docker_kill":
            wait_for(
                f"{server} DOWN on every LB",
                lambda: all(_latest(w) and _latest(w)[0].startswith("DOWN") for w in lbs.values()),
                timeout=30,
                every=0.3,
            )
            load.settle(3)  # its users are served elsewhere meanwhile
            if container_state(host_container, victim)[0] != "running":
                started_by_hand = load.mark("docker start")
                in_host(host_container, "docker", "start", victim)

        def back() -> bool:
            state = container_state(host_container, victim)
            return (
                restarted(state)
                and state[1] == "healthy"
                and all(_latest(w) == ("UP",) for w in lbs.values())
            )

        wait_for(f"{victim} running again, healthy and UP on every LB", back, timeout=120)
        load.settle(2)
    load.stop()

    down = [w.first(lambda s: s[0].startswith("DOWN"), killed) for w in lbs.values()]
    up = [
        w.first(lambda s: s == ("UP",), max(filter(None, down), default=killed))
        for w in lbs.values()
    ]
    running = docker_view.first(restarted, killed)
    healthy = docker_view.first(lambda s: restarted(s) and s[1] == "healthy", killed)
    summary = load.summary(fault_at=killed)
    moved = load.owners(since=killed, until=min(filter(None, up), default=None))
    served_elsewhere = {u for u in its_users if moved.get(u, set()) - {instance}}
    figures.update(_load_figures(summary))
    figures.update(
        {
            "haproxy_down_s (per LB)": [_since(killed, t) for t in down],
            "restarted_by_docker": started_by_hand is None,
            "running_again_s": _since(killed, running),
            "healthy_again_s": _since(killed, healthy),
            "haproxy_up_again_s (per LB)": [_since(killed, t) for t in up],
            "its_users (served elsewhere meanwhile)": f"{len(its_users)} ({len(served_elsewhere)})",
        }
    )

    assert summary["reads_failed"] == 0, summary
    if how == "docker_kill":
        assert all(down), f"HAProxy never marked {server} DOWN"
        assert max(d - killed for d in down if d) <= TAKEN_OUT_WITHIN_S, figures
        # While it was out, its users were answered by other containers.
        assert served_elsewhere, f"none of {len(its_users)} users was served elsewhere"
    else:
        assert started_by_hand is None and running, f"Docker did not restart {victim}"
    assert healthy, f"{victim} not healthy again: {docker_view.changes}"
    _check_nothing_lost(load, figures)


# --- 2 and 3. a whole host stopped and started: its API containers and its brick ---------------
#
# In the lab (as in the README's layout) every API host is also a storage host, so one stop and
# start of a host is both faults: its containers leave and rejoin HAProxy (2), its brick leaves
# and the volume heals (3). One cycle instead of two saves about 80 s of the suite's runtime.


def _api_and_storage_host(lab: Any) -> str:
    both = [h for h in lab.hosts("api") if h in lab.hosts("storage")]
    return both[-1] if both else lab.hosts("api")[-1]


def test_host_stopped_and_started(
    lab: Any, start_load: Callable[..., Load], figures: dict[str, Any], request: Any
) -> None:
    host = _api_and_storage_host(lab)
    host_container = lab.container(host)
    is_storage = host in lab.hosts("storage")
    servers = [server_name(host, c) for c in api_containers(lab, host)]
    survivor = lab.container(next(h for h in lab.hosts("storage") if h != host))
    address_before = host_ip(host_container)
    request.addfinalizer(lambda: docker("start", host_container, check=False))

    load = start_load()
    load.wait_warm()
    its_users = {
        user
        for user, owners in load.owners().items()
        if any(owner.startswith(f"{host}/") for owner in owners)
    }
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
        load.settle(4)
        # Two of three bricks: the volume still takes writes (cluster.quorum-type auto).
        probe = f"{STORE_MOUNT}/.fault-probe-{int(stopped)}"
        in_host(survivor, "sh", "-c", f"echo quorum > {probe} && cat {probe} && rm {probe}")
        started = load.mark("start")
        docker("start", host_container)
        address_after = host_ip(host_container)
        figures["address"] = f"{address_before} -> {address_after}"
        assert address_after == address_before, (
            f"{host} came back on {address_after}, was {address_before}: HAProxy's backends, "
            "Gluster's auth.allow and Prometheus's targets keep the old address until "
            "site.yml reruns"
        )

        # The store is mounted again at boot by fstab (_netdev), before Docker starts.
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
        wait_for(
            f"{host}'s containers UP again on every LB",
            lambda: all(
                _all("UP")(_latest(w)) and w.first(_all("UP"), started) for w in lbs.values()
            ),
            timeout=240,
            every=1,
        )
    healed = None
    if is_storage:

        def nothing_pending() -> dict[str, str] | None:
            pending = _gluster_heal_pending(survivor)
            return pending if pending and set(pending.values()) == {"0"} else None

        # Bounded: the self-heal daemon starts an index heal when a brick comes back.
        wait_for(f"`gluster volume heal {VOLUME} info`: nothing pending", nothing_pending, 240)
        healed = time.time()
    load.settle(2)
    load.stop()

    down = [w.first(_all("DOWN"), stopped) for w in lbs.values()]
    up = [w.first(_all("UP"), started) for w in lbs.values()]
    writes_while_down = [
        o for o in load.snapshot() if o.method == "PUT" and stopped + 1 < o.ended < started
    ]
    served_elsewhere = {
        user
        for user, owners in load.owners(since=max(filter(None, down)), until=started).items()
        if user in its_users
    }
    summary = load.summary(fault_at=stopped)
    fstab = in_host(host_container, "grep", f" {STORE_MOUNT} ", "/etc/fstab").split()
    figures.update(_load_figures(summary))
    figures.update(
        {
            "docker_stop_took_s": round(stop_took, 1),
            "haproxy_all_down_s (per LB)": [_since(stopped, t) for t in down],
            "its_users (served elsewhere while down)": f"{len(its_users)} ({len(served_elsewhere)})",
            "writes_acked_while_down": f"{sum(o.ok for o in writes_while_down)} of "
            f"{len(writes_while_down)}",
            "remounted_s (start -> store mounted)": _since(started, remounted),
            "back_in_service_s (start -> all UP, per LB)": [_since(started, t) for t in up],
            "healed_s (start -> nothing pending)": _since(started, healed),
            "fstab_options": fstab[3] if len(fstab) > 3 else fstab,
        }
    )
    healthy = {c: container_state(host_container, c)[1] for c in api_containers(lab, host)}
    assert set(healthy.values()) == {"healthy"}, healthy
    # Seen: a few 503 (store unavailable) from the stopping host's own containers while it
    # shuts down, before HAProxy's checks take them out. Nothing else may fail.
    elsewhere = {c for c in summary["failures_by_container"] if not c.startswith(f"{host}/")}
    assert not elsewhere and set(summary["failure_kinds"]) <= {"503"}, summary
    assert any(o.ok for o in writes_while_down), f"no write acknowledged while {host} was down"
    assert "_netdev" in str(figures["fstab_options"]), figures["fstab_options"]
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

    def every_user_served_since_stop() -> bool:
        served = {o.user for o in load.snapshot() if o.ok and o.started > stop_done}
        return len(served) == len(load.users)

    # Long enough for every user to reach the other LB (a loaded machine needs longer).
    wait_for(f"every user served while {down_lb} is down", every_user_served_since_stop, 120)
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
    load.settle(5)
    load.stop()

    during = [o for o in load.snapshot() if stop_done < o.started and o.ended < started and o.ok]
    after = load.owners(since=back + 1)
    moved_during = {
        o.user: o.served_by for o in during if o.served_by not in before.get(o.user, set())
    }
    moved_after = {u: sorted(c) for u, c in after.items() if c != before.get(u)}
    summary = load.summary(fault_at=stopped)
    figures.update(_load_figures(summary))
    figures.update(
        {
            "client_failovers": summary["client_failovers"],
            "served_by_the_other_lb_while_down": len(during),
            "users_moved_while_down": len(moved_during),
            "users_moved_after_restart": len(moved_after),
            "back_s (start -> answering)": _since(started, back),
            "address": f"{address_before} -> {address_after}",
        }
    )
    assert {o.lb for o in during} <= {other_lb}, "requests answered by the stopped LB"
    assert len({o.user for o in during}) == len(load.users), "not every user was served"
    assert not moved_during, f"users on another container while {down_lb} was down: {moved_during}"
    assert summary["writes_failed"] == 0 and summary["reads_failed"] == 0, summary
    assert address_after == address_before, figures["address"]
    if moved_after:
        # Seen now and then, 1 user of 42: the restarted HAProxy answered before its peer had
        # sent it the stick table (as after a reload, test 5). No request failed: the owner
        # cache hands the database over. Reported, not failed.
        warnings.warn(f"users moved after {down_lb} came back: {moved_after}", stacklevel=1)
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
        for _ in range(2):
            in_host(lab.container(lb), "systemctl", "reload", "haproxy")
            reloads += 1
            load.settle(1)
    load.settle(2)
    load.stop()

    after = load.owners(since=first)
    moved = {u: sorted(c) for u, c in after.items() if c != before.get(u)}
    summary = load.summary(fault_at=first)
    figures.update(_load_figures(summary))
    figures.update(
        {
            "reloads": reloads,
            "users_moved": len(moved),
        }
    )
    assert summary["writes_failed"] == 0 and summary["reads_failed"] == 0, summary
    if moved:
        # Seen in about half the runs, 1 to 4 users of 42: a request reached the new process
        # before the old one had taught it the stick table. The owner cache hands the user's
        # database over (no failed request), so this is reported rather than failed.
        warnings.warn(f"users moved across reloads: {moved}", stacklevel=1)
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
    load.settle(5)
    # Running containers keep their own reference to the FUSE mount (Docker binds it rprivate):
    # they go on serving from the volume, which is safe. What the sentinel guards against is a
    # container that starts on the bare mount point, so restart one now.
    running_states = {c: container_state(host_container, c)[1] for c in containers}
    local_while_running = in_host(host_container, "ls", "-A", STORE_MOUNT).split()
    restart_at = time.time()
    in_host(host_container, "docker", "restart", "-t", "2", restarted)
    restarted_at = time.time()
    # The container's own report (Docker says "unhealthy" only after its start period and
    # three failed checks, about 20 s: the same answer, later).
    health = wait_for(
        f"{restarted} answering /health", lambda: _health_from_host(host_container, restarted), 60
    )
    docker_health = container_state(host_container, restarted)[1]

    def out_for_503() -> bool:
        rows = [haproxy_servers(lab.container(lb)).get(server, {}) for lb in lab.hosts("lb")]
        return all(
            r.get("status", "").startswith("DOWN") and r.get("check_code") == "503" for r in rows
        )

    # Out because its check answers 503, not merely because it was restarting.
    wait_for(f"{restarted} DOWN on every LB for its 503", out_for_503, timeout=60, every=0.3)
    out_at = time.time()
    load.settle(2)
    local_while_out = in_host(host_container, "ls", "-A", STORE_MOUNT).split()

    remounted = load.mark("mount")
    in_host(host_container, "mount", STORE_MOUNT)
    # A remount does not reach a running container's bind of the bare directory.
    time.sleep(3)
    came_back_alone = container_state(host_container, restarted)[1] == "healthy"
    if not came_back_alone:
        in_host(host_container, "docker", "restart", "-t", "2", restarted)
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
    figures.update(_load_figures(summary))
    figures.update(
        {
            "running_containers_after_umount": running_states,
            "docker_restart_took_s": _since(restart_at, restarted_at),
            "restarted_container_out_of_lbs_s (after start)": _since(restarted_at, out_at),
            "restarted_container_health": f"{health} (Docker: {docker_health})",
            "came_back_after_remount_without_restart": came_back_alone,
            "back_in_service_s (mount -> UP)": _since(remounted, back_at),
            "local_dir_files": after,
        }
    )
    # The only refusals: the restarted container's 503 (store unavailable, nothing stored)
    # to the requests HAProxy sent it before its checks took it out.
    assert set(summary["failures_by_container"]) <= {f"{host}/{restarted}"}, summary
    assert set(summary["failure_kinds"]) <= {"503"}, summary
    assert not local_while_running and not local_while_out, (
        f"written to the bare mount point: {local_while_running or local_while_out}"
    )
    assert after == baseline == [], f"files under the mount point: {after}"
    assert health.startswith("503") and "sentinel" in health.lower(), health
    _check_nothing_lost(load, figures)

#!/usr/bin/env python3
"""A full rolling upgrade of every API container of the lab, under load: what failed.

    .venv/bin/python scripts/bench_rollout.py [--to VERSION] [--no-return] [--users 200] ...

While a few workers send steady reads and writes for many users through BOTH load balancers
(127.0.0.1:8080 and :8081), the script runs

    ansible-playbook -i inventory/lab site.yml --tags api,lb -e apptive_api_version=<other>

where <other> is the site's version with the patch number one up (1.1.0 -> 1.1.1; --to
chooses another), built from the same source when dist/ lacks it. Then, unless
--no-return, it rolls back the same way to the site's own version (group_vars/all/main.yml,
no -e), so the lab ends where site.yml wants it. It prints, per rollout, the requests sent and
failed (by status), the playbook's duration and result, how long servers were out of the load
balancers, and finally reads back every acknowledged write through both load balancers.
Exit status 0 only when nothing failed, every write reads back and every playbook succeeded.

Traffic goes to 127.0.0.1 only; the load balancers' state is read with `docker exec` in the
lab's LB containers. Not a timed test: its numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LBS = {"lb1": ("127.0.0.1", 8080), "lb2": ("127.0.0.1", 8081)}
STORE_MOUNT = "/mnt/apptive_store"
KEYS = ("profile", "settings", "notes")


def log(message: str) -> None:
    print(f"bench-rollout: {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))]


# --- the load --------------------------------------------------------------------------------


class Client:
    """Keep-alive connections, one per load balancer. A request on a reused connection that the
    load balancer had already closed (no byte of answer) is sent again on a new connection, as
    every HTTP client does; those are counted apart."""

    def __init__(self) -> None:
        self.conns: dict[str, http.client.HTTPConnection] = {}
        self.reconnects = 0

    def request(
        self, lb: str, method: str, path: str, body: Any = None
    ) -> tuple[int | str, Any, str]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (0, 1):
            reused = lb in self.conns
            conn = self.conns.get(lb) or http.client.HTTPConnection(*LBS[lb], timeout=40)
            self.conns[lb] = conn
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                del self.conns[lb]
                if reused and attempt == 0:
                    self.reconnects += 1
                    continue
                return type(exc).__name__, None, ""
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                del self.conns[lb]
                return type(exc).__name__, None, ""
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                del self.conns[lb]
            try:
                parsed = json.loads(data) if data else None
            except ValueError:
                parsed = data[:200].decode(errors="replace")
            return response.status, parsed, response.getheader("X-Served-By", "")
        raise AssertionError("unreachable")


@dataclass
class Totals:
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    ok: int = 0
    failed: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    reconnects: int = 0

    def add(self, status: int | str, seconds: float, good: bool) -> None:
        with self.lock:
            self.sent += 1
            self.latencies.append(seconds)
            if good:
                self.ok += 1
            else:
                self.failed[str(status)] += 1


class Load:
    """`workers` threads; each owns a slice of the users, so a user's writes are ordered and
    the last acknowledged value of each record is known. Each step: a write through one load
    balancer, then a read of the same record through the other."""

    def __init__(self, users: list[str], workers: int, rate: float, max_requests: int) -> None:
        self.users = users
        self.workers = workers
        self.interval = workers / rate if rate > 0 else 0.0
        self.max_requests = max_requests
        self.stop = threading.Event()
        self.totals = Totals()
        self.count = 0  # requests of every phase, against max_requests
        # (user, key) -> last acknowledged value, and values whose write failed after it
        # (a failed write may or may not have been stored).
        self.acked: dict[tuple[str, str], Any] = {}
        self.maybe: dict[tuple[str, str], list[Any]] = defaultdict(list)
        self.served_by: dict[str, list[str]] = defaultdict(list)
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, args=(n,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def take(self) -> Totals:
        """The totals so far, and a fresh counter for what follows."""
        with self.totals.lock:
            taken, self.totals = self.totals, Totals()
        return taken

    def _work(self, n: int) -> None:
        client = Client()
        mine = self.users[n :: self.workers]
        seq = 0
        rng = random.Random(n)
        while not self.stop.is_set() and self.count < self.max_requests:
            started = time.monotonic()
            user = mine[seq % len(mine)]
            key = KEYS[(seq // len(mine)) % len(KEYS)]
            write_lb, read_lb = rng.sample(sorted(LBS), 2)
            value = {"user": user, "seq": seq, "worker": n, "pad": "x" * 64}
            path = f"/api/users/{user}/records/{key}"
            totals = self.totals
            t0 = time.monotonic()
            status, _, server = client.request(write_lb, "PUT", path, value)
            good = status in (200, 201)
            totals.add(status, time.monotonic() - t0, good)
            if good:
                self.acked[(user, key)] = value
                self.maybe.pop((user, key), None)
                self._saw(user, server)
            else:
                self.maybe[(user, key)].append(value)
            t0 = time.monotonic()
            status, body, server = client.request(read_lb, "GET", path)
            expected = [self.acked.get((user, key)), *self.maybe.get((user, key), [])]
            good = status == 200 and body in expected
            if status == 200 and not good:
                status = "200 but stale"
            totals.add(status, time.monotonic() - t0, good)
            if good:
                self._saw(user, server)
            totals.reconnects += client.reconnects
            client.reconnects = 0
            self.count += 2
            seq += 1
            pause = self.interval - (time.monotonic() - started)
            if pause > 0:
                self.stop.wait(pause)

    def _saw(self, user: str, server: str) -> None:
        seen = self.served_by[user]
        if server and (not seen or seen[-1] != server):
            seen.append(server)


# --- the lab ---------------------------------------------------------------------------------


def vault_env(inventory_dir: str) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_VAULT_PASSWORD_FILE": os.environ.get(
            "ANSIBLE_VAULT_PASSWORD_FILE", str(REPO / inventory_dir / ".vault-pass")
        ),
    }


def inventory(inventory_dir: str) -> dict[str, Any]:
    out = subprocess.run(
        [str(REPO / ".venv/bin/ansible-inventory"), "-i", inventory_dir, "--list"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        env=vault_env(inventory_dir),
    )
    return json.loads(out.stdout)


def container_of(inv: dict[str, Any], host: str) -> str:
    """The lab container of a host. `ansible-inventory --list` leaves templates as they are:
    the lab's ansible_host is "lab-{{ inventory_hostname }}"."""
    value = str(inv["_meta"]["hostvars"][host].get("ansible_host", host))
    return re.sub(r"\{\{\s*inventory_hostname\s*\}\}", host, value)


def site_version() -> str:
    text = (REPO / "group_vars/all/main.yml").read_text()
    match = re.search(r'^apptive_api_version:\s*"?([^"\s]+)"?', text, re.M)
    if not match:
        raise SystemExit("cannot read apptive_api_version from group_vars/all/main.yml")
    return match.group(1)


def next_patch(version: str) -> str:
    major, minor, patch = version.split("-")[0].split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def ensure_archive(version: str) -> None:
    """The release's image archive in dist/; another version is the same source, relabelled."""
    if not (REPO / "dist" / f"apptive-api-{version}.tar").exists():
        log(f"building apptive-api:{version}")
        subprocess.run(["bash", str(REPO / "scripts/build-image.sh"), version], check=True)


def running_versions(samples: int = 30) -> Counter:
    client = Client()
    seen: Counter = Counter()
    for n in range(samples):
        status, body, _ = client.request(sorted(LBS)[n % 2], "GET", "/health")
        seen[body.get("version") if status == 200 and isinstance(body, dict) else status] += 1
    return seen


def lb_states(containers: list[str]) -> dict[str, dict[str, int]]:
    """{lb container: {server: admin state}} from each LB's runtime API."""
    states = {}
    for container in containers:
        out = subprocess.run(
            ["docker", "exec", container, "sh", "-c",
             "echo 'show servers state apptive_api' | socat stdio /run/haproxy/admin.sock"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        rows = [line.split() for line in out.splitlines() if re.match(r"^\d+ ", line)]
        states[container] = {row[3]: int(row[6]) for row in rows if len(row) > 6}
    return states


class OutOfService:
    """Polls both LBs every few seconds: when each server left (drain or maint) and came back."""

    def __init__(self, lb_containers: list[str], every: float = 2.0) -> None:
        self.lbs = lb_containers
        self.every = every
        self.stop = threading.Event()
        self.out_since: dict[tuple[str, str], float] = {}
        self.spells: list[tuple[str, str, float]] = []
        self.max_out = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OutOfService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            states = lb_states(self.lbs)
            out_now = set()
            for lb, servers in states.items():
                for server, admin in servers.items():
                    if admin & 0x09:  # forced maint or forced drain
                        out_now.add((lb, server))
                        self.out_since.setdefault((lb, server), now)
            for key in [k for k in self.out_since if k not in out_now]:
                self.spells.append((key[0], key[1], now - self.out_since.pop(key)))
            self.max_out = max(self.max_out, len({server for _, server in out_now}))
            self.stop.wait(self.every)


def run_playbook(inventory_dir: str, extra: list[str], log_path: Path) -> tuple[int, float, str]:
    cmd = [str(REPO / ".venv/bin/ansible-playbook"), "-i", inventory_dir, "site.yml"]
    cmd += ["--tags", "api,lb", *extra]
    env = {**vault_env(inventory_dir), "ANSIBLE_NOCOLOR": "1"}
    log(f"running: {' '.join(cmd[1:])} (log: {log_path})")
    started = time.monotonic()
    with log_path.open("w") as out:
        rc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    elapsed = time.monotonic() - started
    text = log_path.read_text()
    recap = text[text.rfind("PLAY RECAP") :] if "PLAY RECAP" in text else ""
    return rc, elapsed, recap


def read_back(load: Load) -> tuple[int, int, Counter]:
    client = Client()
    checked = 0
    mismatches = 0
    problems: Counter = Counter()
    for n, ((user, key), value) in enumerate(sorted(load.acked.items())):
        lb = sorted(LBS)[n % 2]
        status, body, _ = client.request(lb, "GET", f"/api/users/{user}/records/{key}")
        checked += 1
        if status != 200 or body not in [value, *load.maybe.get((user, key), [])]:
            mismatches += 1
            problems[f"{status}" if status != 200 else "different value"] += 1
    return checked, mismatches, problems


def remove_users(inv: dict[str, Any], prefix: str) -> None:
    host = container_of(inv, inv["api"]["hosts"][0])
    subprocess.run(
        ["docker", "exec", host, "sh", "-c",
         f"mountpoint -q {STORE_MOUNT} && find {STORE_MOUNT}/users -type f"
         f" -name '{prefix}*.sqlite3*' -delete"],
        check=False, capture_output=True,
    )  # fmt: skip


def describe(name: str, totals: Totals) -> str:
    failed = sum(totals.failed.values())
    by_status = ", ".join(f"{k}: {v}" for k, v in sorted(totals.failed.items())) or "none"
    lat = totals.latencies
    return (
        f"{name}: {totals.sent} sent, {failed} failed ({by_status}); "
        f"p50 {percentile(lat, 50) * 1000:.0f} ms, p99 {percentile(lat, 99) * 1000:.0f} ms, "
        f"max {max(lat, default=0) * 1000:.0f} ms; client reconnects {totals.reconnects}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", help="version of the first rollout (default: the next patch)")
    parser.add_argument(
        "--no-return",
        action="store_true",
        help="skip the second rollout, back to the site's version",
    )
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=40.0, help="write+read pairs per second")
    parser.add_argument("--max-requests", type=int, default=500_000)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before")
    parser.add_argument("--cooldown", type=float, default=10.0, help="seconds of load after")
    parser.add_argument("--inventory", default=os.environ.get("LAB_INVENTORY", "inventory/lab"))
    args = parser.parse_args(argv)

    inv = inventory(args.inventory)
    lb_containers = [container_of(inv, h) for h in inv["lb"]["hosts"]]
    site = site_version()
    running = running_versions()
    if len(running) != 1:
        log(f"the lab answers with several versions or errors: {dict(running)}; converge it first")
        return 2
    current = str(next(iter(running)))
    target = args.to or (site if current != site else next_patch(site))
    legs = [(target, ["-e", f"apptive_api_version={target}"])]
    if not args.no_return:
        legs.append((site, []))
    for version, _ in legs:
        ensure_archive(version)

    prefix = f"8{random.randrange(10**9, 10**10)}"
    users = [f"{prefix}{n:05d}" for n in range(args.users)]
    log(
        f"lab runs {current}; rollouts: {' then '.join(v for v, _ in legs)}; {args.users} users, "
        f"{args.workers} workers, {args.rate:g} write+read pairs/s through {', '.join(LBS)}"
    )
    load = Load(users, args.workers, args.rate, args.max_requests)
    cache = REPO / ".cache"
    cache.mkdir(exist_ok=True)
    lines: list[str] = []
    ok = True
    phases: list[Totals] = []
    load.start()
    time.sleep(args.warmup)
    phases.append(load.take())
    lines.append(describe(f"before ({args.warmup:g} s)", phases[-1]))
    for n, (version, extra) in enumerate(legs, start=1):
        with OutOfService(lb_containers) as watch:
            rc, seconds, recap = run_playbook(
                args.inventory, extra, cache / f"bench-rollout-{n}-{version}.log"
            )
        totals = load.take()
        phases.append(totals)
        ok &= rc == 0 and not totals.failed
        spells = [s for _, _, s in watch.spells]
        lines.append(
            describe(f"rollout {n}: {current if n == 1 else legs[0][0]} -> {version}", totals)
        )
        lines.append(
            f"  playbook: exit {rc}, {seconds:.0f} s; servers out of service: "
            f"{len(spells) // max(1, len(lb_containers))} per LB, each out "
            f"{min(spells, default=0):.0f}-{max(spells, default=0):.0f} s, at most "
            f"{watch.max_out} at once"
        )
        lines.extend(f"  {line}" for line in recap.splitlines()[1:] if line.strip())
    time.sleep(args.cooldown)
    load.finish()
    phases.append(load.take())
    lines.append(describe(f"after ({args.cooldown:g} s)", phases[-1]))
    failed: Counter = sum((t.failed for t in phases), Counter())
    ok &= not failed
    lines.insert(
        0,
        f"{sum(t.sent for t in phases)} requests sent, {sum(failed.values())} failed "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(failed.items())) or 'none'}), "
        f"{args.users} users through both load balancers",
    )

    moved = sum(1 for servers in load.served_by.values() if len(servers) > 1)
    checked, mismatches, problems = read_back(load)
    ok &= mismatches == 0
    final = running_versions()
    lines.append(
        f"read back: {checked} acknowledged records through both LBs, {mismatches} missing or "
        f"different ({', '.join(f'{k}: {v}' for k, v in problems.items()) or 'none'})"
    )
    lines.append(
        f"users whose container changed during the run: {moved} of {len(load.served_by)}; "
        f"the lab now runs {dict(final)}"
    )
    remove_users(inv, prefix)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

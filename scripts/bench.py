#!/usr/bin/env python3
"""Benchmark report of a lab: prints one table, side by side, from one run.

    .venv/bin/python scripts/bench.py [--only proxy,store,failover,converge,rollout] ...

The lab is taken from the environment like the tests (LAB_INVENTORY, default inventory/lab).

- proxy: throughput and p50/p99 latency through HAProxy (sticky, lb1's own frontend) versus
  straight to the same API containers (their internal_ip:port), one user always on the same
  container in both. The load runs INSIDE the first LB host (`python3 - _load ...`, this file
  fed on stdin), so both paths start from the same place and only HAProxy differs.
- store: per-user SQLite write latency on the GlusterFS mount versus a local directory, from
  scripts/bench_store.py when it targets this lab, otherwise measured here inside the first
  API host with the app's settings (journal_mode=DELETE, synchronous=FULL, BEGIN IMMEDIATE).
- failover: seconds from `docker kill` of one API container to all requests succeeding, under
  load from inside the first LB host; Docker's restart policy brings the container back.
- converge: the first converge of site.yml (read from its saved log, --first-converge-log)
  against an idempotent rerun made now, and the rerun's changed count.
- rollout: failed requests of scripts/bench_rollout.py when it exists.

Stdlib only: the load generators run inside lab hosts with their own python3. Traffic goes
to 127.0.0.1 or to the lab's containers only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# .parent twice, not parents[1]: piped into a lab host, __file__ is "<stdin>".
REPO = Path(__file__).resolve().parent.parent
STORE_MOUNT = "/mnt/apptive_store"
API_PORT_IN_CONTAINER = 3600
FAILOVER_WINDOW_S = 10  # seconds after a kill whose latency is compared with the seconds before


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- inside a lab host (stdlib only) --------------------------------------------------------


def _rank(ordered: Sequence[float], pct: float) -> float:
    """Nearest rank: an observed value, never an interpolation between two."""
    if not ordered:
        return float("nan")
    return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))]


class _Client:
    """Keep-alive connections per address; a reused connection the server closed is retried
    once on a fresh one, as any HTTP client does."""

    def __init__(self) -> None:
        self._conns: dict[tuple[str, int], http.client.HTTPConnection] = {}

    def request(
        self, address: tuple[str, int], method: str, path: str, body: bytes | None = None
    ) -> int:
        for attempt in (0, 1):
            reused = address in self._conns
            conn = self._conns.get(address) or http.client.HTTPConnection(*address, timeout=35)
            self._conns[address] = conn
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.drop(address)
                return response.status
            except (OSError, http.client.HTTPException):
                self.drop(address)
                if not reused or attempt:
                    return 0
        return 0

    def drop(self, address: tuple[str, int]) -> None:
        conn = self._conns.pop(address, None)
        if conn is not None:
            conn.close()


def _compare(cfg: dict[str, Any]) -> dict[str, Any]:
    """Same per-user work against each target; targets take turns, a slice of users each."""
    pad = "x" * cfg["value_bytes"]
    totals = {t["name"]: {"lat": [], "errors": 0, "wall": 0.0} for t in cfg["targets"]}

    def address_for(target: dict[str, Any], user: str) -> tuple[str, int]:
        servers = target["servers"]
        host, port = servers[int(user) % len(servers)]
        return host, int(port)

    def drive(target: dict[str, Any], users: list[str]) -> None:
        pending: queue.Queue[str] = queue.Queue()
        for user in users:
            pending.put(user)
        lock = threading.Lock()
        total = totals[target["name"]]

        def worker() -> None:
            client = _Client()
            lat: list[float] = []
            errors = 0
            while True:
                try:
                    user = pending.get_nowait()
                except queue.Empty:
                    break
                address = address_for(target, user)
                ops: list[tuple[str, str, bytes | None]] = [
                    ("PUT", "k0", json.dumps({"n": 0, "pad": pad}).encode())
                ]
                for r in range(cfg["rounds"]):
                    body = json.dumps({"n": r + 1, "pad": pad}).encode()
                    ops.append(("PUT", f"k{r % 3}", body))
                    ops += [("GET", f"k{r % 3}", None)] * cfg["reads"]
                for method, key, body in ops:
                    started = time.perf_counter()
                    status = client.request(
                        address, method, f"/api/users/{user}/records/{key}", body
                    )
                    lat.append(time.perf_counter() - started)
                    errors += not 200 <= status < 300
            with lock:
                total["lat"] += lat
                total["errors"] += errors

        threads = [threading.Thread(target=worker) for _ in range(cfg["concurrency"])]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        total["wall"] += time.perf_counter() - started

    slices = max(1, min(cfg["slices"], cfg["users"]))
    bounds = [cfg["users"] * n // slices for n in range(slices + 1)]
    for n in range(slices):
        for index, target in enumerate(cfg["targets"]):
            users = [f"{cfg['prefix']}{index}{u:04d}" for u in range(bounds[n], bounds[n + 1])]
            drive(target, users)
    result = {}
    for name, total in totals.items():
        ordered = sorted(total["lat"])
        result[name] = {
            "ops": len(ordered),
            "errors": total["errors"],
            "ops_per_s": len(ordered) / total["wall"] if total["wall"] else 0.0,
            "p50_ms": _rank(ordered, 50) * 1000,
            "p99_ms": _rank(ordered, 99) * 1000,
        }
    return result


def _timeline(cfg: dict[str, Any]) -> dict[str, Any]:
    """Requests for `duration` seconds; each one's wall-clock start, end and status."""
    address = (cfg["host"], int(cfg["port"]))
    stop_at = time.time() + cfg["duration"]
    records: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        client = _Client()
        rng = random.Random(n)
        users = [f"{cfg['prefix']}{n:02d}{u:03d}" for u in range(cfg["users_per_worker"])]
        mine: list[tuple[float, float, int]] = []
        written: set[str] = set()  # a read goes only to a record this worker has written
        i = 0
        while time.time() < stop_at:
            user = users[i % len(users)]
            i += 1
            path = f"/api/users/{user}/records/k{rng.randrange(3)}"
            started = time.time()
            if path not in written or rng.random() < 0.5:
                status = client.request(address, "PUT", path, json.dumps({"i": i}).encode())
                if 200 <= status < 300:
                    written.add(path)
            else:
                status = client.request(address, "GET", path)
            mine.append((started, time.time(), status))
            time.sleep(cfg["think"])
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(cfg["concurrency"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"records": sorted(records)}


def _sqlite(cfg: dict[str, Any]) -> dict[str, Any]:
    """Per-user databases as the app writes them: one write transaction per record."""
    lat: dict[str, list[float]] = {d["name"]: [] for d in cfg["dirs"]}
    pad = "x" * cfg["value_bytes"]
    slices = max(1, min(cfg["slices"], cfg["users"]))
    bounds = [cfg["users"] * n // slices for n in range(slices + 1)]
    for n in range(slices):
        for d in cfg["dirs"]:
            for u in range(bounds[n], bounds[n + 1]):
                conn = sqlite3.connect(f"{d['path']}/u{u:05d}.sqlite3", isolation_level=None)
                conn.execute("PRAGMA journal_mode=DELETE")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, v TEXT)")
                for w in range(cfg["writes"]):
                    started = time.perf_counter()
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("INSERT OR REPLACE INTO records VALUES (?, ?)", (f"k{w % 3}", pad))
                    conn.execute("COMMIT")
                    lat[d["name"]].append(time.perf_counter() - started)
                conn.close()
    result = {}
    for name, values in lat.items():
        ordered = sorted(values)
        result[name] = {
            "writes": len(ordered),
            "p50_ms": _rank(ordered, 50) * 1000,
            "p99_ms": _rank(ordered, 99) * 1000,
        }
    return result


def load_main(mode: str, config_json: str) -> int:
    cfg = json.loads(config_json)
    modes = {"compare": _compare, "timeline": _timeline, "sqlite": _sqlite}
    print(json.dumps(modes[mode](cfg)))
    return 0


# --- on this machine ------------------------------------------------------------------------


def run(cmd: Sequence[str], *, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:6])} ... failed:\n{result.stderr.strip()}")
    return result.stdout


def in_host(container: str, *cmd: str, check: bool = True, stdin: str | None = None) -> str:
    flags = ["-i"] if stdin is not None else []
    return run(["docker", "exec", *flags, container, *cmd], check=check, stdin=stdin)


def run_loader(container: str, mode: str, cfg: dict[str, Any]) -> dict[str, Any]:
    source = Path(__file__).read_text()
    out = in_host(container, "python3", "-", "_load", mode, json.dumps(cfg), stdin=source)
    return dict(json.loads(out.strip().splitlines()[-1]))


class Lab:
    def __init__(self, inventory_dir: str) -> None:
        self.inventory_dir = inventory_dir
        password_file = os.environ.get(
            "ANSIBLE_VAULT_PASSWORD_FILE", str(REPO / inventory_dir / ".vault-pass")
        )
        self.env = {**os.environ, "ANSIBLE_VAULT_PASSWORD_FILE": password_file}
        out = subprocess.run(
            [str(REPO / ".venv/bin/ansible-inventory"), "-i", inventory_dir, "--list"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
            env=self.env,
        )
        self.inventory = json.loads(out.stdout)
        self.hostvars = self.inventory["_meta"]["hostvars"]

    def hosts(self, group: str) -> list[str]:
        return list(self.inventory.get(group, {}).get("hosts", []))

    def container(self, host: str) -> str:
        # `ansible-inventory --list` leaves templates as they are ("lab-{{ inventory_hostname }}").
        value = str(self.hostvars[host]["ansible_host"])
        value = re.sub(r"\{\{\s*inventory_hostname\s*\}\}", host, value)
        if "{{" in value:
            raise SystemExit(f"bench: {host}: cannot render ansible_host {value!r}")
        return value

    def ip(self, host: str) -> str:
        return run(
            [
                "docker",
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                self.container(host),
            ]
        ).strip()

    def api_servers(self) -> list[tuple[str, int]]:
        return [
            (self.ip(host), int(port))
            for host in self.hosts("api")
            for port in self.hostvars[host]["apptive_api_ports"]
        ]

    def remove_users(self, prefix: str) -> None:
        host = self.container(self.hosts("api")[0])
        in_host(
            host,
            "sh",
            "-c",
            f"mountpoint -q {STORE_MOUNT} && find {STORE_MOUNT}/users -type f"
            f" -name '{prefix}*.sqlite3*' -delete",
            check=False,
        )


def _prefix() -> str:
    # Ids no real user has; a digit per target and 4 per user keep them within 20 digits.
    return f"9{random.randrange(10**8, 10**9)}"


def bench_proxy(lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    lb = lab.container(lab.hosts("lb")[0])
    servers = lab.api_servers()
    prefix = _prefix()
    cfg = {
        "users": args.users,
        "rounds": 3,
        "reads": 4,
        "concurrency": args.concurrency,
        "value_bytes": 200,
        "slices": 4,
        "prefix": prefix,
        "targets": [
            {"name": "haproxy", "servers": [["127.0.0.1", 80]]},
            # user -> container by the user id: one writer per user, as HAProxy's stickiness.
            {"name": "direct", "servers": [list(s) for s in servers]},
        ],
    }
    log(f"proxy: {args.users} users per path, {args.concurrency} concurrent, inside {lb}")
    try:
        return run_loader(lb, "compare", cfg)
    finally:
        lab.remove_users(prefix)


def _bench_store_output(lab: Lab, args: argparse.Namespace) -> str | None:
    """bench_store.py's report when it exists and drives this lab's first API host."""
    script = Path(args.bench_store)
    if not script.exists():
        return None
    match = re.search(r'^LAB_HOST = "([^"]+)"', script.read_text(), re.MULTILINE)
    if not match or match.group(1) != lab.container(lab.hosts("api")[0]):
        where = match.group(1) if match else "another host"
        log(f"store: bench_store.py drives {where}, not this lab: measuring here")
        return None
    log("store: scripts/bench_store.py lab --targets gluster,local")
    cmd = [sys.executable, str(script), "lab", "--targets", "gluster,local"]
    return run([*cmd, "--users", str(args.store_users)])


def _parse_bench_store(text: str) -> dict[str, Any] | None:
    rows = dict(
        (m.group(1), (float(m.group(2)), float(m.group(3))))
        for m in re.finditer(r"^\| write (p50|p99) \| ([\d.]+) \| ([\d.]+) \|", text, re.MULTILINE)
    )
    if set(rows) != {"p50", "p99"}:
        return None
    return {
        "gluster": {"p50_ms": rows["p50"][0], "p99_ms": rows["p99"][0]},
        "local": {"p50_ms": rows["p50"][1], "p99_ms": rows["p99"][1]},
        "source": "scripts/bench_store.py (through the API)",
    }


def bench_store(lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    text = _bench_store_output(lab, args)
    if text is not None:
        parsed = _parse_bench_store(text)
        if parsed:
            return parsed
        log("store: could not read bench_store.py's table: measuring here")
    host = lab.container(lab.hosts("api")[0])
    tag = f"apptive-bench-{random.randrange(10**6, 10**7)}"
    dirs = [
        {"name": "gluster", "path": f"{STORE_MOUNT}/.{tag}"},
        {"name": "local", "path": f"/var/tmp/{tag}"},
    ]
    in_host(host, "mountpoint", "-q", STORE_MOUNT)
    in_host(host, "mkdir", "-p", *(d["path"] for d in dirs))
    cfg = {"users": args.store_users, "writes": 6, "value_bytes": 200, "slices": 4, "dirs": dirs}
    log(f"store: {args.store_users} user databases x 6 writes per directory, inside {host}")
    try:
        result = run_loader(host, "sqlite", cfg)
    finally:
        in_host(host, "rm", "-rf", *(d["path"] for d in dirs), check=False)
    result["source"] = "SQLite as the app configures it, inside the API host"
    return result


def _haproxy_down_at(lb: str, server: str, since: float, timeout: float) -> float | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = in_host(
            lb, "sh", "-c", "echo 'show stat' | socat stdio /run/haproxy/admin.sock", check=False
        )
        for line in out.splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[1] == server and fields[17].startswith("DOWN"):
                return time.time() - since
        time.sleep(0.3)
    return None


def bench_failover(lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    lb = lab.container(lab.hosts("lb")[0])
    api_host = lab.hosts("api")[0]
    victim = "apptive-api-1"
    prefix = _prefix()
    cfg = {
        "host": "127.0.0.1",
        "port": 80,
        "duration": args.failover_seconds,
        "concurrency": 6,
        "users_per_worker": 8,
        "think": 0.02,
        "prefix": prefix,
    }
    result: dict[str, Any] = {}
    out: dict[str, Any] = {}
    loader = threading.Thread(target=lambda: out.update(run_loader(lb, "timeline", cfg)))
    loader.start()
    time.sleep(8)  # every user has its container before the kill
    killed_at = time.time()
    log(f"failover: docker kill {victim} on {api_host}")
    try:
        in_host(lab.container(api_host), "docker", "kill", victim)
        result["haproxy_down_s"] = _haproxy_down_at(lb, f"{api_host}-{victim}", killed_at, 20)
        loader.join()
    finally:
        # `docker kill` is a manual stop for Docker: the restart policy leaves it down.
        in_host(lab.container(api_host), "docker", "start", victim, check=False)
        lab.remove_users(prefix)
    records = out.get("records", [])
    # In flight at the kill or sent after it.
    after = [r for r in records if r[1] >= killed_at]
    failed = [r for r in after if not 200 <= r[2] < 300]
    result["requests"] = len(records)
    result["failed"] = len(failed)
    result["failed_by_status"] = dict(Counter(str(r[2] or "no answer") for r in failed))
    result["all_ok_after_s"] = max((r[1] - killed_at for r in failed), default=0.0)
    # What the kill costs in latency: the window right after it against the seconds before.
    window = [r[1] - r[0] for r in records if killed_at <= r[0] < killed_at + FAILOVER_WINDOW_S]
    before = [r[1] - r[0] for r in records if killed_at - 6 <= r[0] < killed_at]
    result["p99_before_ms"] = _rank(sorted(before), 99) * 1000
    result["p99_window_ms"] = _rank(sorted(window), 99) * 1000
    result["slowest_s"] = max((r[1] - r[0] for r in after), default=0.0)
    status = in_host(
        lab.container(api_host),
        "docker",
        "inspect",
        "-f",
        "{{.State.Status}} {{.RestartCount}}",
        victim,
        check=False,
    )
    result["container_after"] = status.strip()
    return result


def _playbook_seconds(log_text: str) -> float | None:
    """Total time from profile_tasks' last line: "... (0:00:01.234)   0:12:34.567 ****"."""
    stamps = re.findall(r"\)\s+(\d+):(\d\d):(\d\d(?:\.\d+)?)\s+\*+\s*$", log_text, re.MULTILINE)
    if not stamps:
        return None
    h, m, s = stamps[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def bench_converge(lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    default_log = REPO / ".cache" / f"{Path(lab.inventory_dir).name}-up.log"
    first_log = Path(args.first_converge_log or default_log)
    if first_log.exists():
        text = first_log.read_text(errors="replace")
        # `scripts/lab.sh up` runs lab/up.yml first: only what follows site.yml's start counts.
        marker = text.rfind("converging with site.yml")
        result["first_s"] = _playbook_seconds(text[marker:] if marker >= 0 else text)
        result["first_log"] = str(first_log)
    if args.skip_rerun:
        return result
    log("converge: rerunning site.yml (idempotence), a few minutes")
    started = time.perf_counter()
    proc = subprocess.run(
        [str(REPO / ".venv/bin/ansible-playbook"), "-i", lab.inventory_dir, "site.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**lab.env, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
        check=False,
    )
    result["rerun_s"] = time.perf_counter() - started
    rerun_log = REPO / ".cache" / "bench-converge-rerun.log"
    rerun_log.parent.mkdir(exist_ok=True)
    rerun_log.write_text(proc.stdout + proc.stderr)
    result["rerun_log"] = str(rerun_log)
    recap = proc.stdout[proc.stdout.rfind("PLAY RECAP") :]
    result["rerun_changed"] = sum(int(n) for n in re.findall(r"changed=(\d+)", recap))
    result["rerun_failed"] = sum(int(n) for n in re.findall(r"failed=(\d+)", recap))
    result["rerun_rc"] = proc.returncode
    return result


def _lb_ports(lab: Lab) -> set[int]:
    """Ports this machine reaches the lab's LBs' frontends (80) on, from lab_published_ports."""
    ports = set()
    for host in lab.hosts("lb"):
        for spec in lab.hostvars[host].get("lab_published_ports", []):
            parts = str(spec).split(":")
            if len(parts) >= 2 and parts[-1] == "80":
                ports.add(int(parts[-2]))
    return ports


def bench_rollout(lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    script = Path(args.bench_rollout)
    if not script.exists():
        return {"text": "n/a (see docs/rollout.md)"}
    # It sends its load to fixed LB ports: run it only when they are this lab's.
    its_ports = {int(p) for p in re.findall(r'"127\.0\.0\.1",\s*(\d+)\)', script.read_text())}
    ours = _lb_ports(lab)
    if its_ports != ours:
        log(f"rollout: {script.name} loads ports {sorted(its_ports)}, this lab {sorted(ours)}")
        return {"text": f"n/a ({script.name} drives another lab; see docs/rollout.md)"}
    log(f"rollout: {script.name} (rolling upgrades under load, several minutes)")
    proc = subprocess.run(
        [sys.executable, str(script), "--inventory", lab.inventory_dir, *args.rollout_args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=lab.env,
        check=False,
    )
    match = re.search(r"(\d+) requests sent, (\d+) failed", proc.stdout)
    if not match:
        return {
            "text": f"see {script.name}'s output (exit {proc.returncode})",
            "output": proc.stdout,
        }
    return {
        "text": f"{match.group(2)} of {match.group(1)} (exit {proc.returncode})",
        "output": proc.stdout,
    }


def _f(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(a: Any, b: Any) -> str:
    return "n/a" if not a or not b else f"{a / b:.2f}x"


def report(results: dict[str, Any]) -> str:
    lines = [
        "| measure | measured | baseline | ratio |",
        "|---|---:|---:|---:|",
    ]
    if "proxy" in results:
        hp, direct = results["proxy"]["haproxy"], results["proxy"]["direct"]
        for label, key, digits in (
            ("throughput, req/s: HAProxy sticky vs direct", "ops_per_s", 0),
            ("latency p50, ms: HAProxy sticky vs direct", "p50_ms", 1),
            ("latency p99, ms: HAProxy sticky vs direct", "p99_ms", 1),
        ):
            lines.append(
                f"| {label} | {_f(hp[key], digits)} | {_f(direct[key], digits)} |"
                f" {_ratio(hp[key], direct[key])} |"
            )
    if "store" in results:
        g, loc = results["store"]["gluster"], results["store"]["local"]
        for pct in ("p50", "p99"):
            lines.append(
                f"| user DB write {pct}, ms: Gluster vs local dir | {_f(g[f'{pct}_ms'], 2)} |"
                f" {_f(loc[f'{pct}_ms'], 2)} | {_ratio(g[f'{pct}_ms'], loc[f'{pct}_ms'])} |"
            )
    if "converge" in results:
        c = results["converge"]
        rerun = c.get("rerun_s")
        changed = c.get("rerun_changed")
        label = "site.yml, s: idempotent rerun vs first converge"
        lines.append(
            f"| {label} (rerun changed={_f(changed, 0)}) | {_f(rerun, 0)} |"
            f" {_f(c.get('first_s'), 0)} | {_ratio(rerun, c.get('first_s'))} |"
        )
    if "rollout" in results:
        lines.append(f"| rollout: failed requests | {results['rollout']['text']} | | |")
    if "failover" in results:
        f = results["failover"]
        lines.append(
            f"| failover: container kill -> all requests succeed, s | {_f(f['all_ok_after_s'])}"
            f" ({f['failed']} of {f['requests']} failed) | | |"
        )
        lines.append(
            f"| failover: kill -> HAProxy marks it DOWN, s | {_f(f['haproxy_down_s'])} | | |"
        )
        lines.append(
            f"| failover: latency p99, ms: {FAILOVER_WINDOW_S} s after the kill vs the 6 s before"
            f" | {_f(f['p99_window_ms'], 0)} | {_f(f['p99_before_ms'], 0)} |"
            f" {_ratio(f['p99_window_ms'], f['p99_before_ms'])} |"
        )
    notes = []
    if "proxy" in results:
        errors = {k: v["errors"] for k, v in results["proxy"].items() if v["errors"]}
        notes.append(f"proxy: non-2xx answers {errors or 'none'}")
    if "store" in results:
        notes.append(f"store: {results['store']['source']}")
    if "converge" in results:
        c = results["converge"]
        if "first_log" not in c:
            notes.append("converge: no log of the first converge (--first-converge-log)")
        if c.get("rerun_rc"):
            notes.append(f"converge: the rerun FAILED (exit {c['rerun_rc']}), see {c['rerun_log']}")
    if "failover" in results:
        notes.append(f"failover: container afterwards {results['failover']['container_after']}")
    return "\n".join([*lines, "", *notes])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default="proxy,store,failover,converge,rollout",
        type=lambda s: [x for x in s.split(",") if x],
        help="sections to run, comma-separated",
    )
    parser.add_argument("--users", type=int, default=40, help="proxy: users per path")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--store-users", type=int, default=40)
    parser.add_argument("--failover-seconds", type=float, default=40)
    parser.add_argument(
        "--first-converge-log",
        help="output of the lab's first `scripts/lab.sh up` (default .cache/<inventory>-up.log)",
    )
    parser.add_argument("--skip-rerun", action="store_true", help="converge: no rerun now")
    parser.add_argument("--rollout-args", nargs="*", default=[])
    parser.add_argument("--bench-store", default=str(REPO / "scripts" / "bench_store.py"))
    parser.add_argument("--bench-rollout", default=str(REPO / "scripts" / "bench_rollout.py"))
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args(argv)

    lab = Lab(os.environ.get("LAB_INVENTORY", "inventory/lab"))
    sections = {
        "proxy": bench_proxy,
        "store": bench_store,
        "failover": bench_failover,
        "converge": bench_converge,
        "rollout": bench_rollout,
    }
    results: dict[str, Any] = {}
    for name in args.only:
        started = time.perf_counter()
        results[name] = sections[name](lab, args)
        log(f"{name}: {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_load":
        sys.exit(load_main(sys.argv[2], sys.argv[3]))
    sys.exit(main(sys.argv[1:]))

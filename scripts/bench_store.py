#!/usr/bin/env python3
"""Store benchmark: the API on GlusterFS vs a local directory, and the owner cache's memory.

    .venv/bin/python scripts/bench_store.py [lab] [--version 1.1.0] [--users 200] ...
    .venv/bin/python scripts/bench_store.py memory [--version 1.1.0] [--users 256]

lab (default; needs `make lab`): starts two extra API containers on lab-apptive1's nested
dockerd, one on a LOCAL directory (127.0.0.1:3690 inside the host) and one on the GlusterFS
mount (127.0.0.1:3691), same image and settings, then drives the same load from INSIDE
lab-apptive1 against (a) the Gluster one, (b) the local one, (c) lb1 (the deployed containers
behind HAProxy), taking turns in slices of users, and prints p50/p99 side by side with the
Gluster/local ratios. The extra
containers, the local directory and the benchmark's user databases are removed afterwards.
`--volume-group metadata-cache` sets that option group on the volume for the run and restores
every option it touched afterwards.

memory: runs one container of the image on this machine's engine (loopback only, a temporary
local data directory), fills the owner cache with --users users of a few records each, and
reports the container's memory (VmRSS of the app, PID 1, and `docker stats`) before and after,
with the cache on and off, and with users whose databases fill the per-connection page cache.

safety: tests/store_safety's two-owner scenario on the GlusterFS mount, with one extra 1.1.0+
container on lab-apptive1 and one on lab-apptive2 (published on their internal addresses,
port 3692), one user's writes alternating between them; then the database is checked on the
volume (integrity_check, every acknowledged write present) and removed.

Stdlib only: the load generators (`_load`, `_safety`) run inside the lab host as
`python3 - _load CONFIG`, fed this very file on stdin, so nothing is installed there.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.client
import json
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# .parent twice, not parents[1]: piped into the lab host, __file__ is "<stdin>".
REPO = Path(__file__).resolve().parent.parent
LAB_HOST = "lab-apptive1"
LAB_READY = REPO / ".cache" / "lab-ready"
GLUSTER_MOUNT = "/mnt/apptive_store"
GLUSTER_VOLUME = "apptive"
LOCAL_DIR = "/var/lib/apptive-bench-local"
SENTINEL = ".apptive-store"
APP_UID = 10001
LOCAL_NAME, LOCAL_PORT = "apptive-bench-local", 3690
GLUSTER_NAME, GLUSTER_PORT = "apptive-bench-gluster", 3691
MEMORY_NAME = "apptive-bench-memory"
# The role's hardening, so the extra containers are the deployed ones in all but their volume.
HARDENING = [
    "--read-only",
    "--tmpfs",
    "/tmp:rw,noexec,nosuid,size=16m",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--memory",
    "256m",
    "--pids-limit",
    "128",
    "--user",
    f"{APP_UID}:{APP_UID}",
]


def log(message: str) -> None:
    print(f"bench-store: {message}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str], *, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"bench-store: {' '.join(cmd[:6])} ... failed:\n{result.stderr.strip()}")
    return result.stdout


def in_host(*cmd: str, check: bool = True, stdin: str | None = None, host: str = LAB_HOST) -> str:
    """A command inside a lab host container (its own dockerd, its own loopback)."""
    flags = ["-i"] if stdin is not None else []
    return run(["docker", "exec", *flags, host, *cmd], check=check, stdin=stdin)


def succeeds(*cmd: str, host: str = LAB_HOST) -> bool:
    result = subprocess.run(["docker", "exec", host, *cmd], capture_output=True, check=False)
    return result.returncode == 0


# --- the load generator (runs inside the lab host; stdlib only) -----------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        # Nearest rank: an observed value, never an interpolation between two.
        return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]

    return {
        "n": len(ordered),
        "p50": rank(50) * 1000,
        "p90": rank(90) * 1000,
        "p99": rank(99) * 1000,
        "max": ordered[-1] * 1000,
    }


class _Client:
    """One keep-alive connection per worker, reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, float]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                response.read()
                return response.status, time.perf_counter() - started
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt == 2:
                    return 0, time.perf_counter() - started
        raise AssertionError("unreachable")


def _wait_healthy(host: str, port: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=3) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{host}:{port} not healthy after {timeout_s} s")
        time.sleep(0.5)


def _drive(
    target: dict[str, Any], cfg: dict[str, Any], numbers: range, totals: dict[str, Any]
) -> None:
    """Per user: a write that creates the database, then `rounds` x (a write, `reads` reads).
    Samples and errors are added to `totals`, so several slices of users make one result."""
    users: queue.Queue[str] = queue.Queue()
    for i in numbers:
        users.put(f"{target['user_prefix']}{i:04d}")
    pad = "x" * cfg["value_bytes"]
    samples: dict[str, list[float]] = totals["samples"]
    errors: dict[str, int] = totals["errors"]
    lock = threading.Lock()

    def worker() -> None:
        client = _Client(target["host"], target["port"])
        mine: dict[str, list[float]] = {"create": [], "write": [], "read": []}
        bad: dict[str, int] = {}
        while True:
            try:
                user = users.get_nowait()
            except queue.Empty:
                break
            base = f"/api/users/{user}/records"
            ops: list[tuple[str, str, str, bytes | None]] = [
                ("create", "PUT", f"{base}/k0", json.dumps({"n": 0, "pad": pad}).encode())
            ]
            for r in range(1, cfg["rounds"] + 1):
                value = json.dumps({"n": r, "pad": pad}).encode()
                ops.append(("write", "PUT", f"{base}/k{r}", value))
                ops += [("read", "GET", f"{base}/k{r}", None)] * cfg["reads"]
            for kind, method, path, body in ops:
                status, seconds = client.request(method, path, body)
                if 200 <= status < 300:
                    mine[kind].append(seconds)
                else:
                    bad[f"{kind} {status}"] = bad.get(f"{kind} {status}", 0) + 1
        with lock:
            for kind, values in mine.items():
                samples[kind] += values
            for key, count in bad.items():
                errors[key] = errors.get(key, 0) + count

    # Warm-up: the server's thread pool and the client's connections, not measured.
    warm = _Client(target["host"], target["port"])
    for _ in range(5):
        warm.request("GET", "/api/users/1/records/warmup")
    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(cfg["concurrency"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    totals["wall_s"] += time.perf_counter() - started


def load_main(config_json: str) -> int:
    cfg = json.loads(config_json)
    targets = cfg["targets"]
    for target in targets:
        _wait_healthy(target["host"], target["port"])
    totals: dict[str, dict[str, Any]] = {
        t["name"]: {"samples": {"create": [], "write": [], "read": []}, "errors": {}, "wall_s": 0.0}
        for t in targets
    }
    # The targets take turns, a slice of users each: the machine's load (shared, and it
    # drifts) then weighs on every target alike instead of on whichever ran at a bad moment.
    slices = max(1, min(cfg["slices"], cfg["users"]))
    bounds = [cfg["users"] * n // slices for n in range(slices + 1)]
    for n in range(slices):
        for target in targets:
            _drive(target, cfg, range(bounds[n], bounds[n + 1]), totals[target["name"]])
    results = {}
    for name, total in totals.items():
        result: dict[str, Any] = {k: percentiles(v) for k, v in total["samples"].items()}
        count = sum(len(v) for v in total["samples"].values())
        result["errors"] = total["errors"]
        result["wall_s"] = total["wall_s"]
        result["ops_per_s"] = count / total["wall_s"] if total["wall_s"] else 0
        results[name] = result
    print(json.dumps(results))
    return 0


# --- two owners on GlusterFS (the load side of `safety`; runs inside the lab host) -----------


class _Owners:
    """Mirrors tests/store_safety: every answer is 2xx or 503 store_busy with Retry-After."""

    def __init__(self, apis: list[dict[str, Any]], user: str) -> None:
        self.apis, self.user = apis, user
        self.lock = threading.Lock()
        self.acked: dict[str, int] = {}
        self.acked_by: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.bad: list[str] = []
        self.rejected: list[str] = []
        self.refused: list[str] = []  # every key a PUT of which was not acknowledged

    def call(self, api: dict[str, Any], method: str, key: str, value: int | None = None) -> Any:
        url = f"http://{api['host']}:{api['port']}/api/users/{self.user}/records/{key}"
        data = None if value is None else json.dumps({"n": value}).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, body, retry = response.status, response.read(), None
        except urllib.error.HTTPError as exc:
            status, body, retry = exc.code, exc.read(), exc.headers.get("Retry-After")
        with self.lock:
            name = f"{api['name']} {method} {status}"
            self.statuses[name] = self.statuses.get(name, 0) + 1
            if not 200 <= status < 300:
                error = json.loads(body or b"{}").get("error") if status == 503 else None
                if status != 503 or retry is None or error != "store_busy":
                    self.bad.append(f"{name}: {body[:200]!r}")
        return status, (json.loads(body) if 200 <= status < 300 and body else None)

    def put(self, api: dict[str, Any], key: str, value: int) -> bool:
        status, _ = self.call(api, "PUT", key, value)
        if 200 <= status < 300:
            with self.lock:
                self.acked[key] = value
                self.acked_by[api["name"]] = self.acked_by.get(api["name"], 0) + 1
            return True
        with self.lock:
            self.refused.append(key)
        return False


def safety_main(config_json: str) -> int:
    cfg = json.loads(config_json)
    apis = cfg["apis"]
    for api in apis:
        _wait_healthy(api["host"], api["port"])
    owners = _Owners(apis, cfg["user"])
    jobs: queue.Queue[int] = queue.Queue()
    for i in range(cfg["writes"]):
        jobs.put(i)

    def writer() -> None:
        while True:
            try:
                i = jobs.get_nowait()
            except queue.Empty:
                return
            owners.put(apis[i % 2], f"w{i:03d}", i)

    threads = [threading.Thread(target=writer) for _ in range(cfg["concurrency"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    handovers, stale = 0, []
    for i in range(cfg["cross_reads"]):
        if not owners.put(apis[i % 2], "latest", 1000 + i):
            continue
        status, body = owners.call(apis[(i + 1) % 2], "GET", "latest")
        if status == 200:
            handovers += 1
            if body != {"n": 1000 + i}:
                stale.append(body)

    # Contention: apis[0] serves the user without a pause while apis[1] gets writes.
    owners.put(apis[0], "held", 1)
    stop = threading.Event()

    def keep_reading() -> None:
        while not stop.is_set():
            status, body = owners.call(apis[0], "GET", "held")
            if status == 200 and body != {"n": 1}:
                stale.append(body)

    reader = threading.Thread(target=keep_reading)
    reader.start()
    for i in range(3):
        if not owners.put(apis[1], f"contended{i}", i):
            owners.rejected.append(f"contended{i}")
    stop.set()
    reader.join()

    lost = []
    for n, (key, value) in enumerate(sorted(owners.acked.items())):
        deadline = time.monotonic() + 60
        while True:
            status, body = owners.call(apis[n % 2], "GET", key)
            if status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if body != {"n": value}:
            lost.append(f"{key}: {status} {body}")
    print(
        json.dumps(
            {
                "acked": owners.acked,
                "acked_by": owners.acked_by,
                "statuses": owners.statuses,
                "bad": owners.bad,
                "rejected": owners.rejected,
                "refused": sorted(set(owners.refused) - set(owners.acked)),
                "handovers": handovers,
                "stale": stale,
                "lost": lost,
            }
        )
    )
    return 0


# --- the lab benchmark (runs on this machine, drives the lab through docker exec) ------------


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int
    label: str


def deployed_version() -> str:
    image = in_host("docker", "ps", "--filter", "name=^apptive-api-1$", "--format", "{{.Image}}")
    image = image.strip().splitlines()[0] if image.strip() else ""
    if ":" not in image:
        raise SystemExit(f"bench-store: no apptive-api-1 running in {LAB_HOST}; pass --version")
    return image.rsplit(":", 1)[1]


def ensure_image(version: str, host: str = LAB_HOST) -> str:
    """The image in the host's dockerd: loaded from dist/ when it is not there yet."""
    tag = f"apptive-api:{version}"
    if succeeds("docker", "image", "inspect", tag, host=host):
        return tag
    archive = REPO / "dist" / f"apptive-api-{version}.tar"
    if not archive.is_file():
        raise SystemExit(f"bench-store: {tag} not in {host} and no {archive} to load")
    log(f"loading {archive.name} into {host}")
    # Streamed on stdin: a `docker cp` to /tmp would land under the host's systemd tmpfs.
    with archive.open("rb") as stream:
        result = subprocess.run(
            ["docker", "exec", "-i", host, "docker", "load"],
            stdin=stream,
            capture_output=True,
            check=False,
        )
    if result.returncode != 0:
        raise SystemExit(f"bench-store: docker load in {host} failed: {result.stderr.decode()}")
    return tag


def start_extra(
    name: str,
    publish: str,
    data_dir: str,
    image: str,
    env: list[str],
    host: str = LAB_HOST,
) -> None:
    """One more API container on a lab host, hardened like the deployed ones."""
    in_host("docker", "rm", "-f", name, check=False, host=host)
    env_flags = [flag for item in env for flag in ("-e", item)]
    in_host(
        "docker",
        "run",
        "-d",
        "--name",
        name,
        *HARDENING,
        "-e",
        f"APPTIVE_INSTANCE={host}/{name}",
        *env_flags,
        "-p",
        f"{publish}:3600",
        "-v",
        f"{data_dir}:/data/apptive",
        image,
        host=host,
    )


@contextmanager
def volume_group(group: str | None) -> Iterator[None]:
    """Set an option group on the volume; afterwards restore every option it changed."""
    if not group:
        yield
        return
    before = reconfigured_options()
    log(f"gluster volume set {GLUSTER_VOLUME} group {group}")
    in_host("gluster", "volume", "set", GLUSTER_VOLUME, "group", group)
    after = reconfigured_options()
    log("options now: " + ", ".join(f"{k}={v}" for k, v in sorted(after.items())))
    try:
        time.sleep(3)  # clients pick up the new graph
        yield
    finally:
        for option, value in after.items():
            if option not in before:
                in_host("gluster", "volume", "reset", GLUSTER_VOLUME, option, check=False)
            elif before[option] != value:
                in_host("gluster", "volume", "set", GLUSTER_VOLUME, option, before[option])
        restored = reconfigured_options()
        if restored != before:
            log(f"WARNING: volume options differ from before: {restored} vs {before}")
        else:
            log("volume options restored")


def reconfigured_options() -> dict[str, str]:
    xml = in_host("gluster", "volume", "info", GLUSTER_VOLUME, "--xml")
    pairs = re.findall(r"<option>\s*<name>([^<]+)</name>\s*<value>([^<]*)</value>", xml)
    return dict(pairs)


def lab_bench(args: argparse.Namespace) -> int:
    running = run(["docker", "inspect", "-f", "{{.State.Running}}", LAB_HOST], check=False)
    if running.strip() != "true":
        raise SystemExit(f"bench-store: {LAB_HOST} is not running: make lab first")
    if not LAB_READY.exists():
        log(f"WARNING: {LAB_READY} is missing: the lab may not be converged")
    version = args.version or deployed_version()
    image = ensure_image(version)
    env = [
        f"APPTIVE_STORE_CACHE_SIZE={args.cache_size}",
        f"APPTIVE_STORE_IDLE_TIMEOUT={args.idle_timeout}",
        f"APPTIVE_BUSY_TIMEOUT_MS={args.busy_timeout_ms}",
        *args.env,
    ]
    fstype = in_host("stat", "-f", "-c", "%T", GLUSTER_MOUNT).strip()
    log(f"image {image}; {GLUSTER_MOUNT} is {fstype}; settings {' '.join(env)}")
    # Unique users per run and per target: every target starts from no database at all.
    run_prefix = f"9{random.randrange(10**7, 10**8)}"
    targets = [
        Target("gluster", "127.0.0.1", GLUSTER_PORT, f"{GLUSTER_NAME} (Gluster, direct)"),
        Target("local", "127.0.0.1", LOCAL_PORT, f"{LOCAL_NAME} (local dir, direct)"),
        Target("lb1", "lb1", 80, "lb1 -> deployed containers (Gluster)"),
    ]
    targets = [t for t in targets if t.name in args.targets]
    prefixes = {t.name: f"{run_prefix}{n}" for n, t in enumerate(targets)}
    cleanup_dirs = [LOCAL_DIR]
    try:
        in_host(
            "sh",
            "-ec",
            f"rm -rf {LOCAL_DIR}; mkdir -p {LOCAL_DIR}; touch {LOCAL_DIR}/{SENTINEL};"
            f" chown -R {APP_UID}:{APP_UID} {LOCAL_DIR}; chmod 0750 {LOCAL_DIR}",
        )
        start_extra(LOCAL_NAME, f"127.0.0.1:{LOCAL_PORT}", LOCAL_DIR, image, env)
        start_extra(GLUSTER_NAME, f"127.0.0.1:{GLUSTER_PORT}", GLUSTER_MOUNT, image, env)
        cfg = {
            "users": args.users,
            "rounds": args.rounds,
            "reads": args.reads,
            "concurrency": args.concurrency,
            "value_bytes": args.value_bytes,
            "slices": args.slices,
            "targets": [
                {"name": t.name, "host": t.host, "port": t.port, "user_prefix": prefixes[t.name]}
                for t in targets
            ],
        }
        with volume_group(args.volume_group):
            log(
                f"{args.users} users x (1 create + {args.rounds} x (1 write + {args.reads} reads)),"
                f" {args.concurrency} concurrent, from inside {LAB_HOST}"
            )
            out = in_host(
                "python3", "-", "_load", json.dumps(cfg), stdin=Path(__file__).read_text()
            )
        results = json.loads(out.strip().splitlines()[-1])
    finally:
        if not args.keep:
            for name in (LOCAL_NAME, GLUSTER_NAME):
                in_host("docker", "rm", "-f", name, check=False)
            in_host("rm", "-rf", *cleanup_dirs, check=False)
            remove_bench_users(list(prefixes.values()))
    print(report(results, targets, version, args))
    return 0


def remove_bench_users(prefixes: list[str]) -> None:
    """The benchmark's own databases on the shared volume (ids no real user has)."""
    if not prefixes:
        return
    patterns = " -o ".join(f"-name '{p}[0-9][0-9][0-9][0-9].sqlite3*'" for p in prefixes)
    in_host(
        "sh", "-c", f"find {GLUSTER_MOUNT}/users -type f \\( {patterns} \\) -delete", check=False
    )


def report(
    results: dict[str, Any], targets: list[Target], version: str, args: argparse.Namespace
) -> str:
    names = [t.name for t in targets]
    both = {"gluster", "local"} <= set(names)
    lines = [
        f"apptive-api {version}: {args.users} users, {args.concurrency} concurrent, "
        f"per user 1 create + {args.rounds} x (1 write + {args.reads} reads), "
        f"{args.value_bytes} B values, targets interleaved in {args.slices} slices"
        + (f", volume group {args.volume_group}" if args.volume_group else ""),
        "",
        "| ms | "
        + " | ".join(names)
        + (" | gluster/local |" if {"gluster", "local"} <= set(names) else " |"),
        "|---|" + "---:|" * (len(names) + ({"gluster", "local"} <= set(names))),
    ]
    for kind in ("read", "write", "create"):
        for pct in ("p50", "p99"):
            cells = [f"{results[n][kind].get(pct, float('nan')):.2f}" for n in names]
            row = f"| {kind} {pct} | " + " | ".join(cells) + " |"
            if both:
                local = results["local"][kind].get(pct, 0)
                ratio = results["gluster"][kind].get(pct, 0) / local if local else float("nan")
                row += f" {ratio:.1f}x |"
            lines.append(row)
    lines.append(
        "| ops/s | "
        + " | ".join(f"{results[n]['ops_per_s']:.0f}" for n in names)
        + (" | |" if both else " |")
    )
    errors = {n: results[n]["errors"] for n in names if results[n]["errors"]}
    lines.append("")
    lines.append(f"non-2xx answers: {errors or 'none'}")
    return "\n".join(lines)


# --- memory of the owner cache (this machine's engine, loopback only) -----------------------


def _http(port: int, method: str, path: str, body: bytes | None = None) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _parallel(jobs: Sequence[Callable[[], int]], workers: int = 8) -> dict[int, int]:
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    pending: queue.Queue[Callable[[], int]] = queue.Queue()
    for job in jobs:
        pending.put(job)

    def work() -> None:
        while True:
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            status = job()
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def _fill(port: int, first: int, users: int, records: int, value_bytes: int) -> dict[int, int]:
    pad = "x" * value_bytes
    paths = [
        f"/api/users/{u}/records/k{r}" for u in range(first, first + users) for r in range(records)
    ]
    jobs = [
        functools.partial(_http, port, "PUT", path, json.dumps({"n": n, "pad": pad}).encode())
        for n, path in enumerate(paths)
    ]
    statuses = _parallel(jobs)
    # Read everything back once: the pages land in each connection's page cache.
    reads = [functools.partial(_http, port, "GET", path) for path in paths]
    for status, count in _parallel(reads).items():
        statuses[status] = statuses.get(status, 0) + count
    return statuses


def _memory(name: str, port: int) -> dict[str, Any]:
    status = run(["docker", "exec", name, "cat", "/proc/1/status"])
    fields = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
    stats = run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", name]).strip()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    open_conns = re.search(r"^apptive_store_cache_open_connections (\S+)$", text, re.MULTILINE)
    fds = run(["docker", "exec", name, "ls", "/proc/1/fd"]).split()
    return {
        "rss_mib": int(fields.get("VmRSS", 0)) / 1024,
        "hwm_mib": int(fields.get("VmHWM", 0)) / 1024,
        "docker_stats": stats.split(" / ")[0],
        "open_connections": float(open_conns.group(1)) if open_conns else 0.0,
        "fds": len(fds),
    }


def memory_bench(args: argparse.Namespace) -> int:
    image = f"apptive-api:{args.version or _pyproject_version()}"
    if args.users is None:
        args.users = args.cache_size  # fill the cache exactly to its bound, then evict
    large = (4, 96 * 1024)  # ~400 KiB per database: more than a connection's page cache
    profiles = [
        ("cache on, small users", args.cache_size, args.records, args.value_bytes),
        ("cache off, small users", 0, args.records, args.value_bytes),
        ("cache on, large users", args.cache_size, *large),
        ("cache off, large users", 0, *large),
    ]
    rows = []
    for label, cache_size, records, value_bytes in profiles:
        rows.append((label, _memory_profile(image, cache_size, records, value_bytes, args)))
    lines = [
        f"{image}: fill --users {args.users} (cache size {args.cache_size}), "
        f"then as many again (evictions); memory of the app process (VmRSS, PID 1)",
        "",
        "| profile | records/user | idle after start | after N users | after 2N users "
        "| per user (N) | open conns | fds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, m in rows:
        per_user = (m["n"]["rss_mib"] - m["start"]["rss_mib"]) * 1024 / args.users
        lines.append(
            f"| {label} | {m['records']} x {m['value_bytes']} B | {m['start']['rss_mib']:.1f} MiB"
            f" | {m['n']['rss_mib']:.1f} MiB | {m['2n']['rss_mib']:.1f} MiB | {per_user:.0f} KiB"
            f" | {m['2n']['open_connections']:.0f} | {m['2n']['fds']} |"
        )
    stats = "; ".join(f"{label}: {m['2n']['docker_stats']}" for label, m in rows)
    lines += ["", f"docker stats after 2N users: {stats}"]
    print("\n".join(lines))
    return 0


def _memory_profile(
    image: str, cache_size: int, records: int, value_bytes: int, args: argparse.Namespace
) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="apptive-bench-memory-"))
    (data / SENTINEL).touch()
    if os.geteuid() == 0:
        os.chown(data, APP_UID, APP_UID)
    else:
        data.chmod(0o777)
    run(["docker", "rm", "-f", MEMORY_NAME], check=False)
    try:
        run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                MEMORY_NAME,
                *HARDENING,
                "-e",
                f"APPTIVE_STORE_CACHE_SIZE={cache_size}",
                # Nothing may idle out while we measure.
                "-e",
                "APPTIVE_STORE_IDLE_TIMEOUT=300",
                "-e",
                "APPTIVE_BUSY_TIMEOUT_MS=302000",
                "-p",
                "127.0.0.1::3600",
                "-v",
                f"{data}:/data/apptive",
                image,
            ]
        )
        port = int(run(["docker", "port", MEMORY_NAME, "3600/tcp"]).strip().rsplit(":", 1)[1])
        _wait_healthy("127.0.0.1", port)
        _http(port, "GET", "/api/users/1/records/warmup")
        time.sleep(1)
        result: dict[str, Any] = {"records": records, "value_bytes": value_bytes}
        result["start"] = _memory(MEMORY_NAME, port)
        bad = {}
        for step, first in (("n", 10_000), ("2n", 10_000 + args.users)):
            statuses = _fill(port, first, args.users, records, value_bytes)
            bad.update({s: c for s, c in statuses.items() if not 200 <= s < 300})
            time.sleep(1)
            result[step] = _memory(MEMORY_NAME, port)
        if bad:
            log(f"WARNING: non-2xx answers while filling: {bad}")
        return result
    finally:
        run(["docker", "rm", "-f", MEMORY_NAME], check=False)
        shutil.rmtree(data, ignore_errors=True)


# --- two owners on GlusterFS, on two lab hosts (the driver side of `safety`) ----------------

SAFETY_NAME, SAFETY_PORT = "apptive-bench-safety", 3692
SAFETY_HOSTS = ("lab-apptive1", "lab-apptive2")


def _internal_ip(host: str) -> str:
    """The host's address on the lab network (`hostname -I` would list docker0's first)."""
    ip = in_host("hostname", "-i", host=host).split()[0]
    if ip.startswith(("127.", "172.17.")):
        raise SystemExit(f"bench-store: {host} resolves its own name to {ip}, not its lab address")
    return ip


def safety_bench(args: argparse.Namespace) -> int:
    """tests/store_safety's scenario on the Gluster mount, one owner on each of two hosts."""
    version = args.version or _pyproject_version()
    user = f"8{random.randrange(10**9, 10**10)}"
    digest = hashlib.sha256(user.encode()).hexdigest()
    db = f"{GLUSTER_MOUNT}/users/{digest[:2]}/{digest[2:4]}/{user}.sqlite3"
    env = ["APPTIVE_STORE_IDLE_TIMEOUT=1", "APPTIVE_BUSY_TIMEOUT_MS=3000"]
    apis = []
    try:
        for n, host in enumerate(SAFETY_HOSTS):
            image = ensure_image(version, host)
            ip = _internal_ip(host)
            start_extra(SAFETY_NAME, f"{ip}:{SAFETY_PORT}", GLUSTER_MOUNT, image, env, host)
            apis.append({"name": "ab"[n], "host": ip, "port": SAFETY_PORT})
        log(f"{image} on {', '.join(SAFETY_HOSTS)}, one user ({user}) written to both")
        cfg = {"apis": apis, "user": user, "writes": 200, "concurrency": 8, "cross_reads": 10}
        out = in_host("python3", "-", "_safety", json.dumps(cfg), stdin=Path(__file__).read_text())
        result = json.loads(out.strip().splitlines()[-1])
        for host in SAFETY_HOSTS:
            in_host("docker", "stop", "-t", "10", SAFETY_NAME, host=host)
        check = (
            "import json, sqlite3, sys\n"
            "c = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)\n"
            "print(json.dumps({'integrity': c.execute('PRAGMA integrity_check').fetchall(),"
            " 'rows': dict(c.execute('SELECT key, value FROM records').fetchall())}))\n"
        )
        on_disk = json.loads(in_host("python3", "-c", check, db))
    finally:
        for host in SAFETY_HOSTS:
            in_host("docker", "rm", "-f", SAFETY_NAME, check=False, host=host)
        in_host("sh", "-c", f"rm -f {db} {db}-journal", check=False)
    missing = [k for k, v in result["acked"].items() if on_disk["rows"].get(k) != f'{{"n":{v}}}']
    phantom = sorted(set(result["refused"]) & set(on_disk["rows"]))
    verdict = {
        "acknowledged": len(result["acked"]),
        "acked_by": result["acked_by"],
        "answers": dict(sorted(result["statuses"].items())),
        "unexpected answers": result["bad"],
        "handovers (cross reads answered 200)": result["handovers"],
        "stale reads": result["stale"],
        "lost (API read-back)": result["lost"],
        "refused under contention": result["rejected"],
        "integrity_check": on_disk["integrity"],
        "acked but not on disk": missing,
        "writes answered 503 (never acknowledged)": len(result["refused"]),
        "answered 503 but stored": phantom,
    }
    print(json.dumps(verdict, indent=2))
    passed = (
        not result["bad"]
        and not result["stale"]
        and not result["lost"]
        and not missing
        and not phantom
        and on_disk["integrity"] == [["ok"]]
    )
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


def _pyproject_version() -> str:
    import tomllib

    with open(REPO / "app" / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def main(argv: list[str]) -> int:
    if argv[:1] == ["_load"]:
        return load_main(argv[1])
    if argv[:1] == ["_safety"]:
        return safety_main(argv[1])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="lab", choices=["lab", "memory", "safety"])
    parser.add_argument("--version", help="image version (lab: default is what apptive-api-1 runs)")
    parser.add_argument("--users", type=int, help="default: lab 200, memory the cache size")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="write+reads rounds per user")
    parser.add_argument("--reads", type=int, default=4, help="reads after each write")
    parser.add_argument("--records", type=int, default=5, help="memory: records per user")
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--slices", type=int, default=5, help="lab: targets take turns")
    parser.add_argument("--cache-size", type=int, default=256)
    parser.add_argument("--idle-timeout", default="10")
    parser.add_argument("--busy-timeout-ms", default="15000")
    parser.add_argument("--env", action="append", default=[], help="extra KEY=VALUE (lab)")
    parser.add_argument(
        "--targets", default="gluster,local,lb1", type=lambda s: [x for x in s.split(",") if x]
    )
    parser.add_argument("--volume-group", help="e.g. metadata-cache; restored afterwards")
    parser.add_argument("--keep", action="store_true", help="keep the extra containers")
    args = parser.parse_args(argv)
    if args.command == "lab" and args.users is None:
        args.users = 200
    commands = {"lab": lab_bench, "memory": memory_bench, "safety": safety_bench}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

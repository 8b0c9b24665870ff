"""What the fault tests share: the lab, commands inside its hosts, HAProxy's view of the
backends, and a bounded load generator that remembers every acknowledged write.

Traffic goes only to the lab's ports published on 127.0.0.1, and commands run inside the lab's
own containers through `docker exec`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
BACKEND = "apptive_api"
ADMIN_SOCKET = "/run/haproxy/admin.sock"
STORE_MOUNT = "/mnt/apptive_store"
VOLUME = "apptive"
# Keys per user: writes overwrite them in turn, so the read-back after a test stays short.
KEYS_PER_USER = 6


def cluster_conftest() -> Any:
    """tests/cluster/conftest.py under a name of its own: `conftest` may be another file's."""
    name = "apptive_cluster_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, REPO / "tests" / "cluster" / "conftest.py"
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_cluster = cluster_conftest()
LB_URLS: dict[str, str] = _cluster.LB_URLS


# The lab's containers are named by a template (ansible_host: "lab-{{ inventory_hostname }}").
rendered = _cluster.rendered
Lab = _cluster.Lab


def load_lab() -> Lab:
    inventory = _cluster._inventory()
    hostvars = inventory["_meta"]["hostvars"]
    containers = frozenset(
        f"{host}/apptive-api-{index}"
        for host in inventory["api"]["hosts"]
        for index in range(1, len(hostvars[host]["apptive_api_ports"]) + 1)
    )
    for name, url in LB_URLS.items():
        try:
            requests.get(f"{url}/health", timeout=5)
        except requests.ConnectionError:
            pytest.fail(f"{name} does not answer on {url}: bring the lab up with `make lab`")
    return Lab(inventory=inventory, containers=containers)


# --- commands -------------------------------------------------------------------------------


def docker(*args: str, check: bool = True, timeout: float = 180, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["docker", *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


def in_host(container: str, *cmd: str, check: bool = True, timeout: float = 180) -> str:
    """A command inside a lab host (its own systemd, dockerd, mounts)."""
    return docker("exec", container, *cmd, check=check, timeout=timeout)


def host_ip(container: str) -> str:
    """The host container's address on the lab network (its internal_ip)."""
    return docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
    ).strip()


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}")


def haproxy_status(lb_container: str) -> dict[str, str]:
    """server name -> status (UP, DOWN, MAINT, "UP 1/2", ...) as this HAProxy sees it."""
    return {name: row["status"] for name, row in haproxy_servers(lb_container).items()}


def haproxy_servers(lb_container: str) -> dict[str, dict[str, str]]:
    """server name -> its `show stat` row (status, check_status, check_code, ...)."""
    out = in_host(
        lb_container,
        "sh",
        "-c",
        f"echo 'show stat' | socat stdio {ADMIN_SOCKET}",
        timeout=30,
    )
    lines = [line for line in out.splitlines() if line.strip()]
    header = lines[0].lstrip("# ").split(",")
    servers: dict[str, dict[str, str]] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == BACKEND and row.get("svname") not in ("FRONTEND", "BACKEND"):
            servers[row["svname"]] = row
    return servers


def server_name(host: str, container: str) -> str:
    """HAProxy's name of an API container (plugins/filter: `<host>-apptive-api-<n>`)."""
    return f"{host}-{container}"


def api_containers(lab: Any, host: str) -> list[str]:
    ports = lab.inventory["_meta"]["hostvars"][host]["apptive_api_ports"]
    return [f"apptive-api-{n}" for n in range(1, len(ports) + 1)]


def container_state(host_container: str, name: str) -> tuple[str, str, str]:
    """(status, health, started at) of an API container inside a host."""
    out = in_host(
        host_container,
        "docker",
        "inspect",
        "-f",
        "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
        " {{.State.StartedAt}}",
        name,
        check=False,
        timeout=30,
    ).split()
    return (out[0], out[1], out[2]) if len(out) == 3 else ("missing", "none", "")


class Watcher:
    """Polls something in a thread and remembers when its value changed (wall clock)."""

    def __init__(self, probe: Callable[[], Any], every: float = 0.3) -> None:
        self._probe = probe
        self._every = every
        self._stop = threading.Event()
        self.changes: list[tuple[float, Any]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = self._probe()
            except (AssertionError, subprocess.TimeoutExpired, IndexError):
                value = None
            now = time.time()
            if value is not None and (not self.changes or self.changes[-1][1] != value):
                self.changes.append((now, value))
            self._stop.wait(self._every)

    def first(self, predicate: Callable[[Any], bool], after: float = 0.0) -> float | None:
        """When the value first satisfied predicate at or after `after` (wall clock)."""
        for when, value in self.changes:
            if when >= after and predicate(value):
                return when
        return None


# --- load -----------------------------------------------------------------------------------


def _checksum(document: Any) -> str:
    return hashlib.sha256(
        json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


@dataclass
class Outcome:
    started: float  # wall clock
    ended: float
    lb: str
    method: str
    user: str
    key: str
    status: int | None  # None: no HTTP answer at all
    served_by: str | None
    error: str | None = None
    failover: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and self.error is None and 200 <= self.status < 300


@dataclass
class _KeyState:
    acked: str | None = None  # checksum of the last acknowledged write
    unknown: set[str] = field(default_factory=set)  # attempts after it that were not answered 2xx


class Load:
    """Steady reads and writes for many users through both load balancers.

    Bounded: `workers` threads, each owning a fixed share of the users, one request at a time,
    with `think` seconds between requests. A user's requests are therefore sequential, which
    makes "the value a read must return" well defined: the last acknowledged write, or one of
    the writes after it that got no 2xx (they may or may not have been stored).

    `failover=True` behaves like a client that knows both load balancers: a request that got no
    HTTP answer at all (connection refused or reset) is sent once more to the other one.
    """

    def __init__(
        self,
        lb_urls: dict[str, str],
        users: int = 42,
        workers: int = 7,
        think: float = 0.05,
        failover: bool = False,
        timeout: float = 35,
    ) -> None:
        prefix = str(secrets.randbelow(9 * 10**11) + 10**11)
        self.prefix = prefix
        self.users = [f"{prefix}{n:03d}" for n in range(users)]
        self.lb_urls = dict(lb_urls)
        self.workers = workers
        self.think = think
        self.failover = failover
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self.mismatches: list[str] = []
        self.keys: dict[tuple[str, str], _KeyState] = defaultdict(_KeyState)
        self.marks: dict[str, float] = {}
        # Per worker (its session's id): the LBs it holds an idle keep-alive connection to.
        self._warm: dict[int, set[str]] = defaultdict(set)
        self.idle_close_retries = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- running

    def start(self) -> Load:
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, args=(self.users[n :: self.workers],))
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout * 2 + 10)
        self._threads.clear()

    def mark(self, name: str) -> float:
        self.marks[name] = time.time()
        return self.marks[name]

    def settle(self, seconds: float) -> None:
        """Let the load run, without the test doing anything else."""
        time.sleep(seconds)

    def _work(self, users: list[str]) -> None:
        rng = random.Random()
        lbs = sorted(self.lb_urls)
        with requests.Session() as session:
            n = 0
            while not self._stop.is_set():
                user = users[n % len(users)]
                n += 1
                key = f"k{rng.randrange(KEYS_PER_USER)}"
                state = self.keys[(user, key)]
                lb = rng.choice(lbs)
                if state.acked is None or rng.random() < 0.5:
                    self._write(session, lb, user, key, state, rng)
                else:
                    self._read(session, lb, user, key, state)
                self._stop.wait(self.think)

    def _send(
        self, session: requests.Session, lb: str, method: str, user: str, key: str, body: Any
    ) -> tuple[Outcome, requests.Response | None]:
        started = time.time()
        url = f"/api/users/{user}/records/{key}"
        tried_other = False
        retried_fresh = False
        warm = self._warm[id(session)]
        while True:
            reused = lb in warm
            try:
                response = session.request(
                    method, f"{self.lb_urls[lb]}{url}", json=body, timeout=self.timeout
                )
            except requests.RequestException as exc:
                warm.discard(lb)
                # A server may close an idle keep-alive connection at any time (HAProxy's old
                # worker does at a reload); a request that meets that close got no byte of
                # answer, and an HTTP client sends an idempotent one again on a new connection
                # (RFC 9112, 9.3.1). Only then: a fresh connection that fails is a failure.
                if reused and not retried_fresh and _closed_before_answer(exc):
                    retried_fresh = True
                    with self._lock:
                        self.idle_close_retries += 1
                    continue
                if self.failover and not tried_other:
                    tried_other = True
                    lb = next(name for name in self.lb_urls if name != lb)
                    continue
                outcome = Outcome(started, time.time(), lb, method, user, key, None, None)
                outcome.error = type(exc).__name__
                outcome.failover = tried_other
                return outcome, None
            if response.headers.get("Connection", "").lower() == "close":
                warm.discard(lb)
            else:
                warm.add(lb)
            outcome = Outcome(
                started,
                time.time(),
                lb,
                method,
                user,
                key,
                response.status_code,
                response.headers.get("X-Served-By"),
                failover=tried_other,
            )
            return outcome, response

    def _write(
        self,
        session: requests.Session,
        lb: str,
        user: str,
        key: str,
        state: _KeyState,
        rng: random.Random,
    ) -> None:
        document = {"user": user, "key": key, "nonce": rng.getrandbits(64), "at": time.time()}
        checksum = _checksum(document)
        state.unknown.add(checksum)
        outcome, _ = self._send(session, lb, "PUT", user, key, document)
        if outcome.ok:
            state.acked = checksum
            state.unknown.clear()
        self._record(outcome)

    def _read(
        self, session: requests.Session, lb: str, user: str, key: str, state: _KeyState
    ) -> None:
        outcome, response = self._send(session, lb, "GET", user, key, None)
        if outcome.ok and response is not None:
            got = _checksum(response.json())
            if got != state.acked and got not in state.unknown:
                outcome.error = "stale or foreign value"
                with self._lock:
                    self.mismatches.append(f"{user}/{key} via {lb} ({outcome.served_by})")
            elif got != state.acked:
                # An unanswered write was stored after all: it is the value to expect now.
                state.acked = got
                state.unknown.discard(got)
        self._record(outcome)

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    # -- what happened

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def wait_warm(self, requests_per_user: int = 2, timeout: float = 60) -> None:
        """Until every user was served a few times: each has its container, each has data."""

        def warm() -> bool:
            served = Counter(o.user for o in self.snapshot() if o.ok)
            return all(served[user] >= requests_per_user for user in self.users)

        wait_for("the load to reach every user", warm, timeout=timeout, every=0.5)

    def owners(self, since: float = 0.0, until: float | None = None) -> dict[str, set[str]]:
        """user -> containers that answered it 2xx in [since, until]."""
        owners: dict[str, set[str]] = defaultdict(set)
        for o in self.snapshot():
            if o.ok and o.served_by and o.ended >= since and (until is None or o.ended <= until):
                owners[o.user].add(o.served_by)
        return owners

    def failures(self, since: float = 0.0, method: str | None = None) -> list[Outcome]:
        return [
            o
            for o in self.snapshot()
            if not o.ok and o.started >= since and (method is None or o.method == method)
        ]

    def summary(self, fault_at: float | None = None) -> dict[str, Any]:
        outcomes = self.snapshot()
        failed = [o for o in outcomes if not o.ok]
        result: dict[str, Any] = {
            "users": len(self.users),
            "requests": len(outcomes),
            "writes_acked": sum(1 for o in outcomes if o.method == "PUT" and o.ok),
            "writes_failed": sum(1 for o in failed if o.method == "PUT"),
            "reads_failed": sum(1 for o in failed if o.method == "GET"),
            "client_failovers": sum(1 for o in outcomes if o.failover),
            "idle_close_retries": self.idle_close_retries,
            "failure_kinds": dict(Counter(str(o.error or o.status) for o in failed)),
            "failures_by_container": dict(Counter(str(o.served_by) for o in failed)),
            "mismatched_reads": len(self.mismatches),
        }
        if fault_at is not None:
            last = max((o.ended for o in failed if o.ended >= fault_at), default=None)
            result["recovery_s"] = round(last - fault_at, 1) if last is not None else 0.0
            result["slowest_request_s"] = round(
                max((o.ended - o.started for o in outcomes if o.ended >= fault_at), default=0), 1
            )
        if outcomes:
            span = max(o.ended for o in outcomes) - min(o.started for o in outcomes)
            result["requests_per_s"] = round(len(outcomes) / span, 1) if span else 0.0
        return result

    # -- afterwards

    def read_back(self, attempts: int = 5) -> dict[str, Any]:
        """Every acknowledged write, read back through both LBs in turn: checksums compared."""
        items = [(uk, st) for uk, st in self.keys.items() if st.acked or st.unknown]
        lbs = sorted(self.lb_urls)

        def check(index: int, item: tuple[tuple[str, str], _KeyState]) -> str | None:
            (user, key), state = item
            url = f"{self.lb_urls[lbs[index % len(lbs)]]}/api/users/{user}/records/{key}"
            answer = "no answer"
            for attempt in range(attempts):
                try:
                    response = requests.get(url, timeout=self.timeout)
                except requests.RequestException as exc:
                    answer = type(exc).__name__
                else:
                    if response.status_code == 200:
                        got = _checksum(response.json())
                        if got == state.acked or got in state.unknown:
                            return None
                        return f"{user}/{key}: wrong value ({response.headers.get('X-Served-By')})"
                    if response.status_code == 404:
                        if state.acked is None:
                            return None  # only unanswered writes: none of them stored
                        return f"{user}/{key}: acknowledged write lost (404)"
                    answer = f"HTTP {response.status_code}"
                time.sleep(1 + attempt)
            return f"{user}/{key}: {answer} after {attempts} attempts"

        with ThreadPoolExecutor(max_workers=8) as pool:
            problems = [p for p in pool.map(check, range(len(items)), items) if p]
        return {
            "checked": len(items),
            "acknowledged": sum(1 for _, st in items if st.acked),
            "problems": problems,
        }


def _closed_before_answer(exc: requests.RequestException) -> bool:
    """urllib3's "Connection aborted." (RemoteDisconnected, a reset): no byte of answer came.
    A refused or timed-out connection, or a read timeout, is something else."""
    return isinstance(exc, requests.ConnectionError) and "Connection aborted" in str(exc)


def user_files(user: str) -> list[str]:
    """Where the API keeps a user's database on the store (apptive_api.store: two shard levels
    from sha256 of the id), with its journal."""
    digest = hashlib.sha256(user.encode("ascii")).hexdigest()
    path = f"{STORE_MOUNT}/users/{digest[:2]}/{digest[2:4]}/{user}.sqlite3"
    return [path, f"{path}-journal"]


def remove_users(lab: Any, users: Iterable[str]) -> None:
    """The test users' databases on the shared volume, by exact path (no walk of the tree)."""
    paths = [path for user in users for path in user_files(user)]
    if not paths:
        return
    for host in lab.hosts("api"):
        out = subprocess.run(
            [
                "docker",
                "exec",
                "-i",
                lab.container(host),
                "sh",
                "-c",
                f"mountpoint -q {STORE_MOUNT} && xargs rm -f",
            ],
            input="\n".join(paths),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if out.returncode == 0:
            return

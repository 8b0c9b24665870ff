"""Two owners of one user's database: what broken stickiness does to the owner cache (1.1.0+).

Two API containers of the built image share ONE data directory, as two hosts share the
GlusterFS volume, and one user's writes go to both alternately, with some concurrency: what
HAProxy would do if the stick entry kept moving. The owner cache keeps a database open in
SQLite's EXCLUSIVE locking mode, so only one container can hold it at a time; the other must
wait (busy timeout 3 s > idle timeout 1 s + sweep) or answer 503 with Retry-After. Checked:

- every answer is 2xx, or 503 `store_busy` with Retry-After: never a 500, never another error;
- every acknowledged write is read back afterwards (no lost write), from the API and from the
  file itself once the containers are stopped, and the file passes `PRAGMA integrity_check`;
- a read right after an acknowledged write on the other container returns that write or a 503,
  never an older value (no stale page cache), and the handover does happen;
- while one container keeps serving the user, writes to the other get 503 and are not stored.

This runs against a LOCAL directory bind-mounted into both containers (one kernel, so POSIX
locks are exact), not against GlusterFS: the lab runs the same scenario on the Gluster mount
from two different hosts later. Containers are named `apptive-safety-*` and always removed.
Traffic goes only to 127.0.0.1 ports published by the containers this test starts.

    bash scripts/build-image.sh && .venv/bin/pytest tests/store_safety -q
    APPTIVE_IMAGE_VERSION=1.1.0 .venv/bin/pytest tests/store_safety -q
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

docker = pytest.importorskip("docker", reason="the docker SDK is not installed")

REPO = Path(__file__).resolve().parents[2]
NAME_PREFIX = "apptive-safety-"
LABEL = "apptive-safety"
APP_UID = 10001
LOOPBACK = "127.0.0.1"
SENTINEL = ".apptive-store"
USER = "4242"
WRITES = 200
CONCURRENCY = 8
CROSS_READS = 10
IDLE_TIMEOUT_S = 1
BUSY_TIMEOUT_MS = 3000
# A request may queue behind others for one busy timeout, then wait on the lock for another.
HTTP_TIMEOUT_S = 30


def _image_tag() -> str:
    version = os.environ.get("APPTIVE_IMAGE_VERSION", "").strip()
    if not version:
        with open(REPO / "app" / "pyproject.toml", "rb") as f:
            version = str(tomllib.load(f)["project"]["version"])
    return f"apptive-api:{version}"


@dataclass
class Api:
    name: str
    container: Any
    port: int

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"


@dataclass
class Outcomes:
    """Every answer seen, so a failure prints the whole picture."""

    acked: dict[str, int] = field(default_factory=dict)
    acked_by: dict[str, int] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)  # keys whose PUT was answered 503
    statuses: dict[str, int] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, api: Api, method: str, response: requests.Response) -> None:
        with self.lock:
            key = f"{api.name} {method} {response.status_code}"
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if 200 <= response.status_code < 300:
                return
            body = response.text[:200]
            if response.status_code != 503:
                self.bad.append(f"{key}: {body}")
            elif "Retry-After" not in response.headers:
                self.bad.append(f"{key} without Retry-After: {body}")
            elif response.json().get("error") != "store_busy":
                self.bad.append(f"{key} not store_busy: {body}")


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # any failure to reach the engine means "no docker here"
        pytest.skip(f"Docker Engine not available ({exc})")
    # Leftovers of a run that died before its cleanup: ours by name and label, never running
    # ones (they may belong to a concurrent run).
    for old in client.containers.list(all=True, filters={"label": LABEL}):
        if old.name.startswith(NAME_PREFIX) and old.status != "running":
            old.remove(force=True)
    yield client
    client.close()


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """The stand-in for the shared volume: owned by the app's uid, sentinel present."""
    path = tmp_path / "volume"
    path.mkdir()
    (path / SENTINEL).touch()
    if os.geteuid() == 0:
        os.chown(path, APP_UID, APP_UID)
    else:
        path.chmod(0o777)
    return path


@pytest.fixture
def apis(docker_client: Any, volume: Path) -> Iterator[list[Api]]:
    tag = _image_tag()
    try:
        docker_client.images.get(tag)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {tag} not found: bash scripts/build-image.sh", pytrace=False)
    run_id = uuid.uuid4().hex[:8]
    started: list[Api] = []
    try:
        for name in ("a", "b"):
            container = docker_client.containers.run(
                tag,
                detach=True,
                name=f"{NAME_PREFIX}{run_id}-{name}",
                labels={LABEL: "1"},
                environment={
                    "APPTIVE_INSTANCE": f"safety/{name}",
                    "APPTIVE_STORE_IDLE_TIMEOUT": str(IDLE_TIMEOUT_S),
                    "APPTIVE_BUSY_TIMEOUT_MS": str(BUSY_TIMEOUT_MS),
                },
                ports={"3600/tcp": (LOOPBACK, None)},
                volumes={str(volume): {"bind": "/data/apptive", "mode": "rw"}},
                read_only=True,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                mem_limit="256m",
            )
            started.append(Api(name, container, 0))
        for api in started:
            api.port = _host_port(api.container)
            _wait_healthy(api)
        yield started
    finally:
        for api in started:
            with contextlib.suppress(docker.errors.NotFound):
                api.container.remove(force=True)


def _host_port(container: Any) -> int:
    deadline = time.monotonic() + 15
    while True:
        container.reload()
        bindings = container.attrs["NetworkSettings"]["Ports"].get("3600/tcp")
        if bindings:
            return int(bindings[0]["HostPort"])
        assert container.status != "exited", container.logs().decode(errors="replace")
        assert time.monotonic() < deadline, "no port published"
        time.sleep(0.1)


def _wait_healthy(api: Api) -> None:
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(api.url("/health"), timeout=2).status_code == 200:
                return
        api.container.reload()
        assert api.container.status != "exited", api.container.logs().decode(errors="replace")
        assert time.monotonic() < deadline, f"{api.name} not healthy in 60 s"
        time.sleep(0.2)


def _put(api: Api, key: str, value: int, outcomes: Outcomes) -> bool:
    response = requests.put(
        api.url(f"/api/users/{USER}/records/{key}"), json={"n": value}, timeout=HTTP_TIMEOUT_S
    )
    outcomes.record(api, "PUT", response)
    if 200 <= response.status_code < 300:
        with outcomes.lock:
            outcomes.acked[key] = value
            outcomes.acked_by[api.name] = outcomes.acked_by.get(api.name, 0) + 1
        return True
    with outcomes.lock:
        outcomes.refused.add(key)
    return False


def _get(api: Api, key: str, outcomes: Outcomes) -> requests.Response:
    response = requests.get(api.url(f"/api/users/{USER}/records/{key}"), timeout=HTTP_TIMEOUT_S)
    outcomes.record(api, "GET", response)
    return response


def _read_back(api: Api, key: str, outcomes: Outcomes) -> Any:
    """The stored value, waiting out 503s while the other container lets go of the lock."""
    deadline = time.monotonic() + 60
    while True:
        response = _get(api, key, outcomes)
        if response.status_code != 503:
            assert response.status_code == 200, f"{key}: {response.status_code} {response.text}"
            return response.json()
        assert time.monotonic() < deadline, f"{key}: still 503 after 60 s"
        time.sleep(0.5)


def test_alternating_owners_lose_nothing_and_never_serve_stale_data(
    apis: list[Api], volume: Path
) -> None:
    outcomes = Outcomes()
    diagnostics = ""
    try:
        # 1. Increasing counters, each to the container the broken stickiness picks.
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(lambda i: _put(apis[i % 2], f"w{i:03d}", i, outcomes), range(WRITES)))

        # 2. One key, written on one container and read at once on the other.
        handovers = 0
        for i in range(CROSS_READS):
            writer, reader = apis[i % 2], apis[(i + 1) % 2]
            if not _put(writer, "latest", 1000 + i, outcomes):
                continue
            response = _get(reader, "latest", outcomes)
            if response.status_code == 200:
                assert response.json() == {"n": 1000 + i}, f"stale read on {reader.name}"
                handovers += 1

        # 3. Contention: while one container keeps serving the user (reads without a pause, so
        #    it never goes idle), writes to the other must wait, then give up with a 503.
        rejected = _contend(apis[0], apis[1], outcomes)

        # 4. Every acknowledged write is there, through either container.
        for n, (key, value) in enumerate(sorted(outcomes.acked.items())):
            assert _read_back(apis[n % 2], key, outcomes) == {"n": value}, key
    finally:
        diagnostics = _summary(apis, outcomes)
        print(diagnostics)

    assert outcomes.bad == [], diagnostics
    assert outcomes.acked_by.get("a") and outcomes.acked_by.get("b"), diagnostics
    assert handovers > 0, f"the lock never moved to the other container\n{diagnostics}"
    assert rejected, f"no write was refused while the other owner was busy\n{diagnostics}"

    # 5. Stop both (SIGTERM closes their connections), then check the file itself.
    for api in apis:
        api.container.stop(timeout=10)
    db = next(volume.rglob(f"{USER}.sqlite3"))
    assert not list(volume.rglob("*-journal")), "a journal was left behind"
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = dict(conn.execute("SELECT key, value FROM records").fetchall())
    for key, value in outcomes.acked.items():
        assert stored.get(key) == f'{{"n":{value}}}', key
    # A 503 means "not written": a client may retry it without fearing a duplicate.
    never_acked = outcomes.refused - set(outcomes.acked)
    assert set(rejected) <= never_acked
    assert not never_acked & set(stored), "a write answered 503 was stored anyway"


def _contend(busy: Api, other: Api, outcomes: Outcomes) -> list[str]:
    """Keys written to `other` while `busy` serves the user non-stop; returns the refused ones."""
    assert _put(busy, "held", 1, outcomes)
    stop = threading.Event()
    stale: list[Any] = []

    def keep_reading() -> None:
        while not stop.is_set():
            response = _get(busy, "held", outcomes)
            if response.status_code == 200 and response.json() != {"n": 1}:
                stale.append(response.json())

    reader = threading.Thread(target=keep_reading)
    reader.start()
    rejected = []
    try:
        for i in range(3):
            if not _put(other, f"contended{i}", i, outcomes):
                rejected.append(f"contended{i}")
    finally:
        stop.set()
        reader.join()
    assert stale == [], "the busy owner served a value it did not write"
    return rejected


def _summary(apis: list[Api], outcomes: Outcomes) -> str:
    lines = [
        f"acknowledged writes: {len(outcomes.acked)} (by container: {outcomes.acked_by}),"
        f" refused: {len(outcomes.refused)}",
        f"answers: {dict(sorted(outcomes.statuses.items()))}",
    ]
    for api in apis:
        with contextlib.suppress(requests.RequestException):
            metrics = requests.get(api.url("/metrics"), timeout=5).text
            cache = [m for m in metrics.splitlines() if m.startswith("apptive_store_cache_")]
            lines.append(f"{api.name}: " + ", ".join(cache))
    if outcomes.bad:
        lines.append("unexpected answers:\n  " + "\n  ".join(outcomes.bad[:20]))
        for api in apis:
            logs = api.container.logs(tail=30).decode(errors="replace")
            lines.append(f"--- {api.name} logs\n{logs}")
    return "\n".join(lines)

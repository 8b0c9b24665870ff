"""The built image, run the way the deployment runs it: hardened, on loopback only."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Helpers come from conftest.py as fixtures, not imports: several conftest.py files in one
# pytest run must not be imported by module name.
APP_UID = 10001
SENTINEL = ".apptive-store"
Running = Any  # conftest.Running: a started container and its loopback port


def _wait_for_health_status(running: Running, wanted: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        running.container.reload()
        status = running.container.attrs["State"].get("Health", {}).get("Status", "")
        if status == wanted:
            break
        time.sleep(0.5)
    return status


def test_image_metadata(image: Any, expected_version: str) -> None:
    config = image.attrs["Config"]
    assert config["User"] == f"{APP_UID}:{APP_UID}"
    assert "3600/tcp" in config["ExposedPorts"]
    assert config["StopSignal"] == "SIGTERM"
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert config["Labels"]["org.opencontainers.image.version"] == expected_version
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["APPTIVE_VERSION"] == expected_version


def test_unmounted_volume_is_refused_and_untouched(
    start: Callable[..., Running], data_dir: Path, instance: str
) -> None:
    running = start(data_dir)  # no sentinel: what an unmounted mount point looks like

    health = running.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert health.headers["X-Served-By"] == instance

    put = running.request("PUT", "/api/users/1/records/k", json={"a": 1})
    assert put.status_code == 503
    assert "Retry-After" in put.headers
    assert running.get("/api/users/1/records").status_code == 503
    assert list(data_dir.iterdir()) == []


def test_mount_point_in_image_is_not_writable(start: Callable[..., Running]) -> None:
    # Writable root fs and no volume: only the image's own permissions protect the path.
    running = start(None, read_only=False)
    probe = "import os; print(os.access('/data/apptive', os.W_OK))"
    result = running.container.exec_run(["python3", "-c", probe])
    assert result.output.decode().strip() == "False"
    assert running.get("/health").status_code == 503
    put = running.request("PUT", "/api/users/1/records/k", json=1)
    assert put.status_code == 503


def test_round_trip_on_the_volume(
    start: Callable[..., Running],
    data_dir: Path,
    instance: str,
    expected_version: str,
) -> None:
    (data_dir / SENTINEL).touch()
    running = start(data_dir)

    health = running.get("/health")
    assert health.status_code == 200, running.logs()
    assert health.json() == {
        "status": "ok",
        "version": expected_version,
        "instance": instance,
    }
    assert health.headers["X-Served-By"] == instance

    base = "/api/users/4242/records"
    assert running.request("PUT", f"{base}/beta", json={"n": 2}).status_code == 201
    assert running.request("PUT", f"{base}/alpha", json=[1]).status_code == 201
    assert running.request("PUT", f"{base}/alpha", json=[2]).status_code == 200
    assert running.get(f"{base}/alpha").json() == [2]
    assert running.get(base).json()["keys"] == ["alpha", "beta"]
    assert running.request("DELETE", f"{base}/alpha").status_code == 204
    missing = running.get(f"{base}/alpha")
    assert missing.status_code == 404
    assert missing.headers["X-Served-By"] == instance

    digest = hashlib.sha256(b"4242").hexdigest()
    db = data_dir / "users" / digest[:2] / digest[2:4] / "4242.sqlite3"
    assert db.is_file()
    assert db.stat().st_uid == APP_UID
    assert [p.name for p in data_dir.rglob("*.sqlite3")] == ["4242.sqlite3"]
    assert not list(data_dir.rglob("*-wal"))

    metrics = running.get("/metrics").text
    assert 'route="/api/users/{user_id}/records/{key}"' in metrics
    assert f'version="{expected_version}"' in metrics


def test_hardened_runtime(start: Callable[..., Running], data_dir: Path) -> None:
    (data_dir / SENTINEL).touch()
    running = start(data_dir)
    host_config = running.container.attrs["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]

    status = running.container.exec_run(["cat", "/proc/1/status"]).output.decode()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(APP_UID)] * 4
    assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE)
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE)
    cmdline = running.container.exec_run(["cat", "/proc/1/cmdline"]).output
    assert b"apptive_api" in cmdline

    # Docker's own HEALTHCHECK (python urllib, no curl) turns the container healthy.
    assert _wait_for_health_status(running, "healthy", 20) == "healthy"


def test_docker_stop_exits_zero_quickly(start: Callable[..., Running], data_dir: Path) -> None:
    (data_dir / SENTINEL).touch()
    running = start(data_dir)
    assert running.request("PUT", "/api/users/1/records/k", json=1).status_code == 201

    started = time.monotonic()
    running.container.stop(timeout=10)  # SIGTERM, SIGKILL only after 10 s
    elapsed = time.monotonic() - started
    result = running.container.wait(timeout=10)
    assert result["StatusCode"] == 0, running.logs()
    assert elapsed < 5, f"stop took {elapsed:.1f} s"
    assert "Finished server process" in running.logs()

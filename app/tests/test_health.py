"""/health and the refusal of /api while the shared volume is not there or not writable."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from apptive_api import readiness
from apptive_api.config import Config
from apptive_api.readiness import SENTINEL_NAME, Readiness, check_data_dir

API_CALLS = [
    ("GET", "/api/users/1/records/k"),
    ("PUT", "/api/users/1/records/k"),
    ("DELETE", "/api/users/1/records/k"),
    ("GET", "/api/users/1/records"),
]


def test_health_ok(client: TestClient, config: Config) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": config.version,
        "instance": config.instance,
    }


def _assert_unavailable(client: TestClient, reason_part: str) -> None:
    health = client.get("/health")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "unavailable"
    assert set(body) == {"status", "reason"}
    assert reason_part in body["reason"]
    for method, path in API_CALLS:
        response = client.request(method, path, json={"a": 1})
        assert response.status_code == 503, (method, path)
        assert response.json()["error"] == "store_unavailable"
        assert reason_part in response.json()["detail"]
        assert int(response.headers["retry-after"]) > 0


def test_missing_sentinel(
    make_client: Callable[..., TestClient],
    tmp_path: Path,
    files_under: Callable[[Path], set[str]],
) -> None:
    # What an unmounted mount point looks like: an empty directory.
    empty = tmp_path / "mnt"
    empty.mkdir()
    client = make_client(Config(data_dir=empty, instance="i"))
    _assert_unavailable(client, "sentinel")
    assert files_under(tmp_path) == {"mnt"}, "nothing may be written into a bare mount point"


def test_missing_data_dir_is_not_created(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(Config(data_dir=tmp_path / "absent", instance="i"))
    _assert_unavailable(client, "sentinel")
    assert not (tmp_path / "absent").exists()


def test_sentinel_that_is_a_directory(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    (tmp_path / SENTINEL_NAME).mkdir()
    client = make_client(Config(data_dir=tmp_path, instance="i"))
    _assert_unavailable(client, "not a regular file")


def test_data_dir_that_is_a_file(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    client = make_client(Config(data_dir=tmp_path / "file", instance="i"))
    _assert_unavailable(client, "not a directory")


def test_unwritable_data_dir(
    make_client: Callable[..., TestClient],
    config: Config,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    files_under: Callable[[Path], set[str]],
) -> None:
    real_access = os.access

    def no_write(path: Any, mode: int, **kwargs: Any) -> bool:
        # Root passes every permission check, so a chmod alone cannot make the test work
        # when it runs as root; a read-only mount (EROFS) looks exactly like this.
        if Path(str(path)) == data_dir and mode & os.W_OK:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(readiness.os, "access", no_write)
    client = make_client(config)
    _assert_unavailable(client, "not writable")
    assert files_under(data_dir) == {SENTINEL_NAME}


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_unwritable_data_dir_by_mode(data_dir: Path) -> None:
    data_dir.chmod(0o555)
    try:
        assert check_data_dir(data_dir) == Readiness(False, "data directory not writable")
    finally:
        data_dir.chmod(0o755)


def test_recovers_when_sentinel_appears(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(Config(data_dir=tmp_path, instance="i"))
    assert client.get("/health").status_code == 503
    (tmp_path / SENTINEL_NAME).touch()
    assert client.get("/health").status_code == 200
    assert client.put("/api/users/1/records/k", json=1).status_code == 201
    (tmp_path / SENTINEL_NAME).unlink()
    # Existing databases are refused too: the volume may have been swapped underneath.
    assert client.get("/api/users/1/records/k").status_code == 503


def test_store_ready_gauge_follows_health(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(Config(data_dir=tmp_path, instance="i"))
    client.get("/health")
    assert "apptive_store_ready 0.0" in client.get("/metrics").text
    (tmp_path / SENTINEL_NAME).touch()
    client.get("/health")
    assert "apptive_store_ready 1.0" in client.get("/metrics").text


def test_hung_storage_answers_503_in_time(
    make_client: Callable[..., TestClient],
    config: Config,
) -> None:
    def hang(path: Path) -> Readiness:
        time.sleep(1.0)  # a FUSE mount whose server is gone blocks stat() like this
        return Readiness(True)

    client = make_client(
        Config(data_dir=config.data_dir, instance="i", health_timeout_s=0.1), readiness=hang
    )
    started = time.monotonic()
    response = client.get("/health")
    assert time.monotonic() - started < 0.9
    assert response.status_code == 503
    assert "timed out" in response.json()["reason"]


def test_health_check_is_cheap(data_dir: Path) -> None:
    # Called every 2 s by HAProxy and Docker on every instance: it must not write or be slow.
    started = time.perf_counter()
    for _ in range(1000):
        assert check_data_dir(data_dir).ready
    assert time.perf_counter() - started < 1.0
    assert sorted(p.name for p in data_dir.iterdir()) == [SENTINEL_NAME]

"""The SQLite store on its own: sharding, pragmas for a network file system, locking."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from apptive_api.config import Config
from apptive_api.readiness import SENTINEL_NAME
from apptive_api.store import (
    InvalidIdentifier,
    PerRequestConnections,
    SqliteStore,
    StoreBusy,
    StoreUnavailable,
    shard_path,
)


@pytest.fixture
def store(data_dir: Path) -> SqliteStore:
    return SqliteStore(PerRequestConnections(data_dir, busy_timeout_ms=200))


def test_shard_path_layout(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"42").hexdigest()
    assert shard_path(tmp_path, "42") == (
        tmp_path / "users" / digest[:2] / digest[2:4] / "42.sqlite3"
    )


def test_shards_spread_users(tmp_path: Path) -> None:
    parents = {shard_path(tmp_path, str(n)).parent for n in range(2000)}
    # 2000 users over 65,536 leaf directories: nearly every user gets its own.
    assert len(parents) > 1900


@pytest.mark.parametrize("user_id", ["", "..", "../1", "1/2", "a", "1" * 21, "/etc/passwd", "1\n"])
def test_shard_path_refuses_bad_ids(tmp_path: Path, user_id: str) -> None:
    with pytest.raises(InvalidIdentifier):
        shard_path(tmp_path, user_id)


@pytest.mark.parametrize("key", ["", "..", "a/b", "a.b", "k" * 129])
def test_store_refuses_bad_keys(store: SqliteStore, key: str, data_dir: Path) -> None:
    with pytest.raises(InvalidIdentifier):
        store.put("1", key, "1")
    with pytest.raises(InvalidIdentifier):
        store.get("1", key)
    assert not (data_dir / "users").exists()


def test_round_trip(store: SqliteStore) -> None:
    assert store.put("7", "b", '"two"') is True
    assert store.put("7", "a", "1") is True
    assert store.put("7", "a", "2") is False
    assert store.get("7", "a") == "2"
    assert store.list_keys("7") == ["a", "b"]
    assert store.delete("7", "a") is True
    assert store.delete("7", "a") is False
    assert store.get("7", "a") is None
    assert store.list_keys("7") == ["b"]


def test_connection_pragmas_suit_a_network_file_system(data_dir: Path) -> None:
    connections = PerRequestConnections(data_dir, busy_timeout_ms=1234)
    with connections.connection("9", create=True) as conn:
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1234
        assert conn.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY


def test_connection_is_closed_after_use(data_dir: Path) -> None:
    connections = PerRequestConnections(data_dir, busy_timeout_ms=100)
    with connections.connection("9", create=True) as conn:
        assert conn is not None
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")


def test_reads_do_not_create_databases(store: SqliteStore, data_dir: Path) -> None:
    assert store.get("5", "k") is None
    assert store.list_keys("5") == []
    assert store.delete("5", "k") is False
    assert sorted(p.name for p in data_dir.iterdir()) == [SENTINEL_NAME]


def test_empty_database_file_reads_as_empty(store: SqliteStore, data_dir: Path) -> None:
    # A writer that died between creating the file and creating the table leaves this.
    path = shard_path(data_dir, "6")
    path.parent.mkdir(parents=True)
    path.touch()
    assert store.get("6", "k") is None
    assert store.list_keys("6") == []
    assert store.delete("6", "k") is False
    assert store.put("6", "k", "1") is True


def test_store_refuses_without_sentinel(tmp_path: Path) -> None:
    store = SqliteStore(PerRequestConnections(tmp_path, busy_timeout_ms=100))
    with pytest.raises(StoreUnavailable, match="sentinel"):
        store.put("1", "k", "1")
    with pytest.raises(StoreUnavailable):
        store.get("1", "k")
    assert list(tmp_path.iterdir()) == []


def test_locked_database_is_503_busy(
    make_client: Callable[..., TestClient], data_dir: Path
) -> None:
    # Per-request connections (cache off): the owner cache's own busy path is in test_owner_cache.
    config = Config(data_dir=data_dir, instance="i", busy_timeout_ms=100, store_cache_size=0)
    client = make_client(config)
    assert client.put("/api/users/3/records/k", json=1).status_code == 201

    # Another host holds the write lock for longer than our busy timeout.
    holder = sqlite3.connect(shard_path(data_dir, "3"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        response = client.put("/api/users/3/records/k", json=2)
        assert response.status_code == 503
        assert response.json()["error"] == "store_busy"
        assert "retry-after" in response.headers
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.get("/api/users/3/records/k").json() == 1


def test_busy_translation(store: SqliteStore, data_dir: Path) -> None:
    store.put("4", "k", "1")
    holder = sqlite3.connect(shard_path(data_dir, "4"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreBusy):
            store.put("4", "k", "2")
    finally:
        holder.close()


def test_concurrent_writers_lose_nothing(data_dir: Path) -> None:
    store = SqliteStore(PerRequestConnections(data_dir, busy_timeout_ms=5000))
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        try:
            for n in range(20):
                store.put("8", f"{prefix}{n}", str(n))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.list_keys("8")) == 80

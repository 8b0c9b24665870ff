"""The owner cache: bound, eviction, idle close, shutdown, locking and concurrency."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from apptive_api.config import Config
from apptive_api.owner_cache import PAGE_CACHE_KIB, OwnerConnections
from apptive_api.readiness import SENTINEL_NAME
from apptive_api.store import SqliteStore, StoreBusy, StoreUnavailable, shard_path

# Another process writing the database, as another container would: exit 0 if it wrote,
# 3 if the database stayed locked for its whole (short) busy timeout.
_OTHER_WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=float(sys.argv[2]), isolation_level=None)
try:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT OR REPLACE INTO records (key, value, updated_at) VALUES (?, ?, 0)",
                 (sys.argv[3], sys.argv[4]))
    conn.execute("COMMIT")
except sqlite3.OperationalError as exc:
    sys.exit(3 if "locked" in str(exc) else 4)
"""


def other_process_writes(path: Path, key: str, value: str, timeout_s: float = 0.2) -> bool:
    result = subprocess.run(
        [sys.executable, "-c", _OTHER_WRITER, str(path), str(timeout_s), key, value],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode in (0, 3), result.stderr.decode()
    return result.returncode == 0


@pytest.fixture
def make_cache(data_dir: Path) -> Iterator[Callable[..., OwnerConnections]]:
    caches: list[OwnerConnections] = []

    def _make(
        capacity: int = 8,
        idle_timeout_s: float = 60.0,
        sweep_interval_s: float = 60.0,
        busy_timeout_ms: int = 500,
    ) -> OwnerConnections:
        cache = OwnerConnections(
            data_dir,
            busy_timeout_ms,
            capacity=capacity,
            idle_timeout_s=idle_timeout_s,
            sweep_interval_s=sweep_interval_s,
        )
        caches.append(cache)
        return cache

    yield _make
    for cache in caches:
        cache.close()


def _opened(cache: OwnerConnections, user_id: str) -> sqlite3.Connection:
    with cache.connection(user_id, create=True) as conn:
        assert conn is not None
        return conn


def _is_closed(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def test_pragmas_exclusive_rollback_journal(make_cache: Callable[..., OwnerConnections]) -> None:
    cache = make_cache(busy_timeout_ms=1234)
    with cache.connection("9", create=True) as conn:
        assert conn is not None
        assert conn.execute("PRAGMA locking_mode").fetchone()[0] == "exclusive"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1234
        assert conn.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY
        assert conn.execute("PRAGMA cache_size").fetchone()[0] == -PAGE_CACHE_KIB


def test_second_use_is_a_hit_on_the_same_connection(
    make_cache: Callable[..., OwnerConnections],
) -> None:
    cache = make_cache()
    store = SqliteStore(cache)
    store.put("1", "k", "1")
    first = _opened(cache, "1")
    assert store.get("1", "k") == "1"
    assert _opened(cache, "1") is first
    stats = cache.stats()
    assert (stats.misses, stats.hits, stats.open_connections) == (1, 3, 1)


def test_unknown_user_opens_nothing(make_cache: Callable[..., OwnerConnections]) -> None:
    cache = make_cache()
    store = SqliteStore(cache)
    assert store.get("5", "k") is None
    assert store.list_keys("5") == []
    assert cache.stats().open_connections == 0
    assert cache.stats().misses == 0


def test_lru_bound_is_honoured_and_eviction_closes(
    make_cache: Callable[..., OwnerConnections], data_dir: Path
) -> None:
    cache = make_cache(capacity=3)
    store = SqliteStore(cache)
    conns = {}
    for user in ("1", "2", "3"):
        store.put(user, "k", user)
        conns[user] = _opened(cache, user)
    store.get("1", "k")  # 1 is now the most recently used: 2 is the LRU
    for user in ("4", "5"):
        store.put(user, "k", user)
        assert cache.stats().open_connections == 3

    stats = cache.stats()
    assert stats.evictions == 2
    assert _is_closed(conns["2"]) and _is_closed(conns["3"])
    assert not _is_closed(conns["1"])
    # Evicted: the lock went with the connection, another process can write.
    assert other_process_writes(shard_path(data_dir, "2"), "k", '"other"')
    # Still cached: still locked, in EXCLUSIVE mode even after a read only.
    assert not other_process_writes(shard_path(data_dir, "1"), "k", '"other"')
    # An evicted user comes back with a fresh read of the file.
    assert store.get("2", "k") == '"other"'


def test_idle_sweeper_closes_and_releases_the_lock(
    make_cache: Callable[..., OwnerConnections], data_dir: Path
) -> None:
    # Whether an open owner holds the lock is tested where nothing can time out under it
    # (test_an_open_owner_holds_the_lock); here only the sweeper thread's release matters, so
    # a loaded machine cannot make the test flaky.
    cache = make_cache(idle_timeout_s=0.2, sweep_interval_s=0.05)
    store = SqliteStore(cache)
    store.put("7", "k", '"mine"')
    path = shard_path(data_dir, "7")

    # idle_closes counts a connection once its close returned; open_connections drops earlier,
    # when the sweeper takes the entry out of the cache.
    deadline = time.monotonic() + 10
    while cache.stats().idle_closes == 0:
        assert time.monotonic() < deadline, "the sweeper never closed the idle connection"
        time.sleep(0.05)

    assert cache.stats().idle_closes == 1
    assert cache.stats().open_connections == 0
    assert not path.with_name(path.name + "-journal").exists()
    assert other_process_writes(path, "k", '"theirs"')
    # Not stale: the next open re-reads what the other process wrote.
    assert store.get("7", "k") == '"theirs"'


def test_an_open_owner_holds_the_lock(
    make_cache: Callable[..., OwnerConnections], data_dir: Path
) -> None:
    cache = make_cache(idle_timeout_s=3600)
    SqliteStore(cache).put("7", "k", '"mine"')
    assert not other_process_writes(shard_path(data_dir, "7"), "k", '"theirs"')


def test_sweep_uses_the_idle_timeout(make_cache: Callable[..., OwnerConnections]) -> None:
    cache = make_cache(idle_timeout_s=30)
    conn = _opened(cache, "1")
    now = time.monotonic()
    assert cache.sweep(now + 29) == 0
    assert cache.sweep(now + 31) == 1
    assert _is_closed(conn)


def test_entry_in_use_is_never_swept_or_evicted(
    make_cache: Callable[..., OwnerConnections],
) -> None:
    cache = make_cache(capacity=1, idle_timeout_s=0.01)
    with cache.connection("1", create=True) as busy:
        assert busy is not None
        assert cache.sweep(time.monotonic() + 3600) == 0
        # Another user while the only slot is in use: the cache runs over, it does not close.
        other = _opened(cache, "2")
        assert busy.execute("SELECT 1").fetchone() == (1,)
        assert _is_closed(other)  # the unpinned one was the one evicted
    assert cache.stats().open_connections == 1


def test_shutdown_closes_everything(
    make_cache: Callable[..., OwnerConnections], data_dir: Path
) -> None:
    cache = make_cache()
    store = SqliteStore(cache)
    for user in ("1", "2", "3"):
        store.put(user, "k", "1")
    conns = [_opened(cache, u) for u in ("1", "2", "3")]
    cache.close()
    assert all(_is_closed(c) for c in conns)
    assert cache.stats().open_connections == 0
    for user in ("1", "2", "3"):
        assert other_process_writes(shard_path(data_dir, user), "k", "2")
    with pytest.raises(StoreUnavailable):
        store.get("1", "k")


def test_connection_in_use_at_shutdown_closes_when_released(
    make_cache: Callable[..., OwnerConnections],
) -> None:
    cache = make_cache()
    with cache.connection("1", create=True) as conn:
        assert conn is not None
        cache.close()
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the request finishes its work
    assert _is_closed(conn)


def test_failure_closes_the_connection(make_cache: Callable[..., OwnerConnections]) -> None:
    cache = make_cache()
    with pytest.raises(sqlite3.OperationalError), cache.connection("1", create=True) as conn:
        assert conn is not None
        conn.execute("SELECT * FROM no_such_table")
    assert _is_closed(conn)
    assert cache.stats().error_closes == 1
    assert _opened(cache, "1") is not conn


def test_new_owner_waits_for_the_old_one(
    make_cache: Callable[..., OwnerConnections], data_dir: Path
) -> None:
    store = SqliteStore(make_cache())
    store.put("3", "k", "1")
    store.close()
    # The old owner still holds the lock for 0.3 s, less than our 2 s busy timeout.
    holder = sqlite3.connect(
        shard_path(data_dir, "3"), isolation_level=None, check_same_thread=False
    )
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.3, holder.close).start()

    cache = make_cache(busy_timeout_ms=2000)
    started = time.monotonic()
    assert SqliteStore(cache).get("3", "k") == "1"
    assert time.monotonic() - started >= 0.25
    assert cache.stats().busy_waits == 1
    assert cache.stats().busy_timeouts == 0


def test_lock_held_past_the_busy_timeout_is_store_busy(
    make_cache: Callable[..., OwnerConnections], data_dir: Path
) -> None:
    store = SqliteStore(make_cache())
    store.put("4", "k", "1")
    store.close()
    holder = sqlite3.connect(shard_path(data_dir, "4"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    cache = make_cache(busy_timeout_ms=200)
    try:
        with pytest.raises(StoreBusy):
            SqliteStore(cache).put("4", "k", "2")
    finally:
        holder.close()
    stats = cache.stats()
    assert (stats.busy_waits, stats.busy_timeouts, stats.open_connections) == (1, 1, 0)
    assert SqliteStore(cache).get("4", "k") == "1"


def test_cache_hit_still_checks_the_volume(
    make_cache: Callable[..., OwnerConnections], data_dir: Path
) -> None:
    store = SqliteStore(make_cache())
    store.put("1", "k", "1")
    (data_dir / SENTINEL_NAME).unlink()
    with pytest.raises(StoreUnavailable, match="sentinel"):
        store.get("1", "k")


def test_many_threads_same_and_different_users(
    make_cache: Callable[..., OwnerConnections], data_dir: Path
) -> None:
    # A small capacity so that evictions and reopens happen under load too.
    cache = make_cache(
        capacity=4, idle_timeout_s=0.05, sweep_interval_s=0.01, busy_timeout_ms=10000
    )
    store = SqliteStore(cache)
    users = ["1", "2", "3", "4", "5", "6"]
    active: set[int] = set()
    guard = threading.Lock()
    errors: list[BaseException] = []
    writes_per_thread = 30

    def worker(n: int) -> None:
        rng = random.Random(n)
        try:
            for i in range(writes_per_thread):
                # Half of the threads share users 1 and 2, the others spread over all six.
                user = users[(n // 2) % 2] if n % 2 == 0 else rng.choice(users)
                with cache.connection(user, create=True) as conn:
                    with guard:
                        assert id(conn) not in active, "two threads on one connection"
                        active.add(id(conn))
                    time.sleep(0.0005)
                    with guard:
                        active.discard(id(conn))
                key = f"t{n}-{i}"
                store.put(user, key, str(i))
                assert store.get(user, key) == str(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    total = sum(len(store.list_keys(u)) for u in users)
    assert total == 16 * writes_per_thread
    assert cache.stats().open_connections <= 4
    cache.close()
    for user in users:
        with sqlite3.connect(shard_path(data_dir, user)) as check:
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_http_busy_is_503_and_metrics_show_the_cache(
    make_client: Callable[..., TestClient], data_dir: Path
) -> None:
    config = Config(data_dir=data_dir, instance="i", busy_timeout_ms=300, store_idle_timeout_s=0.2)
    client = make_client(config)
    assert client.put("/api/users/3/records/k", json=1).status_code == 201
    assert client.get("/api/users/3/records/k").json() == 1

    # The cache lets go after the idle timeout; then another process holds the lock.
    deadline = time.monotonic() + 10
    holder = sqlite3.connect(shard_path(data_dir, "3"), isolation_level=None, timeout=0.05)
    while True:
        try:
            holder.execute("BEGIN EXCLUSIVE")
            break
        except sqlite3.OperationalError:
            assert time.monotonic() < deadline, "the cache never released the lock"
    try:
        response = client.put("/api/users/3/records/k", json=2)
        assert response.status_code == 503
        assert response.json()["error"] == "store_busy"
        assert "retry-after" in response.headers
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.get("/api/users/3/records/k").json() == 1

    samples = {
        line.split()[0]: float(line.split()[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("apptive_store_cache_")
    }
    assert samples["apptive_store_cache_capacity"] == 256
    assert samples["apptive_store_cache_misses_total"] >= 2
    assert samples["apptive_store_cache_hits_total"] >= 1
    assert samples["apptive_store_cache_idle_closes_total"] >= 1
    assert samples["apptive_store_cache_busy_waits_total"] == 1
    assert samples["apptive_store_cache_busy_timeouts_total"] == 1
    assert samples["apptive_store_cache_evictions_total"] == 0
    assert samples["apptive_store_cache_error_closes_total"] == 0
    assert samples["apptive_store_cache_open_connections"] in (0, 1)

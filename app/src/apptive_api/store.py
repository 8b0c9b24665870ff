"""Per-user record storage: one SQLite file per user, sharded under <data_dir>/users.

The files live on GlusterFS through FUSE, which is why the settings are conservative:
rollback journal (WAL needs shared memory that a network file system cannot provide across
hosts), synchronous=FULL, and a busy timeout because other hosts may hold the file lock.

Connections come from a ConnectionProvider: PerRequestConnections opens and closes one per
call (what 1.0 did, still used with APPTIVE_STORE_CACHE_SIZE=0); owner_cache.OwnerConnections
keeps the databases of the users a container serves open. SqliteStore and the HTTP layer do
not know which one they use.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from apptive_api.readiness import Readiness, check_data_dir
from apptive_api.validation import is_valid_key, is_valid_user_id

log = logging.getLogger("apptive_api.store")

USERS_DIR = "users"
DB_SUFFIX = ".sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID
"""
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class StoreError(Exception):
    """Storage failed; the request may succeed later."""


class StoreUnavailable(StoreError):
    """The data directory is not the mounted, writable shared volume."""


class StoreBusy(StoreError):
    """Another writer held the database lock for longer than the busy timeout."""


class InvalidIdentifier(ValueError):
    """A user id or key that must never reach the file system."""


class Store(Protocol):
    def put(self, user_id: str, key: str, value: str) -> bool:
        """Store value (JSON text); True if the record was created, False if replaced."""
        ...

    def get(self, user_id: str, key: str) -> str | None: ...

    def delete(self, user_id: str, key: str) -> bool: ...

    def list_keys(self, user_id: str) -> list[str]: ...

    def close(self) -> None: ...


class ConnectionProvider(Protocol):
    def connection(
        self, user_id: str, *, create: bool
    ) -> contextlib.AbstractContextManager[sqlite3.Connection | None]:
        """A connection to the user's database, or None if it does not exist and not create."""
        ...

    def close(self) -> None: ...


def shard_path(data_dir: Path, user_id: str) -> Path:
    """users/<2 hex>/<2 hex>/<user_id>.sqlite3: 65,536 leaf directories, none grows unbounded."""
    if not is_valid_user_id(user_id):
        raise InvalidIdentifier("invalid user id")
    digest = hashlib.sha256(user_id.encode("ascii")).hexdigest()
    return data_dir / USERS_DIR / digest[0:2] / digest[2:4] / f"{user_id}{DB_SUFFIX}"


class PerRequestConnections:
    """Open, use, close: simple and safe when several hosts write the same files."""

    def __init__(
        self,
        data_dir: Path,
        busy_timeout_ms: int,
        readiness: Callable[[Path], Readiness] = check_data_dir,
    ) -> None:
        self._data_dir = data_dir
        self._busy_timeout_ms = busy_timeout_ms
        self._readiness = readiness

    @contextlib.contextmanager
    def connection(self, user_id: str, *, create: bool) -> Iterator[sqlite3.Connection | None]:
        path = shard_path(self._data_dir, user_id)
        # Checked on every call, before any mkdir or open: a volume that was unmounted since the
        # last request must not get a fresh, empty database on the host's own disk.
        state = self._readiness(self._data_dir)
        if not state.ready:
            raise StoreUnavailable(state.reason)
        if not path.exists():
            if not create:
                yield None
                return
            make_shard_dirs(self._data_dir, path)
        conn = connect(path, create=create, busy_timeout_ms=self._busy_timeout_ms)
        try:
            set_pragmas(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise translate_error(exc) from exc
        try:
            yield conn
        finally:
            conn.close()

    def close(self) -> None:
        """Nothing is held between calls."""


def make_shard_dirs(data_dir: Path, path: Path) -> None:
    users = data_dir / USERS_DIR
    # One level at a time and never parents=True: the data directory itself must already
    # exist, so a vanished mount fails here instead of being recreated.
    for directory in (users, path.parent.parent, path.parent):
        try:
            directory.mkdir(exist_ok=True)
        except FileNotFoundError as exc:
            raise StoreUnavailable("data directory vanished") from exc
        except OSError as exc:
            raise StoreError(f"cannot create shard directory: {exc.strerror}") from exc


def connect(
    path: Path, *, create: bool, busy_timeout_ms: int, any_thread: bool = False
) -> sqlite3.Connection:
    """Open the database file; pragmas are the caller's, since their order matters for locks."""
    mode = "rwc" if create else "rw"
    try:
        conn = sqlite3.connect(
            f"{path.as_uri()}?mode={mode}",
            uri=True,
            timeout=busy_timeout_ms / 1000,
            # Autocommit; write transactions are opened explicitly with BEGIN IMMEDIATE.
            isolation_level=None,
            # A cached connection is used by whichever pool thread serves the next request; its
            # owner serialises access with a lock of its own.
            check_same_thread=not any_thread,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    except sqlite3.Error as exc:
        raise translate_error(exc) from exc
    return conn


def set_pragmas(conn: sqlite3.Connection) -> None:
    """The settings for a network file system. They read the schema, so they need the lock."""
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA synchronous = FULL")
    # The root file system is read-only in the container: keep temp tables off disk.
    conn.execute("PRAGMA temp_store = MEMORY")


class SqliteStore:
    def __init__(self, connections: ConnectionProvider) -> None:
        self._connections = connections

    def put(self, user_id: str, key: str, value: str) -> bool:
        _check_key(key)
        with _errors(), self._connections.connection(user_id, create=True) as conn:
            assert conn is not None
            # IMMEDIATE takes the write lock up front: no deadlock-prone read-to-write upgrade.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_SCHEMA)
                existed = conn.execute("SELECT 1 FROM records WHERE key = ?", (key,)).fetchone()
                conn.execute(
                    "INSERT INTO records (key, value, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET "
                    "value = excluded.value, updated_at = excluded.updated_at",
                    (key, value, time.time()),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return existed is None

    def get(self, user_id: str, key: str) -> str | None:
        _check_key(key)
        with _errors(), self._connections.connection(user_id, create=False) as conn:
            if conn is None:
                return None
            try:
                row = conn.execute("SELECT value FROM records WHERE key = ?", (key,)).fetchone()
            except sqlite3.OperationalError as exc:
                if _is_missing_table(exc):
                    return None
                raise
            return None if row is None else str(row[0])

    def delete(self, user_id: str, key: str) -> bool:
        _check_key(key)
        with _errors(), self._connections.connection(user_id, create=False) as conn:
            if conn is None:
                return False
            conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = conn.execute("DELETE FROM records WHERE key = ?", (key,))
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if _is_missing_table(exc):
                    return False
                raise
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return cursor.rowcount > 0

    def list_keys(self, user_id: str) -> list[str]:
        with _errors(), self._connections.connection(user_id, create=False) as conn:
            if conn is None:
                return []
            try:
                rows = conn.execute("SELECT key FROM records ORDER BY key").fetchall()
            except sqlite3.OperationalError as exc:
                if _is_missing_table(exc):
                    return []
                raise
            return [str(row[0]) for row in rows]

    def close(self) -> None:
        self._connections.close()


def _check_key(key: str) -> None:
    if not is_valid_key(key):
        raise InvalidIdentifier("invalid key")


def _is_missing_table(exc: sqlite3.OperationalError) -> bool:
    # A database file whose creator died before CREATE TABLE ran holds no records yet.
    return str(exc).startswith("no such table")


def is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) in _BUSY_CODES


def translate_error(exc: sqlite3.Error | OSError) -> StoreError:
    if is_busy(exc):
        return StoreBusy("database is locked by another writer")
    log.warning("storage error: %s", exc)
    return StoreError("storage error")


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (StoreError, InvalidIdentifier):
        raise
    except (sqlite3.Error, OSError) as exc:
        raise translate_error(exc) from exc

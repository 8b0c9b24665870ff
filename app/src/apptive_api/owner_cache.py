"""The owner cache: a container keeps the databases of the users it serves open.

Why: HAProxy pins each user to one container (`stick on` the user id), so a database normally has
a single writer. Opening it on GlusterFS costs several network round trips per request (lookup,
open, lock, header read, journal create and delete); a connection kept open in
`locking_mode=EXCLUSIVE` serves reads from SQLite's page cache and pays one journal round per
write (still `journal_mode=DELETE`, `synchronous=FULL`).

Why the page cache cannot go stale: in EXCLUSIVE locking mode SQLite takes the file lock on the
first read (SHARED) or write (EXCLUSIVE) and keeps it until the connection closes. While we hold
even SHARED, no other process can commit to the file (a writer needs EXCLUSIVE, which waits for
every SHARED lock to go), so the pages we cached are the pages on disk. Closing drops the lock
and the cache together; the next open takes the lock afresh and SQLite re-reads the file.

Handover: a connection closes, releasing its lock, when it has been idle for the idle timeout
(the sweeper thread), when it is the least recently used one and the cache is full, after any
error (so a stuck lock or a dead FUSE file handle never stays), and on shutdown. A new owner
(failover, drain, rollout, a moved stick entry) waits for the lock up to the busy timeout, which
Config enforces to be longer than idle timeout + one sweep: once the old owner stops receiving
requests for the user, the new one gets the lock within that time. If the old owner keeps
receiving them (broken stickiness), the new one answers 503 `store_busy` with Retry-After.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from apptive_api.readiness import Readiness, check_data_dir
from apptive_api.store import (
    StoreBusy,
    StoreUnavailable,
    connect,
    is_busy,
    make_shard_dirs,
    set_pragmas,
    shard_path,
    translate_error,
)

log = logging.getLogger("apptive_api.owner_cache")

# SQLite's default page cache is 2 MiB per connection: 256 of them could pass the container's
# 256 MiB memory limit. Typical user databases are a few pages, so this bound rarely bites.
PAGE_CACHE_KIB = 256
# Any read takes the SHARED lock; in EXCLUSIVE mode it is then kept.
_LOCK_PROBE = "SELECT count(*) FROM sqlite_master"


@dataclass(frozen=True, slots=True)
class CacheStats:
    capacity: int
    open_connections: int
    hits: int
    misses: int
    evictions: int
    idle_closes: int
    error_closes: int
    busy_waits: int
    busy_timeouts: int


@dataclass(slots=True)
class _Counts:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    idle_closes: int = 0
    error_closes: int = 0
    busy_waits: int = 0
    busy_timeouts: int = 0


@dataclass(eq=False, slots=True)
class _Entry:
    path: Path
    # Held while a request uses the connection: never two threads on one connection.
    lock: threading.Lock = field(default_factory=threading.Lock)
    conn: sqlite3.Connection | None = None
    last_used: float = field(default_factory=time.monotonic)
    # Requests using or waiting for this entry (changed under the cache's mutex). A pinned entry
    # is never closed by the sweeper or the evictor.
    pins: int = 0


class OwnerConnections:
    """A ConnectionProvider that keeps up to `capacity` user databases open, LRU order."""

    def __init__(
        self,
        data_dir: Path,
        busy_timeout_ms: int,
        *,
        capacity: int,
        idle_timeout_s: float,
        sweep_interval_s: float,
        readiness: Callable[[Path], Readiness] = check_data_dir,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._data_dir = data_dir
        self._busy_timeout_ms = busy_timeout_ms
        self._capacity = capacity
        self._idle_timeout_s = idle_timeout_s
        self._sweep_interval_s = sweep_interval_s
        self._readiness = readiness
        # Guards the dict, the pins, the counters and the closed flag; never held during I/O.
        self._mutex = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._counts = _Counts()
        self._closed = False
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    @contextlib.contextmanager
    def connection(self, user_id: str, *, create: bool) -> Iterator[sqlite3.Connection | None]:
        path = shard_path(self._data_dir, user_id)
        # Every call, hit or not, as the per-request provider does: an open connection keeps
        # working on the old mount, but a journal or a new database must never land on the
        # empty mount point of a volume that went away.
        state = self._readiness(self._data_dir)
        if not state.ready:
            raise StoreUnavailable(state.reason)
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        entry = self._checkout(user_id, path)
        try:
            # Requests for one user queue here, bounded like a wait for SQLite's lock.
            if not entry.lock.acquire(timeout=self._busy_timeout_ms / 1000):
                self._count("busy_timeouts")
                raise StoreBusy("database in use by other requests for longer than the timeout")
            try:
                conn = self._ensure_open(entry, create=create, deadline=deadline)
                try:
                    yield conn
                except BaseException as exc:
                    if is_busy(exc):
                        self._count("busy_timeouts")
                    # Locks held, a half-done transaction, a dead FUSE file handle: after a
                    # failure the connection's state is unknown. Closing releases the lock, so a
                    # busy standoff between two owners cannot last either.
                    self._discard(entry)
                    raise
                if conn is not None and conn.in_transaction:
                    self._discard(entry)
            finally:
                entry.last_used = time.monotonic()
                entry.lock.release()
        finally:
            self._checkin(user_id, entry)

    def sweep(self, now: float | None = None) -> int:
        """Close connections idle for the idle timeout; returns how many were closed."""
        now = time.monotonic() if now is None else now
        with self._mutex:
            idle = [
                user_id
                for user_id, entry in self._entries.items()
                if entry.pins == 0 and now - entry.last_used >= self._idle_timeout_s
            ]
            victims = [self._entries.pop(user_id) for user_id in idle]
        # Closed outside the mutex: a close on a slow mount must not stall every request.
        # Counted after the close, so idle_closes never runs ahead of the released locks.
        closed = _close_all(victims)
        with self._mutex:
            self._counts.idle_closes += closed
        return len(victims)

    def close(self) -> None:
        """Close every connection (app shutdown). Ones in use close when their request ends."""
        with self._mutex:
            self._closed = True
            victims = [entry for entry in self._entries.values() if entry.pins == 0]
            self._entries.clear()
        self._stop.set()
        _close_all(victims)
        if self._sweeper is not None and self._sweeper is not threading.current_thread():
            self._sweeper.join(timeout=5)

    def stats(self) -> CacheStats:
        with self._mutex:
            c = self._counts
            return CacheStats(
                capacity=self._capacity,
                open_connections=sum(1 for e in self._entries.values() if e.conn is not None),
                hits=c.hits,
                misses=c.misses,
                evictions=c.evictions,
                idle_closes=c.idle_closes,
                error_closes=c.error_closes,
                busy_waits=c.busy_waits,
                busy_timeouts=c.busy_timeouts,
            )

    def _checkout(self, user_id: str, path: Path) -> _Entry:
        with self._mutex:
            if self._closed:
                raise StoreUnavailable("the service is shutting down")
            entry = self._entries.get(user_id)
            if entry is None:
                entry = self._entries[user_id] = _Entry(path)
                self._start_sweeper()
            else:
                self._entries.move_to_end(user_id)
            entry.pins += 1
            # Make room before this request opens its own: the bound counts open files.
            victims = self._over_capacity()
        _close_all(victims)
        return entry

    def _checkin(self, user_id: str, entry: _Entry) -> None:
        victims: list[_Entry] = []
        with self._mutex:
            entry.pins -= 1
            if entry.pins == 0:
                if self._closed:
                    # close() left this one to its last user.
                    victims.append(entry)
                elif entry.conn is None and self._entries.get(user_id) is entry:
                    # Nothing open (unknown user, failed open, error): nothing to keep.
                    del self._entries[user_id]
            victims += self._over_capacity()
        _close_all(victims)

    def _over_capacity(self) -> list[_Entry]:
        """Unpinned entries to evict, least recently used first. Caller holds the mutex."""
        excess = len(self._entries) - self._capacity
        if excess <= 0:
            return []
        # Pinned entries are skipped: with more users in flight than the capacity, the cache
        # runs over for as long as they are, and shrinks back at their check-in.
        lru = [u for u, e in self._entries.items() if e.pins == 0][:excess]
        victims = [self._entries.pop(user_id) for user_id in lru]
        self._counts.evictions += sum(1 for e in victims if e.conn is not None)
        return victims

    def _ensure_open(
        self, entry: _Entry, *, create: bool, deadline: float
    ) -> sqlite3.Connection | None:
        """The entry's connection, opened if needed. Caller holds entry.lock."""
        if self._closed:
            raise StoreUnavailable("the service is shutting down")
        if entry.conn is not None:
            self._count("hits")
            return entry.conn
        if not entry.path.exists():
            if not create:
                return None
            make_shard_dirs(self._data_dir, entry.path)
        conn = connect(
            entry.path, create=create, busy_timeout_ms=self._busy_timeout_ms, any_thread=True
        )
        try:
            # Before the first read: the lock taken by that read is the one kept.
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            self._take_lock(conn, deadline)
            set_pragmas(conn)
            conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                if is_busy(exc):
                    self._count("busy_timeouts")
                raise translate_error(exc) from exc
            raise
        entry.conn = conn
        self._count("misses")
        return conn

    def _take_lock(self, conn: sqlite3.Connection, deadline: float) -> None:
        """Take the SHARED lock, counting the opens that had to wait for another owner."""
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            try:
                conn.execute(_LOCK_PROBE).fetchall()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                # Another process holds the lock: typically the previous owner, whose idle
                # close is at most the idle timeout away. Wait for it within our deadline.
                self._count("busy_waits")
                remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
                conn.execute(f"PRAGMA busy_timeout = {remaining_ms}")
                conn.execute(_LOCK_PROBE).fetchall()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")

    def _discard(self, entry: _Entry) -> None:
        """Close the entry's connection. Caller holds entry.lock."""
        if entry.conn is not None:
            self._count("error_closes")
            _close_quietly(entry.conn)
            entry.conn = None

    def _count(self, name: str) -> None:
        with self._mutex:
            setattr(self._counts, name, getattr(self._counts, name) + 1)

    def _start_sweeper(self) -> None:
        """Started on first use, so apps built and never served (tests) start no thread."""
        if self._sweeper is None:
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name="apptive-owner-cache-sweeper", daemon=True
            )
            self._sweeper.start()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self._sweep_interval_s):
            try:
                self.sweep()
            except Exception:  # the sweeper must outlive any one bad close
                log.exception("owner cache sweep failed")


def _close_all(entries: list[_Entry]) -> int:
    """Close connections of entries nobody else can reach any more (removed and unpinned).

    Returns how many connections were open.
    """
    closed = 0
    for entry in entries:
        if entry.conn is not None:
            _close_quietly(entry.conn)
            entry.conn = None
            closed += 1
    return closed


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error as exc:
        # The lock goes with the file descriptor anyway; nothing else to do.
        log.warning("closing a cached database failed: %s", exc)

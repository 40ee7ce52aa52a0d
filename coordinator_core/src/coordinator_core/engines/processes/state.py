"""How a worker process reads committed state: its own read-only SQLite connection.

One read through a pipe round trip to the parent costs two process wake-ups, many times a
SQLite read (``bench/bench_parallel.py``, "ctx.state_get" rows). So when the parent's store is the
embedded ``SqliteStore``, each worker opens the same database file read-only (WAL mode lets
readers in other processes see every committed transaction without blocking the writer) and
runs the store's own state query. For any other store (``MemoryStore`` lives in the parent's
memory) the worker falls back to the round trip. Either way the worker never writes: effects
still commit in the parent, through its one store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from coordinator_core.store import SqliteStore

#: The state query of ``SqliteStore.state_get``; the store's tests and ours pin both.
STATE_QUERY = "SELECT value FROM state WHERE resource_id = ? AND key = ?"


def state_source(coordinator: Any) -> tuple[str, ...]:
    """What a worker should read state from: ``("sqlite", path, busy_timeout)`` for the
    embedded store, else ``("parent",)`` (a round trip per read)."""
    store = coordinator.store
    if isinstance(store, SqliteStore):
        try:
            busy = float(coordinator.config.section("store").busy_timeout)
        except KeyError:
            busy = 5.0
        return ("sqlite", str(store.path), str(busy))
    return ("parent",)


class SqliteStateReader:
    """A worker's read-only connection to the parent's database."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        # mode=ro: the worker cannot write even by mistake; query_only guards the rest.
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=busy_timeout,
                                     isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA query_only = 1")

    def reader(self, resource_id: str) -> Callable[[bytes], bytes | None]:
        execute = self._conn.execute

        def state_get(key: bytes) -> bytes | None:
            # fetchall, never fetchone: an unfinished statement would pin an old snapshot.
            rows = execute(STATE_QUERY, (resource_id, key)).fetchall()
            return bytes(rows[0][0]) if rows else None

        return state_get

    def close(self) -> None:
        self._conn.close()


def open_reader(source: tuple[str, ...]) -> SqliteStateReader | None:
    """The worker's reader for ``source``, or None to read through the parent."""
    if source[0] == "sqlite":
        return SqliteStateReader(source[1], float(source[2]))
    return None

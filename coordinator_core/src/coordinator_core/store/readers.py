"""Per-thread read connections of a ``SqliteStore``.

Reads run on a connection per thread: ``state_get`` is called from engine host functions on
the hot path, and WAL readers never wait for the writer. A thread's connection closes when
the thread ends (a server starting a thread per request must not leak file descriptors);
``close()`` closes the ones still alive.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from pathlib import Path

from coordinator_core.store.schema import connect
from coordinator_hookspecs import InvalidRequest


class ReadConnections:
    """Hands each thread its own read-only connection to one database file."""

    def __init__(self, path: Path, *, durability: str, busy_timeout: float) -> None:
        self._path = path
        self._durability = durability
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._holders: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> sqlite3.Connection:
        """This thread's connection, opened on its first read."""
        try:
            conn: sqlite3.Connection = self._local.conn
            return conn
        except AttributeError:
            if self._closed:
                raise InvalidRequest("the store is closed") from None
            conn = connect(self._path, durability=self._durability,
                           busy_timeout=self._busy_timeout, readonly=True)
            holder = _Reader(conn)
            with self._lock:
                self._holders.add(holder)
            self._local.conn, self._local.holder = conn, holder
            return conn

    def __len__(self) -> int:
        """Connections open now (each thread still alive that has read)."""
        return len(self._holders)

    def close(self) -> None:
        """Close every thread's connection still open; later reads are refused."""
        self._closed = True
        with self._lock:
            holders = list(self._holders)
        for holder in holders:
            holder.conn.close()


class _Reader:
    """Owns one thread's read connection. The thread-local holds the only strong reference,
    so the connection closes when its thread ends."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        try:
            self.conn.close()
        except Exception:  # interpreter shutdown: the module may be half torn down
            pass

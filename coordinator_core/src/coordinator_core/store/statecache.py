"""Committed state kept in memory between executions, safe across processes.

Why: an execution's ``storage_get`` is an SQLite read, and after every commit SQLite drops
the reader's page cache, so each read walks the B-tree from the WAL again, a cost that shows
in every execution of a contract that reads its state (bench/results.md). The values an
execution commits are what the next execution of the resource reads, unless something else
wrote in between.

How "something else wrote" is seen: every write of a resource's state, by any process on
the data directory, puts a fresh *stamp* into the resource's slot of
``<data dir>/state.stamps`` (a small file every process maps into memory) before its
statement runs, inside its SQLite write transaction, so stamps are put in the order the
writes commit. A stamp is never put twice, so once a slot moves on it never comes back.

- Only a commit creates a cache entry: after this process's transaction that wrote the
  resource has committed, its written values are cached under the stamp it put. (If the
  entry it finds is still under the stamp that one replaced, nothing else was written in
  between and the entry's other values are kept.)
- A cached value is used only while the slot still holds the entry's stamp: one 8-byte read
  of shared memory instead of an SQL query.
- A value read from SQLite joins an existing entry only if the slot held the entry's stamp
  both before and after the read; a read never creates an entry. So a value read while
  another writer's transaction was open (its stamp already put) is never cached.

None of this depends on the state lock (``locks.py``): the lock keeps executions of one
resource from losing each other's updates; the stamps keep the cache from serving a value
that is no longer the committed one. Two resources sharing a slot only invalidate each other
more often. Writes made to ``coordinator.db`` with other tools are not seen (docs/storage.md).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

#: Slots of the stamps file (8 bytes each: 512 KiB, sparse on disk).
SLOTS = 1 << 16
#: Cached values (all resources) before the cache starts over.
MAX_VALUES = 100_000
#: Cached key + value bytes (all resources) before the cache starts over.
MAX_BYTES = 64 << 20

_MISSING = object()
Reader = Callable[[str, bytes], "bytes | None"]


class Stamps:
    """The shared stamps file: one 64-bit stamp per slot, read and written in place."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < SLOTS * 8:
                os.ftruncate(fd, SLOTS * 8)
            self._map = mmap.mmap(fd, SLOTS * 8, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self._words = memoryview(self._map).cast("Q")
        # Stamps unique across processes: a random 64-bit start, then counting (a forked
        # child starts again from a random point of its own: see _reseed_after_fork).
        self._next = int.from_bytes(os.urandom(8), "little")
        self._lock = threading.Lock()  # one stamp at a time in this process
        self._slots: dict[str, int] = {}
        _OPEN.add(self)

    def slot(self, resource_id: str) -> int:
        slot = self._slots.get(resource_id)
        if slot is None:
            digest = hashlib.sha256(resource_id.encode("utf-8", "replace")).digest()
            slot = self._slots[resource_id] = int.from_bytes(digest[:8], "big") % SLOTS
        return slot

    def read(self, slot: int) -> int:
        return int(self._words[slot])

    def stamp(self, slot: int) -> tuple[int, int]:
        """Put a fresh stamp into ``slot``; returns (the stamp it replaced, the new one).
        Called inside the writer's SQLite write transaction, which orders it with every
        other process's stamps."""
        with self._lock:
            self._next = (self._next + 1) & 0xFFFF_FFFF_FFFF_FFFF or 1
            new = self._next
            words = self._words
            previous = int(words[slot])
            words[slot] = new
        return previous, new

    def close(self) -> None:
        self._words.release()
        self._map.close()


_OPEN: weakref.WeakSet[Stamps] = weakref.WeakSet()


def _reseed_after_fork() -> None:
    """A forked child must not put the stamps its parent goes on putting."""
    for stamps in list(_OPEN):
        stamps._next = int.from_bytes(os.urandom(8), "little")
        stamps._lock = threading.Lock()


os.register_at_fork(after_in_child=_reseed_after_fork)


class _Entry:
    __slots__ = ("size", "stamp", "values")

    def __init__(self, stamp: int) -> None:
        self.stamp = stamp
        self.values: dict[bytes, bytes | None] = {}
        self.size = 0  # key + value bytes held


class StateCache:
    """Committed values of the resources this process writes (see the module docstring).

    ``reader`` serves an execution's ``state_get``; ``committed`` is called by the store
    after a transaction that wrote state has committed. A cache hit takes no lock; every
    change of an entry happens under ``_lock`` and moves the entry's stamp last, so a reader
    never sees new values under an old stamp or old values under a new one."""

    def __init__(self, stamps: Stamps, read: Reader) -> None:
        self.stamps = stamps
        self._read = read  # the uncached read (SQLite)
        self._entries: dict[str, _Entry] = {}
        self._values = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self._readers: dict[str, Callable[[bytes], bytes | None]] = {}

    def reader(self, resource_id: str) -> Callable[[bytes], bytes | None]:
        """``ExecutionContext.state_get`` of an execution of ``resource_id`` (one function
        per resource, made once: it holds no state of its own)."""
        get = self._readers.get(resource_id)
        if get is None:
            get = self._readers.setdefault(resource_id, self._make_reader(resource_id))
        return get

    def _make_reader(self, resource_id: str) -> Callable[[bytes], bytes | None]:
        entries, read, lock = self._entries, self._read, self._lock
        words = self.stamps._words
        slot = self.stamps.slot(resource_id)

        def get(key: bytes) -> bytes | None:
            if type(key) is not bytes:
                key = bytes(key)
            stamp = words[slot]
            entry = entries.get(resource_id)
            if entry is None or entry.stamp != stamp:  # nothing cached, or written since
                return read(resource_id, key)
            value = entry.values.get(key, _MISSING)
            if value is not _MISSING:
                return value  # type: ignore[return-value]
            value = read(resource_id, key)
            with lock:  # no write began during the read, and the entry is still that stamp's
                if words[slot] == stamp and entries.get(resource_id) is entry \
                        and entry.stamp == stamp:
                    self._keep(entry, key, value)
            return value

        return get

    def committed(self, resource_id: str, previous: int, stamp: int,
                  writes: dict[bytes, bytes | None]) -> None:
        """This process committed ``writes`` of ``resource_id`` in a transaction that put
        ``stamp`` (replacing ``previous``) before writing: they are the committed values."""
        with self._lock:
            found = self._entries.get(resource_id)
            if found is not None and found.stamp == previous:
                entry, fresh = found, False  # nothing else written since: its values hold
            else:  # someone else wrote meanwhile (or nothing was cached)
                if found is not None:
                    self._drop(found)
                entry, fresh = _Entry(previous), True  # published below, once complete
            for key, value in writes.items():  # under the old stamp: no reader uses it now
                if not self._keep(entry, key, value):
                    return
            entry.stamp = stamp
            if fresh:
                self._entries[resource_id] = entry

    def _keep(self, entry: _Entry, key: bytes, value: bytes | None) -> bool:
        """Put one value into ``entry``; False if the cache is full (it is then emptied)."""
        values = entry.values
        old = values.get(key, _MISSING)
        size = len(key) + (len(value) if value is not None else 0)
        if old is _MISSING:
            self._values += 1
        else:
            size -= len(key) + (len(old) if old is not None else 0)  # type: ignore[arg-type]
        entry.size += size
        self._bytes += size
        values[key] = value
        if self._values > MAX_VALUES or self._bytes > MAX_BYTES:
            self.clear()  # start over rather than track recency on every read
            return False
        return True

    def _drop(self, entry: _Entry) -> None:
        self._values -= len(entry.values)
        self._bytes -= entry.size

    def clear(self) -> None:
        """Drop everything (called with ``_lock`` held, or when nothing else runs)."""
        self._entries.clear()
        self._values = self._bytes = 0

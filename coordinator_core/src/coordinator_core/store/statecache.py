"""Committed state kept in memory between executions, safe across processes.

Why: an execution's ``storage_get`` is an SQLite read, and after every commit SQLite drops
the reader's page cache, so each read walks the B-tree from the WAL again (measured ~12 us
per read inside the pipeline, ~30 us per execution of issue 3's counter contract once its
cache effects are counted). Executions of one resource are already serialised from their
first read to their commit by the resource's state lock (``locks.py``), so the values the
last execution committed are the values the next one reads, unless something else wrote.

How "something else wrote" is seen: every write of a resource's state, by any process on
the data directory, first puts a fresh *stamp* into the resource's slot of
``<data dir>/state.stamps``, a small file every process maps into memory. A cached value is
used only while its resource's slot still holds the stamp it was cached under: one 8-byte
read from shared memory instead of an SQL query.

- A reader (it holds the resource's state lock) reads the slot, then SQLite, then the slot
  again, and caches the value only if the slot did not change meanwhile.
- A writer that holds the lock through its commit (the pipeline's own executions: the store
  is told through ``finish(exclusive=...)``) stamps before its first write; after the
  commit its written values join the cache under that stamp. No one else could have
  written in between without stamping after it.
- Any other writer (an effect processor writing another resource's state) stamps before it
  writes and again after its commit or rollback, so a reader that cached the old value in
  between is invalidated. Only a process killed between that commit and its second stamp
  can leave another process's cache stale, and only for such unlocked writes; writing the
  database with other tools is not coordinated at all (see docs/storage.md).

Two resources sharing a slot only invalidate each other more often.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
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
        # Stamps unique across processes: a random 64-bit start, then counting.
        self._next = int.from_bytes(os.urandom(8), "little")
        self._lock = threading.Lock()
        self._slots: dict[str, int] = {}

    def slot(self, resource_id: str) -> int:
        slot = self._slots.get(resource_id)
        if slot is None:
            digest = hashlib.sha256(resource_id.encode("utf-8", "replace")).digest()
            slot = self._slots[resource_id] = int.from_bytes(digest[:8], "big") % SLOTS
        return slot

    def read(self, slot: int) -> int:
        return int(self._words[slot])

    def stamp(self, slot: int) -> tuple[int, int]:
        """Put a fresh stamp into ``slot``; returns (the stamp it replaced, the new one)."""
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


class _Entry:
    __slots__ = ("stamp", "values")

    def __init__(self, stamp: int, values: dict[bytes, bytes | None]) -> None:
        self.stamp = stamp
        self.values = values


class StateCache:
    """Committed values of the resources this process executes (see the module docstring).

    ``reader`` serves an execution holding the resource's state lock; ``committed`` and
    ``written`` are called by the store after a commit that wrote state."""

    def __init__(self, stamps: Stamps, read: Reader) -> None:
        self.stamps = stamps
        self._read = read  # the uncached read (SQLite)
        self._entries: dict[str, _Entry] = {}
        self._values = 0
        self._bytes = 0

    def reader(self, resource_id: str) -> Callable[[bytes], bytes | None]:
        """``ExecutionContext.state_get`` for an execution that holds ``resource_id``'s
        state lock."""
        entries, stamps, read = self._entries, self.stamps, self._read
        slot = stamps.slot(resource_id)
        words = stamps._words

        def get(key: bytes) -> bytes | None:
            stamp = words[slot]
            entry = entries.get(resource_id)
            if entry is not None and entry.stamp == stamp:
                value = entry.values.get(key, _MISSING)
                if value is not _MISSING:
                    return value  # type: ignore[return-value]
            value = read(resource_id, key)
            if words[slot] == stamp:  # no write began meanwhile: the value is current
                if entry is None or entry.stamp != stamp:
                    entry = entries[resource_id] = _Entry(stamp, {})
                self._keep(entry, key, value)
            return value

        return get

    def _keep(self, entry: _Entry, key: bytes, value: bytes | None) -> None:
        self._values += 1
        self._bytes += len(key) + (len(value) if value is not None else 0)
        if self._values > MAX_VALUES or self._bytes > MAX_BYTES:
            self.clear()  # start over rather than track recency on every read
            return
        entry.values[key] = value

    def committed(self, resource_id: str, previous: int, stamp: int,
                  writes: dict[bytes, bytes | None]) -> None:
        """``writes`` of ``resource_id`` are committed by a writer that held its state lock
        and put ``stamp`` (replacing ``previous``) before writing: they join the cache."""
        entry = self._entries.get(resource_id)
        if entry is None or entry.stamp != previous:
            entry = self._entries[resource_id] = _Entry(stamp, {})
        entry.stamp = stamp
        for key, value in writes.items():
            self._keep(entry, key, value)

    def forget(self, resource_id: str) -> None:
        self._entries.pop(resource_id, None)

    def clear(self) -> None:
        self._entries.clear()
        self._values = self._bytes = 0

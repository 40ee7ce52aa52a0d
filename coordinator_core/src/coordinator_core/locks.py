"""Per-resource state locks, across threads and across processes sharing one data directory.

Engines read committed state and return absolute writes, so two executions of one contract
must not overlap from their first read to their commit, whether they run in this process or
in another one on the same data directory (a service and a CLI ``exec``, two services).

In-process, a ``threading.Lock`` per resource. Across processes, a POSIX record lock
(``fcntl.lockf``) on one byte of ``<data dir>/state.lock`` chosen by the resource id: one
file descriptor for every resource, released by the kernel if the process dies. Two ids
hashing to the same byte only wait for each other. The file lock is taken only after the
thread lock, because record locks belong to the process, not to the thread.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path

#: Bytes of the lock file resources are spread over.
SLOTS = 1 << 20
_POLL = 0.001  # seconds between tries of a file lock another process holds


class ResourceLocks:
    """Exclusive per-resource locks; ``path`` None keeps them within this process."""

    def __init__(self, path: Path | None = None) -> None:
        self._threads: dict[str, threading.Lock] = {}
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600) if path is not None else None
        self._slots: dict[str, int] = {}

    def acquire(self, resource_id: str, timeout: float) -> bool:
        """Take the lock of ``resource_id`` within ``timeout`` seconds (0: try once)."""
        lock = self._threads.get(resource_id)
        if lock is None:
            lock = self._threads.setdefault(resource_id, threading.Lock())
        if not lock.acquire(False) and not (timeout > 0 and lock.acquire(timeout=timeout)):
            return False
        if self._fd is None or self._lock_file(resource_id, time.monotonic() + timeout):
            return True
        lock.release()
        return False

    def release(self, resource_id: str) -> None:
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self._slot(resource_id))
        self._threads[resource_id].release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _lock_file(self, resource_id: str, deadline: float) -> bool:
        assert self._fd is not None
        offset = self._slot(resource_id)
        while True:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                return True
            except OSError:  # EAGAIN / EACCES: another process holds it
                if time.monotonic() >= deadline:
                    return False
                time.sleep(_POLL)

    def _slot(self, resource_id: str) -> int:
        slot = self._slots.get(resource_id)
        if slot is None:
            digest = hashlib.sha256(resource_id.encode()).digest()
            slot = self._slots[resource_id] = int.from_bytes(digest[:8], "big") % SLOTS
        return slot

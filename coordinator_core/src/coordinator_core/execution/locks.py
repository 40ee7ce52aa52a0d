"""Per-resource state locks, across threads and across processes sharing one data directory.

Engines read committed state and return absolute writes, so two executions of one contract
must not overlap from their first read to their commit, whether they run in this process or
in another one on the same data directory (a service and a CLI ``exec``, two services).

In-process, a ``threading.Lock`` per resource. Across processes, a POSIX record lock
(``fcntl.lockf``) on one byte of ``<data dir>/state.lock`` chosen by the resource id: one
file descriptor for every resource, released by the kernel if the process dies. Two ids
hashing to the same byte only wait for each other. The file lock is taken only after the
thread lock, because record locks belong to the process, not to the thread: for the same
reason the process counts its holders of each byte and unlocks it only when the last one
releases (two resources of one byte held at once, the first released, must not let another
process take the second).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

#: Bytes of the lock file resources are spread over.
SLOTS = 1 << 20
_POLL = 0.001  # seconds between tries of a file lock another process holds


class ResourceLocks:
    """Exclusive per-resource locks; ``path`` None keeps them within this process. Use
    ``shared_locks`` to get the process's one instance of a data directory."""

    def __init__(self, path: Path | None = None) -> None:
        self._key: str | None = None  # set when shared by shared_locks()
        self._threads: dict[str, threading.Lock] = {}
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600) if path is not None else None
        self._slots: dict[str, int] = {}
        self._holders: dict[int, int] = {}  # byte -> resources of this process holding it
        self._file_lock = threading.Lock()  # guards _holders, the lockf calls and close
        self._closed = False

    def acquire(self, resource_id: str, timeout: float) -> bool:
        """Take the lock of ``resource_id`` within ``timeout`` seconds (0: try once)."""
        if self._closed:
            raise RuntimeError("the state locks are closed")
        lock = self._threads.get(resource_id)
        if lock is None:
            lock = self._threads.setdefault(resource_id, threading.Lock())
        if lock.acquire(False):
            deadline = None  # uncontended: no clock read
        else:
            deadline = time.monotonic() + timeout
            if not (timeout > 0 and lock.acquire(timeout=timeout)):
                return False
        if self._fd is None or self._lock_file(
                resource_id, deadline if deadline is not None else time.monotonic() + timeout):
            return True
        lock.release()
        return False

    def release(self, resource_id: str) -> None:
        lock = self._threads.get(resource_id)
        if lock is None or not lock.locked():  # checked first: never unlock another's byte
            raise RuntimeError(f"release of state lock {resource_id[:12]}, which is not held")
        if self._fd is not None:
            offset = self._slot(resource_id)
            with self._file_lock:
                left = self._holders[offset] - 1
                if left:
                    self._holders[offset] = left
                else:
                    del self._holders[offset]
                    fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)
        lock.release()

    def close(self) -> None:
        if self._key is not None:  # shared: the last user closes it
            with _SHARED_LOCK:
                users = _SHARED[self._key][1] - 1
                if users:
                    _SHARED[self._key][1] = users
                    return
                del _SHARED[self._key]
        with self._file_lock:  # not under a lockf call of another thread
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _lock_file(self, resource_id: str, deadline: float) -> bool:
        offset = self._slot(resource_id)
        while True:
            with self._file_lock:
                if self._fd is None:
                    raise RuntimeError("the state locks are closed")
                held = self._holders.get(offset, 0)
                try:
                    if not held:  # this process does not hold the byte yet
                        fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                    self._holders[offset] = held + 1
                    return True
                except OSError:  # EAGAIN / EACCES: another process holds it
                    pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)

    def _slot(self, resource_id: str) -> int:
        slot = self._slots.get(resource_id)
        if slot is None:
            digest = hashlib.sha256(resource_id.encode()).digest()
            slot = self._slots[resource_id] = int.from_bytes(digest[:8], "big") % SLOTS
        return slot


_SHARED: dict[str, list[Any]] = {}  # "device:inode" -> [ResourceLocks, users]
_SHARED_LOCK = threading.Lock()


def shared_locks(path: Path | None) -> ResourceLocks:
    """The one ``ResourceLocks`` of the lock file ``path`` in this process (closed when its
    last user closes it), whatever path reaches the file (symlinks, bind mounts). Record
    locks belong to the process and closing any descriptor of the file drops all of them, so
    two coordinators on one data directory in one process must share the thread locks, the
    byte counts and the descriptor."""
    if path is None:
        return ResourceLocks(None)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # the file itself, however reached
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    key = f"{info.st_dev}:{info.st_ino}"
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is None:
            locks = ResourceLocks(path)
            locks._key = key
            entry = _SHARED[key] = [locks, 0]
        entry[1] += 1
        shared: ResourceLocks = entry[0]
        return shared

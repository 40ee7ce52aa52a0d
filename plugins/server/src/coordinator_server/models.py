"""Models by name and version, as the Open Inference Protocol addresses them.

A model's name is its resource's name; each deploy of new bytes under that name adds a
version, numbered from 1 in deploy order, the newest being the default. A resource without a
name is still reachable by its id (one version). Only resources whose engine recorded an
input/output signature at deploy (``meta["inputs"]``, ``meta["outputs"]``) are models.

The coordinator lists resources but has no look-up by name, so the list is read from the
store and kept for ``ttl`` seconds: a deploy through this process is seen at once
(``forget``), one made by another process within ``ttl``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from coordinator_hookspecs import NotFound, ResourceInfo

FORCED_MIN = 0.05  # an unknown name re-reads the list at most this often (seconds)


def is_model(info: ResourceInfo) -> bool:
    return isinstance(info.meta.get("inputs"), list) and isinstance(info.meta.get("outputs"),
                                                                    list)


class ModelIndex:
    """Resolves ``(name, version)`` to a deployed model's :class:`ResourceInfo`."""

    def __init__(self, coordinator: Any, ttl: float = 1.0) -> None:
        self._coord = coordinator
        self._ttl = ttl
        self._lock = threading.Lock()
        self._by_name: dict[str, list[ResourceInfo]] = {}
        self._by_id: dict[str, ResourceInfo] = {}
        self._read_at = -ttl

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._read_at < (FORCED_MIN if force else self._ttl):
                return
            by_name: dict[str, list[ResourceInfo]] = {}
            by_id: dict[str, ResourceInfo] = {}
            for info in self._coord.resources():
                if is_model(info):
                    by_id[info.id] = info
                    if info.name:
                        by_name.setdefault(info.name, []).append(info)
            for versions in by_name.values():
                versions.sort(key=lambda i: (i.deployed_at, i.id))
            self._by_name, self._by_id, self._read_at = by_name, by_id, now

    def forget(self) -> None:
        """Re-read the list at the next look-up (this process deployed something): without
        it, a look-up right after a deploy could fall inside the forced re-read's pause."""
        with self._lock:
            self._read_at = -self._ttl

    def versions(self, name: str) -> list[ResourceInfo]:
        """Every version of ``name``, oldest first (``NotFound`` if there is none)."""
        self._refresh()
        found = self._by_name.get(name) or ([self._by_id[name]] if name in self._by_id else [])
        if not found:
            self._refresh(force=True)  # perhaps deployed a moment ago
            found = self._by_name.get(name) or (
                [self._by_id[name]] if name in self._by_id else [])
        if not found:
            raise NotFound(f"no model named {name!r}")
        return found

    def get(self, name: str, version: str | None = None) -> tuple[ResourceInfo, str]:
        """The model and its version string; the newest when ``version`` is None."""
        versions = self.versions(name)
        if version is None:
            return versions[-1], str(len(versions))
        if not version.isdigit() or not 1 <= int(version) <= len(versions):
            raise NotFound(f"model {name!r} has no version {version[:40]!r}; it has versions "
                           f"1 to {len(versions)}")
        return versions[int(version) - 1], version

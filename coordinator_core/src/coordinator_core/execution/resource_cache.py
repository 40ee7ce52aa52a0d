"""The pipeline's view of deployed resources: metadata cached per resource id, kept fresh
by polling the store's resources version, and the per-resource readers an execution's
context carries (committed state, code).

Resource metadata changes rarely (an access policy set), but it may change in another
process sharing the data directory (``coordinator policy set`` beside a running service), so
the cache looks at the store's version at most every ``RESOURCES_RECHECK`` seconds: one clock
read per lookup, one indexed read per interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from coordinator_core.services.security.integrator import SecurityIntegrator
from coordinator_core.store.base import Store
from coordinator_hookspecs import InvalidRequest, NotFound, ResourceInfo

#: Seconds between looks at the store's resources version: how soon a resource change made
#: by another process (an access policy set from the CLI) reaches this one's caches.
RESOURCES_RECHECK = 0.1


class ResourceCache:
    """Resource metadata by id, and the readers bound to each resource once."""

    def __init__(self, store: Store, security: SecurityIntegrator) -> None:
        self._store = store
        self._security = security
        self._resources: dict[str, ResourceInfo] = {}
        self._generation = 0  # bumped by forget(): a lookup racing it does not cache
        self._code_loaders: dict[str, Callable[[], bytes]] = {}  # made once per resource
        #: ``state_reader(resource_id)``: the store's committed-state reader of a resource
        self.state_reader = store.state_reader
        self._version = store.resources_version()
        self._checked = time.monotonic()

    def resource(self, resource_id: str) -> ResourceInfo:
        """The resource's metadata (cached); ``NotFound`` if it was never deployed."""
        if type(resource_id) is not str or not resource_id:
            raise InvalidRequest(f"resource_id must be a non-empty string, got {resource_id!r}")
        now = time.monotonic()
        if now >= self._checked + RESOURCES_RECHECK:
            self._refresh(now)
        info = self._resources.get(resource_id)
        if info is None:
            generation = self._generation
            info = self._store.get_resource(resource_id)
            if info is None:
                raise NotFound(f"no resource with id {resource_id!r} is deployed")
            if generation == self._generation:  # else a policy changed while we read: no cache
                self._resources[resource_id] = info
        return info

    def _refresh(self, now: float) -> None:
        """Drop every cached resource and verdict if the store's resources changed since the
        last look (possibly in another process)."""
        self._checked = now
        version = self._store.resources_version()
        if version != self._version:
            self._version = version
            self._generation += 1
            self._resources.clear()
            self._security.invalidate()

    def forget(self, resource_id: str) -> None:
        """Drop cached metadata and verdicts of a resource whose metadata changed."""
        self._generation += 1
        self._resources.pop(resource_id, None)
        self._security.invalidate(resource_id)

    def code_loader(self, resource_id: str) -> Callable[[], bytes]:
        """``ExecutionContext.load_code`` of a resource: reads its code from the store."""
        load = self._code_loaders.get(resource_id)
        if load is None:
            load = self._code_loaders.setdefault(resource_id, _loader(self._store, resource_id))
        return load


def _loader(store: Store, resource_id: str) -> Callable[[], bytes]:
    def load() -> bytes:
        return store.load_code(resource_id)

    return load


"""The coordinator's store: resources, state, events and the hash-chained audit log.

``open_store(config)`` is how the core gets one: a ``MemoryStore`` when the data directory
is the string ``":memory:"``, else a ``SqliteStore`` in ``config.data_dir`` configured by the
``[store]`` section (declared by the built-in plugin ``store/settings.py``).
"""

from __future__ import annotations

from typing import Any

import attrs

from coordinator_core.plugin_host.config import positive
from coordinator_core.store.base import (
    BoundProcessor,
    Finished,
    Store,
    StoreTxn,
    VerifyReport,
)
from coordinator_core.store.memory import MemoryStore
from coordinator_core.store.sqlite import SqliteStore

MEMORY = ":memory:"

#: This package's built-in plugins: (plugin name, module), registered in this order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("store_config", "coordinator_core.store.settings"),
    ("state_processor", "coordinator_core.store.state_processor"),
)



@attrs.frozen
class StoreSettings:
    """The ``[store]`` config section; every field is a ``SqliteStore`` keyword."""

    #: ``normal``: WAL + synchronous=NORMAL, survives a killed process, may lose the last
    #: transactions on power loss. ``full``: synchronous=FULL, an fsync per group commit.
    durability: str = attrs.field(default="normal",
                                  validator=attrs.validators.in_(("normal", "full")))
    #: Seconds a write waits for another process holding the database lock.
    busy_timeout: float = attrs.field(default=5.0, validator=positive)
    #: Most executions committed in one transaction.
    group_commit_max: int = attrs.field(default=256, validator=positive)
    #: Keep guest log lines as events of kind ``log`` (False drops them).
    keep_logs: bool = True
    #: Keep every top-level execution's request, content-addressed beside its audit record,
    #: so ``coordinator replay`` can re-execute the log (docs/replay.md).
    keep_requests: bool = True
    #: Seconds a group-commit leader waits for concurrent executions to join its group, only
    #: while executions are finishing concurrently (0: never wait; at most 0.1).
    commit_delay: float = attrs.field(default=0.0, validator=attrs.validators.and_(
        attrs.validators.ge(0.0), attrs.validators.le(0.1)))


def store_settings(config: Any) -> StoreSettings:
    """The ``[store]`` section of ``config`` (its defaults if that plugin was disabled)."""
    try:
        settings: StoreSettings = config.section("store")
    except KeyError:
        settings = StoreSettings()
    return settings


def open_store(config: Any) -> Store:
    """The store for ``config`` (anything with ``data_dir`` and ``section(name)``)."""
    settings = store_settings(config)
    if str(config.data_dir) == MEMORY:
        return MemoryStore(keep_logs=settings.keep_logs)
    return SqliteStore(config.data_dir, **attrs.asdict(settings))


__all__ = [
    "BUILTIN_PLUGINS",
    "MEMORY",
    "BoundProcessor",
    "Finished",
    "MemoryStore",
    "SqliteStore",
    "Store",
    "StoreSettings",
    "StoreTxn",
    "VerifyReport",
    "open_store",
    "store_settings",
]

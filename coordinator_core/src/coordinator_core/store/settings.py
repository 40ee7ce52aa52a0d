"""Built-in plugin: declares the ``[store]`` config section (durability, group commit).

Example::

    [store]
    durability = "full"        # fsync per group commit (default "normal")
    busy_timeout = 5.0         # seconds to wait for another process's write lock
    group_commit_max = 256     # most executions per transaction
    keep_logs = true           # keep guest logs as events of kind "log"
    keep_requests = true       # keep each top-level request for `coordinator replay`
    commit_delay = 0.0         # seconds a leader waits for concurrent executions to join

or ``COORDINATOR_STORE__DURABILITY=full`` in the environment. See docs/storage.md.
"""

from __future__ import annotations

from coordinator_core.store import StoreSettings
from coordinator_hookspecs import ConfigSection, hookimpl


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name="store", type=StoreSettings)]

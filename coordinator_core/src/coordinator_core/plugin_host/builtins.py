"""The built-in plugins: ordinary plugins, each listed by the package that holds it.

Every layer's package names its own built-ins (``BUILTIN_PLUGINS`` in its ``__init__``, as
conda keeps a ``plugins`` list per built-in subpackage); this module only puts them in the
order they register, before any entry point (datasette's ``DEFAULT_PLUGINS`` habit). A
plugin's name (what ``disable_plugins`` and ``coordinator plugins`` use) is stable across
moves of its module.
"""

from __future__ import annotations

from coordinator_core import cli, engines, host_functions, store
from coordinator_core.services import audit, metrics, quota, security

#: (plugin name, module) of every built-in plugin, in registration order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    *engines.BUILTIN_PLUGINS,
    *store.BUILTIN_PLUGINS,
    *audit.BUILTIN_PLUGINS,
    *metrics.BUILTIN_PLUGINS,
    *security.BUILTIN_PLUGINS,
    *quota.BUILTIN_PLUGINS,
    *host_functions.BUILTIN_PLUGINS,
    *cli.BUILTIN_PLUGINS,
)

#: Built-ins no coordinator opens without (its core settings, the store's settings, the
#: processor of state effects): ``disable_plugins`` naming one is refused.
ESSENTIAL_PLUGINS: frozenset[str] = frozenset({"core_config", "store_config", "state_processor"})

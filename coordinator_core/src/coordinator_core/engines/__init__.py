"""Engine management: the dispatcher (selection, load balancing, health) and the worker
process pool engines may run in."""

#: This package's built-in plugins: (plugin name, module), registered in this order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("core_config", "coordinator_core.engines.settings"),
    ("core_executors", "coordinator_core.engines.executors"),
)

"""HostRegistry of SPEC.md: built-in host functions offered to guests (the hybrid flow)."""

#: This package's built-in plugins: (plugin name, module), registered in this order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("hybrid", "coordinator_core.host_functions.hybrid"),
)

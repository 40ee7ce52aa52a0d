"""SecurityIntegrator and the built-in security validators."""

#: This package's built-in plugins: (plugin name, module), registered in this order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("security_request", "coordinator_core.services.security.request"),
    ("security_access", "coordinator_core.services.security.access"),
    ("security_capabilities", "coordinator_core.services.security.capabilities"),
    ("security_blocklist", "coordinator_core.services.security.blocklist"),
)

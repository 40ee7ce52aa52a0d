"""MetricsCollector: the in-process collector behind ``Coordinator.metrics()``."""

#: This package's built-in plugins: (plugin name, module), registered in this order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("metrics_collector", "coordinator_core.services.metrics.builtin"),
)

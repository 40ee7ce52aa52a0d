"""QuotaManager and the built-in quota policies."""

#: This package's built-in plugins: (plugin name, module), registered in this order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("quota_rate", "coordinator_core.services.quota.rate"),
    ("quota_concurrency", "coordinator_core.services.quota.concurrency"),
    ("quota_fee", "coordinator_core.services.quota.fee"),
)

"""AuditEmitter: audit sinks fed every committed record, and the built-in JSON-lines sink."""

#: This package's built-in plugins: (plugin name, module), registered in this order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("audit_jsonl", "coordinator_core.services.audit.jsonl"),
)

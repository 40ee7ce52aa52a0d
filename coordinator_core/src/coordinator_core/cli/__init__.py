"""The ``coordinator`` command line; its sub-commands are built-in plugins."""

#: This package's built-in plugins: (plugin name, module), registered in this order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("core_commands", "coordinator_core.cli.core_commands"),
    ("quota_commands", "coordinator_core.cli.quota_commands"),
    ("store_commands", "coordinator_core.cli.store_commands"),
    ("roots_commands", "coordinator_core.cli.roots_commands"),
    ("demo", "coordinator_core.cli.demo"),
    ("replay_command", "coordinator_core.cli.replay_command"),
)

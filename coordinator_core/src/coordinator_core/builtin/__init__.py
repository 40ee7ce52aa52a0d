"""Built-in plugins: ordinary plugin modules registered from ``plugins.BUILTIN_PLUGINS``."""

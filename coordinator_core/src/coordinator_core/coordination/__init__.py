"""Interface coordination (SPEC.md's first layer): ExecutionCoordinator and
ResourceCoordinator, the one entry point users call."""

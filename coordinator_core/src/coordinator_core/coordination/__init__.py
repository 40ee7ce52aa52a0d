"""Interface coordination (SPEC.md's first layer): ExecutionCoordinator and
ResourceCoordinator, the one entry point users call."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coordinator_core.coordination.coordinator import Coordinator
    from coordinator_core.plugin_host.config import Config
    from coordinator_hookspecs import CoordinatorConfig, CoordinatorView

    def _what_plugins_get(
        coordinator: Coordinator, config: Config
    ) -> tuple[CoordinatorView, CoordinatorConfig]:
        """Never called: mypy checks here that the coordinator and its config satisfy the
        protocols the hooks hand plugins, so the contract cannot drift from the core."""
        return coordinator, config

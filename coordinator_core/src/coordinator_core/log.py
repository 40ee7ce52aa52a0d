"""The core's logger: loguru's own, imported when the first message is logged.

Importing loguru (it imports asyncio and multiprocessing) is a large share of a
``coordinator`` command's start-up, and ``--help``, ``plugins`` or ``config show`` usually log
nothing. So the core's modules do ``from coordinator_core.log import logger`` and use it as
loguru's ``logger``: the first attribute read imports loguru and copies the attribute (a
method bound to loguru's one logger) onto this stand-in, so every later call costs what a
call on loguru's logger costs. Handlers added with ``from loguru import logger`` see every
message, since there is only that one logger.

An application that configures handlers (the CLI) does it through :func:`configure_on_import`:
the configuration runs right after loguru is imported, by the core or by anyone else (a
plugin importing loguru itself), before its first message is handled.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType

    from loguru import Logger


class _LazyLogger:
    """Forwards to ``loguru.logger``, importing it on first use (see the module docstring)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and introspection probes: not loguru's
            raise AttributeError(name)
        from loguru import logger as real

        value = getattr(real, name)
        setattr(self, name, value)  # found in the instance dict from now on
        return value

    def __repr__(self) -> str:
        return "<coordinator_core.log.logger: loguru's logger, imported on first use>"


if TYPE_CHECKING:
    logger: Logger
else:
    logger = _LazyLogger()


class _ConfigureAfterImport:
    """A ``sys.meta_path`` entry that runs a configuration once loguru's module has run."""

    def __init__(self, configure: Callable[[Logger], None]) -> None:
        self.configure = configure

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != "loguru":
            return None
        _uninstall()  # the other finders locate loguru; this entry has done its part
        spec = importlib.util.find_spec(fullname)
        loader: Any = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module, configure = loader.exec_module, self.configure

        def exec_then_configure(module: ModuleType) -> None:
            exec_module(module)
            configure(module.logger)

        loader.exec_module = exec_then_configure  # this spec's own loader instance
        return spec


def _uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _ConfigureAfterImport)]


def configure_on_import(configure: Callable[[Logger], None]) -> None:
    """Run ``configure(loguru.logger)`` now if loguru is imported, else right after it is;
    a later call replaces a configuration still waiting."""
    _uninstall()
    module = sys.modules.get("loguru")
    if module is not None:
        configure(module.logger)
    else:
        sys.meta_path.insert(0, _ConfigureAfterImport(configure))

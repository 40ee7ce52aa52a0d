"""The execution coordinator: one safe, fast entry point for contracts and models.

from coordinator_core import Coordinator, ExecutionRequest

with Coordinator.open(data_dir="data") as coord:
    rid = coord.deploy(wasm_bytes, resource_type="wasm", capabilities=["storage"])
    result = coord.execute(ExecutionRequest(resource_id=rid, caller="alice"))

The coordinator's own names are imported on first use (PEP 562), so importing a submodule
(the CLI answering ``--help``, a worker process) does not load the whole pipeline.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from coordinator_hookspecs import (
    AccessPolicy,
    CoordinatorError,
    ErrorKind,
    ExecutionRequest,
    ExecutionResult,
    ResourceInfo,
    SimulationResult,
    Status,
)

if TYPE_CHECKING:
    from coordinator_core.coordination.coordinator import Coordinator
    from coordinator_core.execution.handles import ExecutionHandle, ExecutionStatus
    from coordinator_core.plugin_host.config import Config, load_config

#: Public name -> module that defines it, imported when the name is first read.
_LAZY = {
    "Coordinator": "coordinator_core.coordination.coordinator",
    "ExecutionHandle": "coordinator_core.execution.handles",
    "ExecutionStatus": "coordinator_core.execution.handles",
    "Config": "coordinator_core.plugin_host.config",
    "load_config": "coordinator_core.plugin_host.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'coordinator_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AccessPolicy",
    "Config",
    "Coordinator",
    "CoordinatorError",
    "ErrorKind",
    "ExecutionHandle",
    "ExecutionRequest",
    "ExecutionResult",
    "ExecutionStatus",
    "ResourceInfo",
    "SimulationResult",
    "Status",
    "load_config",
]

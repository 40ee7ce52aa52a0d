"""The execution coordinator: one safe, fast entry point for contracts and models.

from coordinator_core import Coordinator, ExecutionRequest

with Coordinator.open(data_dir="data") as coord:
    rid = coord.deploy(wasm_bytes, resource_type="wasm", capabilities=["storage"])
    result = coord.execute(ExecutionRequest(resource_id=rid, caller="alice"))
"""

from coordinator_core.coordination.coordinator import Coordinator, ExecutionHandle, ExecutionStatus
from coordinator_core.plugin_host.config import Config, load_config
from coordinator_hookspecs import (
    AccessPolicy,
    CoordinatorError,
    ErrorKind,
    ExecutionRequest,
    ExecutionResult,
    ResourceInfo,
    Status,
)

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
    "Status",
    "load_config",
]

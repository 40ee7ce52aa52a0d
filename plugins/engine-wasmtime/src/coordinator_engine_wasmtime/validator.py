"""The deploy-time security validator of WASM modules (registered as ``wasmtime-deploy``).

Runs after the engine's ``inspect`` accepted the bytes as a valid module. It refuses, with
``SecurityRejected`` naming the rule: a module over any static limit, an import that is not a
function of module ``env``, an unknown host function, an ungranted capability; and
``InvalidRequest`` for an import whose signature does not match its host function or a
missing ``memory`` export. Finally it compiles the module under the compile-time cap, so a
compile bomb is refused here and the first execution finds the module warm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator_engine_wasmtime.policy import check_imports, check_limits
from coordinator_hookspecs import DeployRequest, ValidatorBase, Verdict

if TYPE_CHECKING:  # the plugin registers the validator before wasmtime is imported
    from coordinator_engine_wasmtime.engine import WasmtimeEngine
    from coordinator_engine_wasmtime.lazy import LazyWasmtimeEngine


class DeployValidator(ValidatorBase):
    """Static limits, import rules and the compile cap, checked at deploy."""

    def __init__(self, engine: WasmtimeEngine | LazyWasmtimeEngine) -> None:
        self.engine = engine

    def validate_deploy(self, deploy: DeployRequest) -> Verdict | None:
        from coordinator_engine_wasmtime.wasmbin import read_module  # not when the plugin loads

        code = deploy.code
        shape = read_module(code)
        check_limits(shape, len(code), self.engine.settings)
        check_imports(shape, self.engine.hosts, deploy.capabilities)
        self.engine.precompile(deploy.resource_id, code)
        return None

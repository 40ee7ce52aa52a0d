"""Engine-level fixtures: a real wasmtime engine, hand-built execution contexts, WAT modules.

``Harness.deploy`` runs the same deploy steps the core runs (canonical_code -> inspect ->
the plugin's deploy validator); ``Harness.run`` builds an ``ExecutionContext`` by hand.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from coordinator_engine_wasmtime.engine import WasmtimeEngine
from coordinator_engine_wasmtime.settings import WasmtimeSettings
from coordinator_engine_wasmtime.validator import DeployValidator
from coordinator_hookspecs import (
    CancelToken,
    CoordinatorError,
    DeployRequest,
    EngineResult,
    ExecutionContext,
    ExecutionRequest,
    ResourceInfo,
)

IO_IMPORTS = """
  (import "env" "input_len" (func $input_len (result i32)))
  (import "env" "input_read" (func $input_read (param i32)))
  (import "env" "output_write" (func $output_write (param i32 i32)))
"""
STORAGE_IMPORTS = """
  (import "env" "storage_get" (func $storage_get (param i32 i32 i32 i32) (result i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "storage_remove" (func $storage_remove (param i32 i32)))
"""


@attrs.define
class Deployed:
    code: bytes
    resource: ResourceInfo


@attrs.define
class Harness:
    engine: WasmtimeEngine
    state: dict[bytes, bytes] = attrs.field(factory=dict)
    #: WAT import preludes the test contracts share.
    IO = IO_IMPORTS
    STORAGE = STORAGE_IMPORTS

    def deploy(self, wat: str, *capabilities: str) -> Deployed:
        code = self.engine.canonical_code(wat, "wat")
        rid = hashlib.sha256(code).hexdigest()
        request = DeployRequest(code=code, resource_type="wasm", resource_id=rid,
                                capabilities=frozenset(capabilities))
        meta = self.engine.inspect(request)
        DeployValidator(self.engine).validate_deploy(attrs.evolve(request, meta=meta))
        return Deployed(code, ResourceInfo(id=rid, type="wasm",
                                           capabilities=frozenset(capabilities), meta=meta))

    def context(self, deployed: Deployed, *, entry: str | None = None, args: Any = None,
                input: Any = b"", caller: str = "alice", fee_limit: int = 10_000_000,
                timeout: float = 5.0, token: CancelToken | None = None) -> ExecutionContext:
        request = ExecutionRequest(resource_id=deployed.resource.id, caller=caller, entry=entry,
                                   input=input, args=args, fee_limit=fee_limit, timeout=timeout)
        return ExecutionContext(
            execution_id="t1", request=request, resource=deployed.resource, fee_limit=fee_limit,
            token=token or CancelToken(time.monotonic() + timeout),
            state_get=self.state.get, load_code=lambda: deployed.code)

    def run(self, deployed: Deployed, **kw: Any) -> EngineResult:
        return self.engine.execute(self.context(deployed, **kw))

    def fail(self, deployed: Deployed, **kw: Any) -> CoordinatorError:
        with pytest.raises(CoordinatorError) as info:
            self.run(deployed, **kw)
        return info.value


@pytest.fixture
def harness_factory(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """``harness_factory(data_dir=None, **settings)``: a harness on an engine of its own
    (default data dir: the test's tmp_path); every engine is closed at teardown."""
    engines: list[WasmtimeEngine] = []

    def make(data_dir: Path | None = None, **settings: Any) -> Harness:
        engine = WasmtimeEngine(WasmtimeSettings(**settings), data_dir or tmp_path)
        engines.append(engine)
        return Harness(engine)

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def harness(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory()

"""The engine the plugin registers builds the real one on first use, and behaves like it.

Registering (every ``coordinator`` command does) imports no wasmtime; the first deploy or
execution builds the engine with the host functions bound before it existed; from then on
``execute`` is the real engine's own bound method.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator_engine_wasmtime.engine import WasmtimeEngine
from coordinator_engine_wasmtime.lazy import LazyWasmtimeEngine
from coordinator_engine_wasmtime.settings import WasmtimeSettings
from coordinator_engine_wasmtime.validator import DeployValidator
from coordinator_hookspecs import (
    CancelToken,
    DeployRequest,
    EngineError,
    ExecutionContext,
    ExecutionRequest,
    HostFunctionRecord,
    ResourceInfo,
)

DOUBLE = """(module
  (import "env" "double" (func $double (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "main") (param i32) (result i32) (call $double (local.get 0))))
"""


def _double(call: object, value: int) -> int:
    return value * 2


DOUBLE_RECORD = HostFunctionRecord(name="double", capability="math", func=_double,
                                   params=("i32",), results=("i32",))


def test_registering_the_plugin_imports_no_wasmtime(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from coordinator_engine_wasmtime import plugin\n"
        "from coordinator_engine_wasmtime.lazy import LazyWasmtimeEngine\n"
        "from coordinator_engine_wasmtime.abi import builtin_host_functions\n"
        "engine = LazyWasmtimeEngine(None, Path(sys.argv[1]))\n"
        "engine.bind_host_functions(builtin_host_functions(engine.settings))\n"
        "assert engine.health() and not engine.holds('x') and len(engine.hosts) == 11\n"
        "engine.close()\n"
        "print(sorted(m for m in ('wasmtime', 'coordinator_engine_wasmtime._capi')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_first_use_builds_the_engine_with_the_host_functions_bound_before(
        tmp_path: Path) -> None:
    engine = LazyWasmtimeEngine(WasmtimeSettings(), tmp_path)
    try:
        engine.bind_host_functions([DOUBLE_RECORD])
        assert not engine.built and set(engine.hosts) == {"double"}
        code = engine.canonical_code(DOUBLE, "wat")  # the first use
        assert engine.built and isinstance(engine.real, WasmtimeEngine)
        assert set(engine.real.hosts) == {"double"}
        rid = hashlib.sha256(code).hexdigest()
        deploy = DeployRequest(code=code, resource_type="wasm", resource_id=rid,
                               capabilities=frozenset({"math"}))
        meta = engine.inspect(deploy)
        DeployValidator(engine).validate_deploy(deploy)  # compiles into the real cache
        assert engine.holds(rid) and engine.cache_stats()["compiles"] == 1
        # The real engine's own method, bound on the stand-in: no indirection per call.
        assert engine.__dict__["execute"] == engine.real.execute
        request = ExecutionRequest(resource_id=rid, caller="alice", args=[21])
        ctx = ExecutionContext(
            execution_id="e1", request=request,
            resource=ResourceInfo(id=rid, type="wasm", capabilities=frozenset({"math"}),
                                  meta=meta),
            fee_limit=1_000_000, token=CancelToken(time.monotonic() + 5),
            state_get={}.get, load_code=lambda: code)
        assert engine.execute(ctx).output == [42]
    finally:
        engine.close()
    assert not engine.health()


def test_duplicate_host_functions_are_refused_when_bound_not_at_first_use(
        tmp_path: Path) -> None:
    engine = LazyWasmtimeEngine(WasmtimeSettings(), tmp_path)
    with pytest.raises(EngineError, match="host functions defined twice: double"):
        engine.bind_host_functions([DOUBLE_RECORD, DOUBLE_RECORD])
    assert not engine.built
    engine.close()


def test_a_closed_engine_is_never_built(tmp_path: Path) -> None:
    engine = LazyWasmtimeEngine(WasmtimeSettings(), tmp_path)
    engine.close()
    assert not engine.health()
    with pytest.raises(EngineError, match="closed"):
        engine.canonical_code(b"\0asm\x01\0\0\0")
    assert not engine.built


def test_warm_up_builds_the_engine_before_the_first_execution(tmp_path: Path) -> None:
    engine = LazyWasmtimeEngine(WasmtimeSettings(), tmp_path)
    assert not engine.built
    engine.warm_up()
    assert engine.built and isinstance(engine.real, WasmtimeEngine)
    engine.close()

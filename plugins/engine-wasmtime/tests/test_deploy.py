"""Deploy-time behaviour: canonical bytes, inspection, the validator's refusals, host binding."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from coordinator_engine_wasmtime.abi import builtin_host_functions
from coordinator_engine_wasmtime.settings import WasmtimeSettings
from coordinator_hookspecs import (
    DeployRequest,
    HostFunctionRecord,
    InternalError,
    InvalidRequest,
    SecurityRejected,
    Trap,
)

STORE = """(module
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "input_len" (func $input_len (result i32)))
  (memory (export "memory") 1)
  (func (export "main")))"""


def _inspect(harness: Any, code: bytes) -> dict[str, Any]:
    rid = hashlib.sha256(code).hexdigest()
    return harness.engine.inspect(DeployRequest(code=code, resource_type="wasm",
                                                resource_id=rid))


def test_canonical_code_passes_bytes_and_converts_wat_only_when_asked(harness: Any) -> None:
    engine = harness.engine
    binary = engine.canonical_code("(module)", "wat")
    assert binary == b"\0asm\x01\0\0\0"
    assert engine.canonical_code(binary) is binary
    assert engine.canonical_code(bytearray(binary)) == binary
    assert engine.canonical_code(b"(module)", "wat") == binary
    with pytest.raises(InvalidRequest, match="code is a str but source_format is 'binary'"):
        engine.canonical_code("(module)")
    with pytest.raises(InvalidRequest, match="invalid WAT source"):
        engine.canonical_code("(module (func", "wat")
    with pytest.raises(InvalidRequest, match="source_format 'text'"):
        engine.canonical_code(binary, "text")
    with pytest.raises(InvalidRequest, match="code must be bytes, got int"):
        engine.canonical_code(7)


@pytest.mark.parametrize(("code", "needle"), [
    (b"", "empty"),
    (b"garbage!", "magic header"),
    (b"\0asm\x0d\0\x01\0", "unsupported version"),
    (b"\0asm\x01\0\0\0\x01\x05\x01\x60", "truncated"),
    (b"\0asm\x01\0\0\0\x01\x85\x80", "truncated"),
    (b"\0asm\x01\0\0\0\x63\x00", "unknown section id 99"),
])
def test_malformed_bytes_are_invalid_requests_saying_what_is_wrong(harness: Any, code: bytes,
                                                                    needle: str) -> None:
    with pytest.raises(InvalidRequest, match="malformed wasm module") as info:
        _inspect(harness, code)
    assert needle in info.value.message


def test_a_truncated_real_module_is_refused(harness: Any) -> None:
    code = harness.engine.canonical_code(STORE, "wat")
    for cut in (9, len(code) // 2, len(code) - 1):
        with pytest.raises(InvalidRequest):
            _inspect(harness, code[:cut])


def test_invalid_code_is_refused_with_wasmtimes_reason(harness: Any) -> None:
    code = bytes.fromhex("0061736d01000000010501600001 7f03020100 0a0401020000".replace(" ", ""))
    with pytest.raises(InvalidRequest, match="invalid wasm module"):
        _inspect(harness, code)


def test_inspect_reports_imports_exports_and_required_capabilities(harness: Any) -> None:
    meta = _inspect(harness, harness.engine.canonical_code(STORE, "wat"))
    assert meta["required_capabilities"] == ["io", "storage"]
    assert [(i["name"], i["params"], i["results"]) for i in meta["imports"]] == [
        ("storage_set", ["i32"] * 4, []), ("input_len", [], ["i32"])]
    assert {"name": "main", "kind": "func", "params": [], "results": []} in meta["exports"]
    assert {"name": "memory", "kind": "memory"} in meta["exports"]
    assert meta["functions"] == 1 and meta["memory_pages"] == 1


def test_an_ungranted_capability_is_refused_naming_import_and_capability(harness: Any) -> None:
    with pytest.raises(SecurityRejected) as info:
        harness.deploy(STORE)
    assert "import env.storage_set needs capability 'storage'" in info.value.message
    assert info.value.source == "wasmtime-deploy"
    harness.deploy(STORE, "storage")


@pytest.mark.parametrize(("imports", "error", "needle"), [
    ('(import "env" "launch_missiles" (func))', SecurityRejected,
     "import env.launch_missiles is not a host function"),
    ('(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))',
     SecurityRejected, "contracts may import only functions from module 'env'"),
    ('(import "env" "mem" (memory 1))', SecurityRejected, "is a memory import"),
    ('(import "env" "g" (global i32))', SecurityRejected, "is a global import"),
    ('(import "env" "input_len" (func (result i64)))', InvalidRequest,
     "has type () -> (i64), but the host function is () -> (i32)"),
])
def test_import_rules(harness: Any, imports: str, error: type, needle: str) -> None:
    memory = "" if "memory" in imports else '(memory (export "memory") 1)'
    with pytest.raises(error) as info:
        harness.deploy(f'(module {imports} {memory} (func (export "main")))',
                       "storage", "events", "log")
    assert needle in info.value.message


def test_pointer_imports_need_an_exported_memory(harness: Any) -> None:
    with pytest.raises(InvalidRequest, match="does not export its memory"):
        harness.deploy('(module (import "env" "input_read" (func (param i32))) (memory 1))')
    harness.deploy('(module (import "env" "input_len" (func (result i32))))')


@pytest.mark.parametrize(("wat", "needle"), [
    ("(module (func (param {p})))".format(p=" ".join(["i32"] * 101)), "params of a function type"),
    ("(module (func (local {p})))".format(p=" ".join(["i64"] * 10_001)), "locals of one function"),
    ("(module (table 10001 funcref))", "initial table size"),
    ('(module (memory (export "memory") 300))', "initial memory in 64 KiB pages"),
])
def test_static_limits(harness: Any, wat: str, needle: str) -> None:
    with pytest.raises(SecurityRejected, match=needle):
        harness.deploy(wat)


def test_oversized_modules_are_refused_before_parsing(harness_factory: Any) -> None:
    harness = harness_factory(max_module_bytes=64)
    with pytest.raises(SecurityRejected, match="max_module_bytes"):
        harness.deploy(STORE, "storage")


def test_non_deterministic_features_are_off(harness: Any) -> None:
    shared = ('(module (memory (export "memory") 1 1 shared) (func (export "main") '
              '(drop (i32.atomic.load (i32.const 0)))))')
    with pytest.raises(SecurityRejected, match="shared and 64-bit memories are not allowed"):
        harness.deploy(shared)  # the static limits see it before wasmtime's validation
    relaxed = ('(module (func (export "main") (result v128) (f32x4.relaxed_madd '
               '(v128.const i64x2 0 0) (v128.const i64x2 0 0) (v128.const i64x2 0 0))))')
    with pytest.raises(InvalidRequest):
        harness.deploy(relaxed)


def _with_plugin_function(harness: Any, func: Any, results: tuple[str, ...] = ("i64",)) -> None:
    records = builtin_host_functions(WasmtimeSettings())
    records.append(HostFunctionRecord(name="double", capability="math", func=func,
                                      params=("i64",), results=results, fee=7))
    harness.engine.bind_host_functions(records)


DOUBLE = """(module
  (import "env" "double" (func $double (param i64) (result i64)))
  (func (export "twice") (param i64) (result i64) (call $double (local.get 0))))"""


def test_host_functions_of_other_plugins_are_bound_and_capability_checked(harness: Any) -> None:
    def double(call: Any, x: int) -> int:
        call.charge(100)
        return x * 2

    _with_plugin_function(harness, double)
    with pytest.raises(SecurityRejected, match="needs capability 'math'"):
        harness.deploy(DOUBLE)
    contract = harness.deploy(DOUBLE, "math")
    assert harness.engine.hosts["double"].capability == "math"
    result = harness.run(contract, entry="twice", args=[21])
    assert result.output == [42] and result.fee_used >= 107


@pytest.mark.parametrize(("func", "error", "needle"), [
    (lambda call, x: 1 / 0, InternalError, "host function double failed: ZeroDivisionError"),
    (lambda call, x: "two", InternalError, "host function double failed: TypeError"),
    (lambda call, x: (_ for _ in ()).throw(Trap("guest asked nonsense")), Trap,
     "guest asked nonsense"),
])
def test_host_function_failures_keep_their_kind_or_become_internal(
        harness: Any, func: Any, error: type, needle: str) -> None:
    _with_plugin_function(harness, func)
    contract = harness.deploy(DOUBLE, "math")
    failure = harness.fail(contract, entry="twice", args=[1])
    assert type(failure) is error and needle in failure.message
    assert failure.fee_used > 0


def test_execution_rechecks_capabilities_of_the_resource(harness: Any) -> None:
    deployed = harness.deploy(STORE, "storage")
    deployed.resource = type(deployed.resource)(id=deployed.resource.id, type="wasm",
                                                meta=deployed.resource.meta)
    with pytest.raises(SecurityRejected, match="not granted to the resource: storage"):
        harness.run(deployed)


def test_many_imports_and_exports_are_refused_before_any_costly_work(harness: Any) -> None:
    """Found in review: describing the exports was quadratic in imports x exports and ran
    before the limits (a 2 MB module could hold the GIL for minutes)."""
    n = 4000
    imports = "".join(f'(import "env" "input_len" (func $f{i} (result i32)))' for i in range(n))
    exports = "".join(f'(export "e{i}" (func $f{i}))' for i in range(n))
    started = time.monotonic()
    with pytest.raises(SecurityRejected, match="number of imports is 4000"):
        harness.deploy(f"(module {imports} {exports})")
    assert time.monotonic() - started < 2.0


def test_args_that_cannot_cross_the_boundary_are_invalid_requests() -> None:
    from coordinator_engine_wasmtime.values import pack_args, slots_struct

    with pytest.raises(InvalidRequest, match="do not fit"):
        pack_args("f", ("f32",), [1e300])
    with pytest.raises(InvalidRequest, match="v128 cannot be passed"):
        slots_struct(("i32", "v128"))


def test_a_pool_the_process_cannot_map_is_a_config_error() -> None:
    """Found in review: wasmtime aborts the process when its pooling allocator cannot reserve
    its address space; such a configuration is refused before the engine is built."""
    import subprocess
    import sys

    probe = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (200 << 30, 200 << 30));"
             "from coordinator_engine_wasmtime.budget import check_address_space as c;"
             "c(0); c(8)\n"
             "try:\n    c(256)\nexcept Exception as e:\n    print(type(e).__name__, e)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("InvalidRequest") and "instance_pool_slots" in done.stdout

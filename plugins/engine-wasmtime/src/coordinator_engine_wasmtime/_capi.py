"""Raw access to wasmtime's C API through the shared library that wasmtime-py ships.

Why this module exists: the hot path must cost less than a hand-written call through
wasmtime-py's public classes, and those classes are the expensive part: a call, a fresh
Store + instantiate + call and a host-function crossing each cost several times what the
same step costs through the C API (``bench/results.md``, the wasm rows). The public
wrappers also keep the last host-function exception in a module global (two threads see
each other's errors) and silently truncate or wrap memory reads, so the engine does not
use them at run time at all.

How: each C function gets its *own* ctypes function object built from wasmtime-py's loaded
library (``CFUNCTYPE(...)((name, dll))``), declared with ``c_void_p``/integer argument types
so calls take and return plain ints. wasmtime-py's own binding objects are left untouched.
The prototypes mirror the C headers of wasmtime 50, which is why the distribution pins
``wasmtime==50.0.1`` and ``version.py`` refuses any other version at import.

Everything that touches a raw pointer lives here; callers hold opaque ints.
"""

from __future__ import annotations

import ctypes
import functools
from ctypes import c_bool, c_char_p, c_int64, c_size_t, c_uint8, c_uint64, c_void_p
from typing import Any

from wasmtime import _ffi

from coordinator_engine_wasmtime import version

#: refused at import unless it is the release these prototypes are written for
WASMTIME_VERSION = version.WASMTIME_VERSION
_dll = _ffi.dll
P = c_void_p


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    """A C function that releases the GIL while it runs (anything that may run guest code,
    compile, or block: other threads, the epoch ticker among them, must keep running)."""
    return ctypes.CFUNCTYPE(restype, *argtypes)((name, _dll))


def _quick(name: str, restype: Any, *argtypes: Any) -> Any:
    """A short, non-blocking C function called with the GIL held: releasing and re-taking
    the GIL costs more than such a call itself when other threads wait for the GIL."""
    return ctypes.PYFUNCTYPE(restype, *argtypes)((name, _dll))


#: Host function trampoline: (env, caller, args_and_results, len) -> wasm_trap_t* or 0.
HOST_CALLBACK = ctypes.CFUNCTYPE(c_size_t, c_size_t, c_void_p, c_size_t, c_size_t)
#: Epoch deadline callback: (context, env, *deadline_delta, *update_kind) -> error* or 0.
EPOCH_CALLBACK = ctypes.CFUNCTYPE(c_size_t, c_void_p, c_void_p, c_size_t, c_size_t)

# -- engine and config ---------------------------------------------------------------------
_config_new = _fn("wasm_config_new", P)
_engine_new = _fn("wasm_engine_new_with_config", P, P)
engine_delete = _fn("wasm_engine_delete", None, P)
increment_epoch = _quick("wasmtime_engine_increment_epoch", None, P)
_cfg_size = _fn("wasmtime_config_max_wasm_stack_set", None, P, c_size_t)
_CFG_BOOL = [  # (setter, value): features off for determinism and simpler limits
    # GC first: turning function references off while GC is on is an invalid config.
    ("wasm_gc", False), ("wasm_function_references", False), ("wasm_threads", False),
    ("shared_memory", False), ("wasm_relaxed_simd", False),
    ("wasm_relaxed_simd_deterministic", True), ("wasm_memory64", False),
    ("wasm_multi_memory", False), ("wasm_exceptions", False), ("wasm_stack_switching", False),
    ("wasm_wide_arithmetic", False), ("wasm_custom_page_sizes", False),
    ("cranelift_nan_canonicalization", True), ("consume_fuel", True),
    ("epoch_interruption", True),
    # A memory never moves, so a host call may keep its base address for the whole execution.
    ("memory_may_move", False),
    # Never wasm_reference_types=False: it aborts the process in wasmtime 50.
]


_pool_new = _fn("wasmtime_pooling_allocation_config_new", P)
_pool_delete = _fn("wasmtime_pooling_allocation_config_delete", None, P)
_pool_strategy = _fn("wasmtime_pooling_allocation_strategy_set", None, P, P)
_POOL_SETTERS = {  # name -> C type of its value
    "total_memories": ctypes.c_uint32, "total_tables": ctypes.c_uint32,
    "total_core_instances": ctypes.c_uint32, "max_memory_size": c_size_t,
    "table_elements": c_size_t, "max_tables_per_module": ctypes.c_uint32,
    "max_memories_per_module": ctypes.c_uint32, "linear_memory_keep_resident": c_size_t,
    "table_keep_resident": c_size_t,
}


def make_engine(max_wasm_stack: int, pool: dict[str, int] | None = None) -> tuple[int, str]:
    """A deterministic, fuel-metered, epoch-interruptible engine and the fingerprint of its
    configuration (part of every disk-cache key).

    ``pool``: settings of wasmtime's pooling instance allocator (keys of ``_POOL_SETTERS``),
    or None for on-demand allocation. Pooling reuses memory slots instead of mapping and
    unmapping memory for every store, which halves the cost of a fresh store per execution.
    """
    config = _config_new()
    for name, value in _CFG_BOOL:
        _fn(f"wasmtime_config_{name}_set", None, P, c_bool)(config, value)
    _cfg_size(config, max_wasm_stack)
    if pool:
        spec = _pool_new()
        for key, amount in pool.items():
            _fn(f"wasmtime_pooling_allocation_config_{key}_set", None, P,
                _POOL_SETTERS[key])(spec, amount)
        _pool_strategy(config, spec)  # copies the spec
        _pool_delete(spec)
    engine = _engine_new(config)  # takes ownership of config
    if not engine:
        raise RuntimeError("wasmtime refused the engine configuration")
    fingerprint = ";".join(f"{n}={int(v)}" for n, v in _CFG_BOOL) + f";stack={max_wasm_stack}"
    fingerprint += ";pool=" + (",".join(f"{k}={v}" for k, v in sorted(pool.items()))
                               if pool else "none")
    return engine, fingerprint


# -- byte vectors, errors and traps --------------------------------------------------------
_vec_delete = _quick("wasm_byte_vec_delete", None, P)
_error_message = _quick("wasmtime_error_message", None, P, P)
_error_delete = _quick("wasmtime_error_delete", None, P)
error_new = _quick("wasmtime_error_new", P, c_char_p)
_trap_message = _quick("wasm_trap_message", None, P, P)
_trap_code = _quick("wasmtime_trap_code", c_bool, P, P)
_trap_delete = _quick("wasm_trap_delete", None, P)
trap_new = _quick("wasmtime_trap_new", P, c_char_p, c_size_t)

TRAP_STACK_OVERFLOW = 0
TRAP_MEMORY_OUT_OF_BOUNDS = 1
TRAP_UNREACHABLE = 9
TRAP_INTERRUPT = 10
TRAP_OUT_OF_FUEL = 11


@functools.lru_cache(maxsize=64)
def byte_array(size: int) -> Any:
    """The ctypes type of ``size`` bytes (cached: building one costs microseconds, and the
    engine needs one per execution for its scratch buffer and its view of guest memory)."""
    return ctypes.c_ubyte * size


def _take_vec(vec: Any) -> bytes:
    data = ctypes.string_at(vec[1], vec[0]) if vec[0] else b""
    _vec_delete(ctypes.addressof(vec))
    return data.rstrip(b"\0")


def take_error(error: int) -> str:
    """The message of a ``wasmtime_error_t`` (which is freed)."""
    vec = (c_size_t * 2)()
    _error_message(error, ctypes.addressof(vec))
    _error_delete(error)
    return _take_vec(vec).decode("utf-8", "replace")


def take_trap(trap: int) -> tuple[int | None, str]:
    """(trap code or None, message) of a ``wasm_trap_t`` (which is freed)."""
    code = c_uint8(255)
    has_code = _trap_code(trap, ctypes.addressof(code))
    vec = (c_size_t * 2)()
    _trap_message(trap, ctypes.addressof(vec))
    _trap_delete(trap)
    return (code.value if has_code else None), _take_vec(vec).decode("utf-8", "replace")


def new_trap(message: str) -> int:
    data = message.encode("utf-8", "replace")
    return int(trap_new(data, len(data)))


# -- modules -------------------------------------------------------------------------------
_module_new = _fn("wasmtime_module_new", P, P, c_char_p, c_size_t, P)
_module_validate = _fn("wasmtime_module_validate", P, P, c_char_p, c_size_t)
_module_serialize = _fn("wasmtime_module_serialize", P, P, P)
_module_deserialize = _fn("wasmtime_module_deserialize", P, P, c_char_p, c_size_t, P)
module_delete = _fn("wasmtime_module_delete", None, P)
_wat2wasm = _fn("wasmtime_wat2wasm", P, c_char_p, c_size_t, P)


class WasmError(Exception):
    """wasmtime refused something; the message is wasmtime's."""


def validate(engine: int, wasm: bytes) -> str | None:
    """None when ``wasm`` is a valid module for ``engine``, else wasmtime's reason."""
    error = _module_validate(engine, wasm, len(wasm))
    return take_error(error) if error else None


def compile_module(engine: int, wasm: bytes) -> int:
    out = c_void_p()
    error = _module_new(engine, wasm, len(wasm), ctypes.addressof(out))
    if error:
        raise WasmError(take_error(error))
    return int(out.value or 0)


def serialize(module: int) -> bytes:
    vec = (c_size_t * 2)()
    error = _module_serialize(module, ctypes.addressof(vec))
    if error:
        raise WasmError(take_error(error))
    return _take_raw(vec)


def _take_raw(vec: Any) -> bytes:
    data = ctypes.string_at(vec[1], vec[0]) if vec[0] else b""
    _vec_delete(ctypes.addressof(vec))
    return data


def deserialize(engine: int, artifact: bytes) -> int:
    """Load an artifact this process's ``serialize`` wrote; never call it on foreign bytes."""
    out = c_void_p()
    error = _module_deserialize(engine, artifact, len(artifact), ctypes.addressof(out))
    if error:
        raise WasmError(take_error(error))
    return int(out.value or 0)


_module_deserialize_file = _fn("wasmtime_module_deserialize_file", P, P, c_char_p, P)


def deserialize_file(engine: int, path: str) -> int:
    """Map an artifact from ``path``; the file must be one nobody else can change."""
    out = c_void_p()
    error = _module_deserialize_file(engine, path.encode(), ctypes.addressof(out))
    if error:
        raise WasmError(take_error(error))
    return int(out.value or 0)


def wat2wasm(text: bytes) -> bytes:
    vec = (c_size_t * 2)()
    error = _wat2wasm(text, len(text), ctypes.addressof(vec))
    if error:
        raise WasmError(take_error(error))
    return _take_raw(vec)


# -- linker and pre-instantiated modules ---------------------------------------------------
linker_new = _fn("wasmtime_linker_new", P, P)
linker_delete = _fn("wasmtime_linker_delete", None, P)
_define = _fn("wasmtime_linker_define_func_unchecked", P, P, c_char_p, c_size_t, c_char_p,
              c_size_t, P, HOST_CALLBACK, c_size_t, P)
_valtype_new = _fn("wasm_valtype_new", P, c_uint8)
_valtype_vec_new = _fn("wasm_valtype_vec_new", None, P, c_size_t, P)
_functype_new = _fn("wasm_functype_new", P, P, P)
_functype_delete = _fn("wasm_functype_delete", None, P)
_instantiate_pre = _fn("wasmtime_linker_instantiate_pre", P, P, P, P)
pre_delete = _fn("wasmtime_instance_pre_delete", None, P)
VALKIND = {"i32": 0, "i64": 1, "f32": 2, "f64": 3}


def _valtypes(types: tuple[str, ...]) -> Any:
    vec = (c_size_t * 2)()
    items = (c_void_p * max(1, len(types)))(*[_valtype_new(VALKIND[t]) for t in types])
    _valtype_vec_new(ctypes.addressof(vec), len(types), ctypes.addressof(items))  # copies
    return vec  # ownership of the valtypes moves into the functype


def define_host(linker: int, module: str, name: str, params: tuple[str, ...],
                results: tuple[str, ...], callback: Any, env: int) -> None:
    """Define ``module.name`` in ``linker`` as ``callback`` (unchecked trampoline) with
    ``env`` passed back on every call."""
    param_vec, result_vec = _valtypes(params), _valtypes(results)  # alive during the call
    functype = _functype_new(ctypes.addressof(param_vec), ctypes.addressof(result_vec))
    mod, fname = module.encode(), name.encode()
    error = _define(linker, mod, len(mod), fname, len(fname), functype, callback, env, None)
    _functype_delete(functype)
    if error:
        raise WasmError(take_error(error))


def instantiate_pre(linker: int, module: int) -> int:
    out = c_void_p()
    error = _instantiate_pre(linker, module, ctypes.addressof(out))
    if error:
        raise WasmError(take_error(error))
    return int(out.value or 0)


# -- stores, instances, calls (the hot path: module-level names, plain int arguments) ------
store_new = _quick("wasmtime_store_new", P, P, P, P)
store_context = _quick("wasmtime_store_context", P, P)
store_delete = _quick("wasmtime_store_delete", None, P)
store_limiter = _quick("wasmtime_store_limiter", None, P, c_int64, c_int64, c_int64, c_int64,
                    c_int64)
set_fuel = _quick("wasmtime_context_set_fuel", P, P, c_uint64)
get_fuel = _quick("wasmtime_context_get_fuel", P, P, P)
set_epoch_deadline = _quick("wasmtime_context_set_epoch_deadline", None, P, c_uint64)
set_epoch_callback = _quick("wasmtime_store_epoch_deadline_callback", None, P, EPOCH_CALLBACK, P, P)
#: Instantiation runs the module's start function (guest code) if it has one: only then must
#: it release the GIL; without one it is short and the GIL round trip is saved.
pre_instantiate = _fn("wasmtime_instance_pre_instantiate", P, P, P, P, P)
pre_instantiate_quick = _quick("wasmtime_instance_pre_instantiate", P, P, P, P, P)
export_get = _quick("wasmtime_instance_export_get", c_bool, P, P, c_char_p, c_size_t, P)
call_unchecked = _fn("wasmtime_func_call_unchecked", P, P, P, P, c_size_t, P)
memory_data = _quick("wasmtime_memory_data", c_size_t, P, P)
memory_data_size = _quick("wasmtime_memory_data_size", c_size_t, P, P)

EXTERN_FUNC = 0
EXTERN_MEMORY = 3
#: Scratch layout of one execution (one ctypes buffer): instance, the entry's extern, the
#: memory's extern, the trap slot, the fuel slot, then the args/results slots (16 bytes each).
OFF_INSTANCE, OFF_FUNC, OFF_MEMORY, OFF_TRAP, OFF_FUEL, OFF_RAW = 0, 16, 48, 80, 88, 96
RAW_SLOT = 16

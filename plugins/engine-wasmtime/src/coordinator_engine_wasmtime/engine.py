"""The WASM engine: deploy-time canonicalisation and inspection, and metered execution.

One wasmtime engine (deterministic config, fuel and epoch interruption on) per coordinator;
one fresh store per execution, instantiated from a cached pre-linked module. Fee = fuel;
deadline and cancel = epoch interruption polled against the execution's ``CancelToken``.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from coordinator_engine_wasmtime import _capi, runtime
from coordinator_engine_wasmtime.abi import builtin_host_functions
from coordinator_engine_wasmtime.artifacts import ArtifactStore
from coordinator_engine_wasmtime.budget import check_address_space, check_stack_budget
from coordinator_engine_wasmtime.modcache import CompiledModule, MissLocks, ModuleCache
from coordinator_engine_wasmtime.policy import (
    ALWAYS_GRANTED,
    SOURCE,
    check_limits,
    describe,
    entries_from_meta,
    env_host_functions,
    required_capabilities,
)
from coordinator_engine_wasmtime.settings import WasmtimeSettings
from coordinator_engine_wasmtime.ticker import EpochTicker
from coordinator_engine_wasmtime.values import (
    host_params,
    host_results,
    input_bytes,
    pack_args,
    results_reader,
)
from coordinator_engine_wasmtime.wasmbin import read_module
from coordinator_hookspecs import (
    Cancelled,
    DeployRequest,
    EngineBase,
    EngineError,
    EngineResult,
    ErrorKind,
    ExecutionContext,
    FeeExhausted,
    HostFunctionRecord,
    InvalidRequest,
    SecurityRejected,
    Timeout,
)

MAX_FUEL = (1 << 63) - 1


class WasmtimeEngine(EngineBase):
    """Runs ``wasm`` resources (see docs/abi-wasm.md for the contract ABI)."""

    def __init__(self, settings: WasmtimeSettings | None = None,
                 data_dir: Path | None = None, max_depth: int = 2) -> None:
        s = self.settings = settings or WasmtimeSettings()
        check_stack_budget(s.max_wasm_stack, max_depth)
        check_address_space(s.instance_pool_slots)
        self._engine, flags = _capi.make_engine(s.max_wasm_stack, s.pool_spec())
        self.fingerprint = f"wasmtime {_capi.WASMTIME_VERSION};{flags}"
        artifacts = None
        # ":memory:" is the core's data dir of a coordinator that keeps nothing on disk.
        if s.disk_cache and data_dir is not None and str(data_dir) != ":memory:":
            artifacts = ArtifactStore(Path(data_dir) / "wasmtime-cache", self.fingerprint,
                                      s.disk_cache_max_bytes)
        self._cache = ModuleCache(self._engine, artifacts, s.memory_cache_entries,
                                  s.compile_timeout)
        self._ticker = EpochTicker(self._engine, s.epoch_tick)
        self._limits = (s.memory_limit_bytes, s.max_table_elements, 1, s.max_tables, 1)
        self._load_lock = threading.Lock()  # the linker and the cache's contents
        self._misses = MissLocks()
        self._linker = 0
        self._table: tuple[runtime.HostEntry, ...] = ()
        self.hosts: Mapping[str, HostFunctionRecord] = {}
        self._readers: dict[tuple[str, ...], Callable[[int], list[Any]]] = {}
        self._closed = False
        #: what this engine belongs to (the plugin keeps the coordinator's config here)
        self.owner: Any = None
        self.bind_host_functions(builtin_host_functions(s))

    # -- binding ----------------------------------------------------------------------------
    def bind_host_functions(self, records: Iterable[HostFunctionRecord]) -> None:
        """Define every host function of module ``env`` in a fresh linker (called once by the
        core with all registered records, other plugins' included)."""
        chosen = env_host_functions(records)
        linker = _capi.linker_new(self._engine)
        try:
            for index, r in enumerate(chosen):
                _capi.define_host(linker, r.module, r.name, r.params, r.results,
                                  runtime._trampoline, index)
        except _capi.WasmError as exc:
            _capi.linker_delete(linker)
            raise EngineError(f"could not bind host functions: {exc}") from None
        table = tuple((r.func, *host_params(r.params), host_results(r.results), r.fee, r.name)
                      for r in chosen)
        with self._load_lock:
            old, self._linker = self._linker, linker
            self._table, self.hosts = table, {r.name: r for r in chosen}
            self._cache.clear()  # pre-linked modules refer to the old linker
        if old:
            _capi.linker_delete(old)

    # -- deploy -----------------------------------------------------------------------------
    def canonical_code(self, code: Any, source_format: str = "binary") -> bytes:
        """The bytes to hash and store: binary as is; WAT text only when asked for."""
        if source_format == "wat":
            text = code.encode() if isinstance(code, str) else code
            if not isinstance(text, (bytes, bytearray, memoryview)):
                raise InvalidRequest(f"WAT source must be str or bytes, got {type(code).__name__}")
            if len(text) > 4 * self.settings.max_module_bytes:
                raise InvalidRequest(f"WAT source of {len(text)} bytes is too large")
            try:
                return _capi.wat2wasm(bytes(text))
            except _capi.WasmError as exc:
                raise InvalidRequest(f"invalid WAT source: {runtime._cause(str(exc))}") from None
        if source_format != "binary":
            raise InvalidRequest(f"source_format {source_format!r} is not 'binary' or 'wat'")
        if isinstance(code, str):
            raise InvalidRequest("code is a str but source_format is 'binary': pass the module's "
                                 "bytes, or source_format='wat' to deploy WebAssembly text")
        if isinstance(code, (bytearray, memoryview)):
            return bytes(code)
        if not isinstance(code, bytes):
            raise InvalidRequest(f"code must be bytes, got {type(code).__name__}")
        return code

    def inspect(self, deploy: DeployRequest) -> dict[str, Any]:
        """Metadata of a valid module; ``InvalidRequest`` saying what is wrong otherwise."""
        code = deploy.code
        if len(code) > self.settings.max_module_bytes:
            raise SecurityRejected(f"module refused: {len(code)} bytes, the limit is "
                                   f"{self.settings.max_module_bytes} (wasmtime.max_module_bytes)",
                                   source=SOURCE)
        shape = read_module(code)
        # Static limits before anything whose cost grows with the module (validation,
        # describing every export): a hostile module is refused cheaply.
        check_limits(shape, len(code), self.settings)
        reason = _capi.validate(self._engine, code)
        if reason is not None:
            raise InvalidRequest(f"invalid wasm module: {runtime._cause(reason)}")
        return describe(shape, self.hosts)

    def precompile(self, module_hash: str, code: bytes) -> None:
        """Compile (under the time cap) and cache a module at deploy time."""
        self._compiled(module_hash, lambda: code, None)

    # -- execution --------------------------------------------------------------------------
    def execute(self, ctx: ExecutionContext) -> EngineResult:
        if self._closed:
            raise EngineError("the wasmtime engine is closed")
        req, resource = ctx.request, ctx.resource
        cm = self._cache.get(resource.id) or self._compiled(resource.id, ctx.load_code,
                                                              resource.meta)
        if cm.required and not cm.required <= resource.capabilities:
            missing = ", ".join(sorted(cm.required - resource.capabilities))
            raise SecurityRejected(f"the module imports host functions needing capabilities "
                                   f"not granted to the resource: {missing}", source=SOURCE)
        name = req.entry or "main"
        signature = cm.entries.get(name)
        if signature is None:
            raise InvalidRequest(f"entry {name!r} is not an exported function; exported "
                                 f"functions: {', '.join(sorted(cm.entries)) or 'none'}")
        params, results = signature
        if req.args is None:
            if params:
                raise InvalidRequest(f"entry {name!r} takes {len(params)} args "
                                     f"({', '.join(params)}); pass them as args")
            args = b""
        else:
            args = pack_args(name, params, req.args)
        data = input_bytes(req.input, self.settings.max_input_bytes)
        fee_limit = ctx.fee_limit
        if not isinstance(fee_limit, int) or fee_limit < 0:
            raise InvalidRequest(f"fee_limit must be a non-negative int, got {fee_limit!r}")
        fee_limit = min(fee_limit, MAX_FUEL)
        nslots = max(len(params), len(results), 1)
        scratch = _capi.byte_array(_capi.OFF_RAW + nslots * _capi.RAW_SLOT)()  # zeroed
        inv = runtime.Invocation(ctx, self.settings, data, ctypes.addressof(scratch),
                                 self._table)
        early = ctx.token.poll()
        if early is not None:
            raise (Timeout if early is ErrorKind.TIMEOUT else Cancelled)(
                f"execution {early.value} before it started")
        # A cancel advances the epoch at once, so the guest sees it without waiting for a tick.
        ctx.token.on_cancel(self._ticker.kick)
        local = runtime.thread_state
        previous = getattr(local, "current", None)  # a nested execution's caller
        local.current = inv
        self._ticker.enter()
        try:
            error, trap, left = runtime.run(self._engine, cm.pre, cm.has_start, inv,
                                            name.encode(), args, nslots, fee_limit, self._limits)
        finally:
            self._ticker.leave()
            local.current = previous
        total = fee_limit - left + inv.pending  # fuel burnt plus host fees not yet taken
        if error or trap or inv.error is not None:
            failure, exact = runtime.failure(inv, error, trap, fee_limit)
            # Code stopped by an epoch deadline, a cancel or a fault has not flushed its fuel
            # counter (wasmtime keeps it in a register), so it is charged its whole fee limit.
            failure.fee_used = min(total, fee_limit) if exact else fee_limit
            raise failure
        if total > fee_limit:
            raise FeeExhausted(f"fee limit {fee_limit} exhausted by host calls",
                               fee_used=fee_limit)
        if req.args is None:
            output: Any = bytes(inv.output)
        else:
            output = self._reader(results)(inv.base + _capi.OFF_RAW)
        size = inv.memory_size
        pages = size >> 16  # 64 KiB wasm pages
        return EngineResult(output, total, tuple(inv.effects), size,
                            {"memory_pages": pages, "memory_peak_pages": pages} if size else None)

    def _reader(self, results: tuple[str, ...]) -> Callable[[int], list[Any]]:
        reader = self._readers.get(results)
        if reader is None:
            reader = self._readers[results] = results_reader(results)
        return reader

    # -- the compiled-module cache ----------------------------------------------------------
    def _compiled(self, module_hash: str, load_code: Callable[[], bytes],
                  meta: Mapping[str, Any] | None) -> CompiledModule:
        with self._misses.hold(module_hash):  # a hash is never compiled twice
            cached = self._cache.get(module_hash)
            if cached is not None:
                return cached
            seen: dict[str, Any] = {}

            def checked_code() -> bytes:
                code = load_code()
                if hashlib.sha256(code).hexdigest() != module_hash:
                    raise EngineError(f"code of resource {module_hash[:12]}... does not match "
                                      "its sha256 id")
                shape = seen["shape"] = read_module(code)
                check_limits(shape, len(code), self.settings)
                return code

            module = self._cache.load_module(module_hash, checked_code)
            cm: CompiledModule | None = None  # owns ``module`` once built
            try:
                known = entries_from_meta(meta)
                if known is None:
                    shape = seen.get("shape") or read_module(checked_code())
                    known = ({e.name: shape.func_type(e.index)
                              for e in shape.exports if e.kind == "func"},
                             required_capabilities(shape, self.hosts), shape.has_start)
                entries, required, has_start = known
                # Linked and cached under the engine-wide lock, so a module is never
                # pre-linked against a linker bind_host_functions is replacing; the compile
                # above, the slow part, ran under this hash's miss lock only.
                with self._load_lock:
                    pre = _capi.instantiate_pre(self._linker, module)
                    cm = CompiledModule(module_hash, module, pre, entries,
                                        required - ALWAYS_GRANTED, has_start)
                    self._cache.put(cm)
            except _capi.WasmError as exc:
                if cm is None:
                    _capi.module_delete(module)
                raise SecurityRejected(f"the module cannot be linked against the bound host "
                                       f"functions: {runtime._cause(str(exc))}",
                                       source=SOURCE) from None
            except BaseException:
                if cm is None:
                    _capi.module_delete(module)
                raise
            return cm

    # -- introspection and lifecycle --------------------------------------------------------
    def holds(self, resource_id: str) -> bool:
        """True when the compiled module is warm in memory (for affinity scheduling)."""
        return resource_id in self._cache

    def health(self) -> bool:
        return not self._closed and self._ticker.alive

    def cache_stats(self) -> dict[str, int]:
        return dict(self._cache.stats)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ticker.close()
        self._cache.clear()
        if self._linker:
            _capi.linker_delete(self._linker)
            self._linker = 0
        # Modules still referenced elsewhere keep wasmtime's engine alive internally; an
        # abandoned compile thread still uses our handle, so it is then left to the process.
        if not self._cache.runaway:
            _capi.engine_delete(self._engine)

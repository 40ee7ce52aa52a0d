"""Compiled modules by hash: a bounded in-memory LRU in front of sealed disk artifacts, in
front of a compile with a wall-clock cap.

A compile runs on a thread of its own and the caller waits at most ``compile_timeout``: a
compile bomb that slipped past the static limits is refused instead of stalling the
coordinator (wasmtime cannot abort a compile, so the abandoned thread finishes in the
background; at most ``MAX_RUNAWAY`` of those may exist before further compiles are refused).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from coordinator_engine_wasmtime import _capi
from coordinator_engine_wasmtime.artifacts import ArtifactStore
from coordinator_hookspecs import EngineError, SecurityRejected

MAX_RUNAWAY = 2


class CompiledModule:
    """A compiled module plus its pre-linked instance template and entry signatures.

    Owned C objects are freed when the last reference goes (executions hold one while they
    run, so eviction never frees a module in use).
    """

    __slots__ = ("__weakref__", "entries", "has_start", "module", "module_hash", "pre",
                 "required")

    def __init__(self, module_hash: str, module: int, pre: int,
                 entries: dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
                 required: frozenset[str], has_start: bool) -> None:
        self.module_hash = module_hash
        self.module = module
        self.pre = pre
        #: export name -> (params, results) of every exported function
        self.entries = entries
        #: capabilities beyond ``io`` that the imports need
        self.required = required
        #: instantiation runs guest code (a start function)
        self.has_start = has_start

    def __del__(self) -> None:
        if self.pre:
            _capi.pre_delete(self.pre)
        if self.module:
            _capi.module_delete(self.module)


class MissLocks:
    """One lock per module hash, alive while someone holds or waits for it: two misses of one
    hash load it once, misses of different hashes compile in parallel (a slow compile must
    not stall every other cold load)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key) or (threading.Lock(), 0)
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class ModuleCache:
    """LRU of ``CompiledModule`` plus the compile/deserialise path of a miss."""

    def __init__(self, engine: int, artifacts: ArtifactStore | None, entries: int,
                 compile_timeout: float) -> None:
        self._engine = engine
        self._artifacts = artifacts
        self._capacity = entries
        self._compile_timeout = compile_timeout
        self._lru: OrderedDict[str, CompiledModule] = OrderedDict()
        self._lock = threading.Lock()
        self._runaway = 0
        self.stats = {"hits": 0, "disk_loads": 0, "compiles": 0, "evictions": 0}

    def get(self, module_hash: str) -> CompiledModule | None:
        with self._lock:
            entry = self._lru.get(module_hash)
            if entry is not None:
                self._lru.move_to_end(module_hash)
                self.stats["hits"] += 1
            return entry

    def __contains__(self, module_hash: str) -> bool:
        return module_hash in self._lru

    def put(self, entry: CompiledModule) -> None:
        with self._lock:
            self._lru[entry.module_hash] = entry
            self._lru.move_to_end(entry.module_hash)
            while len(self._lru) > self._capacity:
                self._lru.popitem(last=False)
                self.stats["evictions"] += 1

    @property
    def runaway(self) -> int:
        """Abandoned compiles still running."""
        return self._runaway

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()

    def load_module(self, module_hash: str, wasm: Callable[[], bytes]) -> int:
        """A module pointer for ``module_hash``: from a verified artifact, else compiled from
        ``wasm()`` under the time cap (and the artifact written)."""
        if self._artifacts is not None:
            module = self._artifacts.deserialize(self._engine, module_hash)
            if module is not None:
                self.stats["disk_loads"] += 1
                return module
        module = self._compile(wasm())
        self.stats["compiles"] += 1
        if self._artifacts is not None:
            self._artifacts.save(module_hash, _capi.serialize(module))
        return module

    def _compile(self, wasm: bytes) -> int:
        if self._runaway >= MAX_RUNAWAY:
            raise EngineError(f"{self._runaway} abandoned compiles are still running; "
                              "refusing to start another until they finish")
        outcome: dict[str, object] = {}
        done = threading.Event()
        abandoned = threading.Event()

        def work() -> None:
            try:
                outcome["module"] = _capi.compile_module(self._engine, wasm)
            except _capi.WasmError as exc:
                outcome["error"] = str(exc)
            finally:
                with self._lock:  # pairs with the abandon decision below
                    done.set()
                    if abandoned.is_set():
                        module = outcome.get("module")
                        if isinstance(module, int) and module:
                            _capi.module_delete(module)
                        self._runaway -= 1

        threading.Thread(target=work, name="wasmtime-compile", daemon=True).start()
        if not done.wait(self._compile_timeout):
            with self._lock:
                if not done.is_set():  # it may have finished between the wait and the lock
                    abandoned.set()
                    self._runaway += 1
                    raise SecurityRejected(
                        f"module refused: compiling took longer than {self._compile_timeout} s "
                        "(wasmtime.compile_timeout)", source="wasmtime-deploy")
        if "error" in outcome:
            raise EngineError(f"wasmtime could not compile the module: {outcome['error']}")
        module = outcome["module"]
        assert isinstance(module, int)
        return module

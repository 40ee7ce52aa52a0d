"""The engine a coordinator registers: the real ``WasmtimeEngine`` built on first use.

Every ``coordinator`` command and every coordinator loads this plugin, and importing wasmtime
(its shared library and ctypes bindings) is a large share of a command's start-up; most
commands (``--help``, ``plugins``, ``config show``, audit and state queries) never run a
module. So registration hands the core this stand-in: the record, its capabilities, the host
functions and the configuration checks are there at once, and wasmtime is imported and the
engine built the first time a module is deployed, inspected or run. After that the real
engine's ``execute`` is bound on the stand-in itself, so the hot path pays no indirection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator_engine_wasmtime import version as _version  # noqa: F401  (refuses a wrong release)
from coordinator_engine_wasmtime.abi import builtin_host_functions
from coordinator_engine_wasmtime.budget import check_address_space, check_stack_budget
from coordinator_engine_wasmtime.policy import env_host_functions
from coordinator_engine_wasmtime.settings import WasmtimeSettings
from coordinator_hookspecs import (
    DeployRequest,
    EngineBase,
    EngineError,
    EngineResult,
    ExecutionContext,
    HostFunctionRecord,
)

if TYPE_CHECKING:
    from coordinator_engine_wasmtime.engine import WasmtimeEngine


class LazyWasmtimeEngine(EngineBase):
    """Stands in for :class:`~coordinator_engine_wasmtime.engine.WasmtimeEngine`.

    A configuration the engine would refuse (native stack, address space) is refused here,
    when the plugin registers it; host functions bound before the engine exists are checked
    for duplicates at once and bound into it when it is built.
    """

    def __init__(self, settings: WasmtimeSettings | None = None,
                 data_dir: Path | None = None, max_depth: int = 2) -> None:
        s = self.settings = settings or WasmtimeSettings()
        check_stack_budget(s.max_wasm_stack, max_depth)
        check_address_space(s.instance_pool_slots)
        self._args = (s, data_dir, max_depth)
        self._engine: WasmtimeEngine | None = None
        self._lock = threading.Lock()
        self._records: list[HostFunctionRecord] | None = None  # bound before the engine exists
        self._hosts: Mapping[str, HostFunctionRecord] = {
            r.name: r for r in env_host_functions(builtin_host_functions(s))}
        self._closed = False
        #: what this engine belongs to (the plugin keeps the coordinator's config here)
        self.owner: Any = None

    @property
    def real(self) -> WasmtimeEngine:
        """The engine, built (and wasmtime imported) on the first call."""
        engine = self._engine
        if engine is None:
            with self._lock:
                engine = self._engine
                if engine is None:
                    engine = self._build()
        return engine

    def _build(self) -> WasmtimeEngine:
        if self._closed:
            raise EngineError("the wasmtime engine is closed")
        from coordinator_engine_wasmtime.engine import WasmtimeEngine

        engine = WasmtimeEngine(*self._args)
        try:
            if self._records is not None:
                engine.bind_host_functions(self._records)
        except BaseException:
            engine.close()
            raise
        self.execute = engine.execute  # type: ignore[method-assign]
        self._engine = engine
        return engine

    @property
    def built(self) -> bool:
        """True once the real engine exists."""
        return self._engine is not None

    # -- what the core calls ----------------------------------------------------------------
    def execute(self, ctx: ExecutionContext) -> EngineResult:
        return self.real.execute(ctx)

    def bind_host_functions(self, records: Iterable[HostFunctionRecord]) -> None:
        records = list(records)
        with self._lock:
            if self._engine is None:
                chosen = env_host_functions(records)  # duplicates refused now, as the engine does
                self._records, self._hosts = records, {r.name: r for r in chosen}
                return
        self._engine.bind_host_functions(records)

    def canonical_code(self, code: Any, source_format: str = "binary") -> bytes:
        return self.real.canonical_code(code, source_format)

    def inspect(self, deploy: DeployRequest) -> dict[str, Any]:
        return self.real.inspect(deploy)

    def holds(self, resource_id: str) -> bool:
        engine = self._engine
        return engine is not None and engine.holds(resource_id)

    def warm_up(self) -> None:
        """Build the real engine now (a server does before it reports ready)."""
        self.real  # noqa: B018 - the property builds it

    def health(self) -> bool:
        engine = self._engine
        return not self._closed if engine is None else engine.health()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            engine = self._engine
        if engine is not None:
            engine.close()

    # -- what the deploy validator, the CLI and tests read ----------------------------------
    @property
    def hosts(self) -> Mapping[str, HostFunctionRecord]:
        """The bound host functions of module ``env``, by name."""
        engine = self._engine
        return self._hosts if engine is None else engine.hosts

    @property
    def fingerprint(self) -> str:
        return self.real.fingerprint

    def precompile(self, module_hash: str, code: bytes) -> None:
        self.real.precompile(module_hash, code)

    def cache_stats(self) -> dict[str, int]:
        return self.real.cache_stats()

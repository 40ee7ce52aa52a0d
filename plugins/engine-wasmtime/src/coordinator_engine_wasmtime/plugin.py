"""Hook implementations of the WASM engine plugin (entry point ``wasmtime``).

Registers the ``[wasmtime]`` config section, the ``wasmtime`` engine, the ``wasmtime-deploy``
validator and the built-in host functions of the contract ABI. The engine, validator and host
functions of one coordinator share one engine, found by the config object the registration
hooks receive (a fresh one per coordinator, so coordinators never share state). The engine
is a ``LazyWasmtimeEngine``: nothing here imports wasmtime until a module is used.
"""

from __future__ import annotations

import threading
import weakref

from coordinator_engine_wasmtime.abi import builtin_host_functions
from coordinator_engine_wasmtime.lazy import LazyWasmtimeEngine
from coordinator_engine_wasmtime.settings import WasmtimeSettings
from coordinator_engine_wasmtime.validator import DeployValidator
from coordinator_hookspecs import (
    ConfigSection,
    CoordinatorConfig,
    EngineRecord,
    HostFunctionRecord,
    ValidatorRecord,
    hookimpl,
)

SECTION = "wasmtime"
_engines: weakref.WeakValueDictionary[int, LazyWasmtimeEngine] = weakref.WeakValueDictionary()
_lock = threading.Lock()


def engine_for(config: CoordinatorConfig) -> LazyWasmtimeEngine:
    """The engine of the coordinator whose configuration is ``config`` (created once)."""
    with _lock:
        engine = _engines.get(id(config))
        if engine is None or engine.owner is not config:
            # The core's depth limit sizes the guest stacks nested calls pile on one thread.
            engine = LazyWasmtimeEngine(config.section(SECTION), config.data_dir,
                                        max_depth=config.core.max_depth)
            # The strong reference keeps id(config) from being reused while the engine lives.
            engine.owner = config
            _engines[id(config)] = engine
        return engine


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name=SECTION, type=WasmtimeSettings)]


@hookimpl
def coordinator_register_engines(config: CoordinatorConfig) -> list[EngineRecord]:
    return [EngineRecord(name="wasmtime", engine=engine_for(config), resource_types={"wasm"},
                         features={"fuel", "cancel", "deadline"})]


@hookimpl
def coordinator_register_validators(config: CoordinatorConfig) -> list[ValidatorRecord]:
    return [ValidatorRecord(name="wasmtime-deploy", validator=DeployValidator(engine_for(config)),
                            priority=10, applies_to={"wasm"})]


@hookimpl
def coordinator_register_host_functions(config: CoordinatorConfig) -> list[HostFunctionRecord]:
    return builtin_host_functions(config.section(SECTION))

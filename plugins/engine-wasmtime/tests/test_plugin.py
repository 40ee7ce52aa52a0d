"""The plugin's hooks, called through pluggy as the core calls them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pluggy
import pytest

from coordinator_engine_wasmtime import plugin
from coordinator_engine_wasmtime.budget import STACK_MARGIN, thread_stack_bytes
from coordinator_engine_wasmtime.engine import WasmtimeEngine
from coordinator_engine_wasmtime.lazy import LazyWasmtimeEngine
from coordinator_engine_wasmtime.settings import WasmtimeSettings
from coordinator_hookspecs import PROJECT_NAME, InvalidRequest, spec


@attrs.frozen
class Core:
    """The core settings a ``CoordinatorConfig`` shows plugins."""

    max_depth: int = 2
    default_fee_limit: int = 10_000_000
    max_execution_timeout: float = 30.0


@attrs.define
class Config:
    """What registration hooks receive (a ``CoordinatorConfig``): the data dir, the core
    settings and structured plugin sections."""

    data_dir: Path
    sections: dict[str, Any]
    core: Core = attrs.field(factory=Core)

    def section(self, name: str) -> Any:
        return self.sections[name]


def _manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(spec)
    manager.register(plugin, name="wasmtime")
    return manager


def test_hooks_register_section_engine_validator_and_host_functions(tmp_path: Path) -> None:
    hook = _manager().hook
    (sections,) = hook.coordinator_register_config_sections()
    assert [(s.name, s.type) for s in sections] == [("wasmtime", WasmtimeSettings)]
    config = Config(tmp_path, {"wasmtime": WasmtimeSettings(fee_per_host_call=3)})
    ((engine_record,),) = hook.coordinator_register_engines(config=config)
    ((validator_record,),) = hook.coordinator_register_validators(config=config)
    (host_records,) = hook.coordinator_register_host_functions(config=config)
    engine = engine_record.engine
    try:
        assert isinstance(engine, LazyWasmtimeEngine)
        assert not engine.built  # registering builds nothing: wasmtime is imported on first use
        assert engine_record.name == "wasmtime"
        assert engine_record.resource_types == {"wasm"}
        assert engine_record.features == {"fuel", "cancel", "deadline"}
        assert validator_record.name == "wasmtime-deploy"
        assert validator_record.applies_to == {"wasm"}
        assert validator_record.validator.engine is engine  # one engine per coordinator
        assert {r.name: r.capability for r in host_records} == {
            "input_len": "io", "input_read": "io", "output_write": "io", "caller_len": "io",
            "caller_read": "io", "fee_remaining": "io", "storage_get": "storage",
            "storage_set": "storage", "storage_remove": "storage", "emit_event": "events",
            "log": "log"}
        assert {r.fee for r in host_records} == {3}
        assert engine.health()
        assert isinstance(engine.real, WasmtimeEngine) and engine.built and engine.health()
    finally:
        engine.close()
    assert not engine.health()


def test_each_configuration_gets_its_own_engine(tmp_path: Path) -> None:
    hook = _manager().hook
    first = Config(tmp_path / "a", {"wasmtime": WasmtimeSettings()})
    second = Config(tmp_path / "b", {"wasmtime": WasmtimeSettings()})
    engines = [hook.coordinator_register_engines(config=c)[0][0].engine
               for c in (first, second, first)]
    try:
        assert engines[0] is engines[2] and engines[0] is not engines[1]
    finally:
        engines[0].close()
        engines[1].close()


def test_stack_budget_follows_the_core_depth_limit(tmp_path: Path) -> None:
    """The engine reads the depth limit through ``config.core``: a stack that cannot hold
    ``max_depth + 1`` nested guests is refused when the engine is built."""
    settings = {"wasmtime": WasmtimeSettings(max_wasm_stack=2 * 1024 * 1024)}
    if thread_stack_bytes() >= 9 * (2 * 1024 * 1024 + STACK_MARGIN):
        pytest.skip("threads here have room for 9 nested guest stacks")
    with pytest.raises(InvalidRequest, match=r"\[coordinator\] max_depth = 8"):
        _manager().hook.coordinator_register_engines(config=Config(tmp_path, settings,
                                                                   Core(max_depth=8)))
    ((record,),) = _manager().hook.coordinator_register_engines(
        config=Config(tmp_path, settings, Core(max_depth=0)))
    record.engine.close()


def test_defaults_are_safe() -> None:
    settings = WasmtimeSettings()
    assert settings.memory_limit_bytes == 32 * 1024 * 1024
    assert settings.max_wasm_stack == 512 * 1024
    assert settings.max_functions < 20_000
    assert settings.max_key_bytes == 64 * 1024 and settings.max_value_bytes == 128 * 1024

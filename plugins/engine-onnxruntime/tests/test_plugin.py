"""The hook implementations: config section, engine and validator records."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator_core.plugin_host.config import load_config
from coordinator_engine_onnxruntime import OnnxConfig, OnnxEngine, plugin
from coordinator_engine_onnxruntime.lazy import LazyEngine, LazyModelPolicy
from coordinator_hookspecs import InvalidRequest


def _config(tmp_path: Path, **section: object):  # type: ignore[no-untyped-def]
    config = load_config(data_dir=tmp_path, overrides={"onnxruntime": section}, environ={})
    sections = {s.name: s.type for s in plugin.coordinator_register_config_sections()}
    assert config.bind_sections(sections) == []
    return config


def test_records(tmp_path: Path) -> None:
    config = _config(tmp_path)
    (engine,) = plugin.coordinator_register_engines(config)
    assert engine.name == "onnxruntime" and engine.resource_types == {"onnx"}
    assert engine.features == {"cancel", "deadline", "batching"}
    assert isinstance(engine.engine, LazyEngine)
    assert engine.engine._engine is None  # nothing heavy is built at registration
    assert isinstance(engine.engine._real(), OnnxEngine)
    (validator,) = plugin.coordinator_register_validators(config)
    assert isinstance(validator.validator, LazyModelPolicy)
    assert validator.applies_to == {"onnx"}


def test_registration_imports_no_heavy_module(tmp_path: Path) -> None:
    import subprocess
    import sys

    probe = ("import sys, coordinator_engine_onnxruntime.plugin as p; "
             "print(sorted(m for m in ('onnx', 'onnxruntime', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_section_defaults_and_overrides(tmp_path: Path) -> None:
    default = _config(tmp_path).section("onnxruntime")
    assert default == OnnxConfig()
    assert default.intra_op_threads == 1 and default.inter_op_threads == 1
    assert not default.allow_spinning and not default.allow_external_data
    assert default.providers == ("CPUExecutionProvider",)
    custom = _config(tmp_path, allowed_domains=["", "custom"], session_cache_size=3,
                     allow_external_data=True).section("onnxruntime")
    assert custom.allowed_domains == {"ai.onnx", "custom"}
    (engine,) = plugin.coordinator_register_engines(_config(tmp_path, allow_external_data=True))
    assert engine.engine._real().external_dir == tmp_path / "onnx-external"


def test_bad_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="session_cache_size"):
        _config(tmp_path, session_cache_size=0)
    with pytest.raises(InvalidRequest, match="bogus"):
        _config(tmp_path, bogus=1)
    with pytest.raises(InvalidRequest, match="unavailable providers"):
        plugin.coordinator_register_engines(_config(tmp_path, providers=["NoSuchProvider"]))

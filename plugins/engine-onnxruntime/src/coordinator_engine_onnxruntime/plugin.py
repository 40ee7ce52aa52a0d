"""Hook implementations of the ONNX engine plugin (entry point ``onnxruntime``).

Registers the ``[onnxruntime]`` config section, the ``onnxruntime`` engine for resource type
``onnx`` and the ``onnx-model-policy`` deploy validator. Each coordinator gets its own engine
and validator, built from its own config (no module-level state), on first use (lazy.py).
"""

from __future__ import annotations

from pathlib import Path

from coordinator_engine_onnxruntime.config import OnnxConfig
from coordinator_engine_onnxruntime.lazy import LazyEngine, LazyModelPolicy
from coordinator_hookspecs import (
    ConfigSection,
    CoordinatorConfig,
    EngineRecord,
    ValidatorRecord,
    hookimpl,
)

SECTION = "onnxruntime"


def _settings(config: CoordinatorConfig) -> tuple[OnnxConfig, Path | None]:
    cfg: OnnxConfig = config.section(SECTION)
    if not cfg.allow_external_data:
        return cfg, None
    base = Path(cfg.external_data_dir) if cfg.external_data_dir else None
    return cfg, base or Path(config.data_dir) / "onnx-external"


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name=SECTION, type=OnnxConfig)]


@hookimpl
def coordinator_register_engines(config: CoordinatorConfig) -> list[EngineRecord]:
    cfg, external_dir = _settings(config)
    return [
        EngineRecord(
            name="onnxruntime",
            engine=LazyEngine(cfg, external_dir),
            resource_types={"onnx"},
            features={"cancel", "deadline", "batching"},
        )
    ]


@hookimpl
def coordinator_register_validators(config: CoordinatorConfig) -> list[ValidatorRecord]:
    cfg, external_dir = _settings(config)
    # Priority 10: the model policy is cheap next to storing a large model and protects the
    # engine itself, so it runs before generic validators.
    return [
        ValidatorRecord(
            name="onnx-model-policy",
            validator=LazyModelPolicy(cfg, external_dir),
            priority=10,
            applies_to={"onnx"},
        )
    ]

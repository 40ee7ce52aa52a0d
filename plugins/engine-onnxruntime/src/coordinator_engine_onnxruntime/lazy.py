"""Build the engine and the model policy on first use, not when the plugin loads.

Importing onnxruntime, onnx and numpy takes most of a second. Every ``coordinator`` command
and every coordinator loads this plugin, most of them never touch a model; so registration
hands the core these stand-ins, which import and build the real objects the first time a
model is deployed or run. After that the real engine's ``execute`` is bound directly on the
stand-in, so the hot path pays no indirection.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from coordinator_engine_onnxruntime.config import OnnxConfig
from coordinator_hookspecs import (
    DeployRequest,
    EngineBase,
    EngineResult,
    ExecutionContext,
    ValidatorBase,
)

#: The provider every onnxruntime build has: nothing to check at start-up.
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


class LazyEngine(EngineBase):
    """Stands in for :class:`~coordinator_engine_onnxruntime.engine.OnnxEngine`."""

    def __init__(self, cfg: OnnxConfig, external_dir: Path | None) -> None:
        self._args = (cfg, external_dir)
        self._engine: Any = None
        self._lock = threading.Lock()
        #: Same model, input and build give the same output bits: deterministic compute on
        #: the CPU provider. Otherwise the core marks each execution ``nondeterministic``
        #: and ``coordinator replay`` compares its status only (docs/replay.md).
        self.deterministic = cfg.deterministic_compute and \
            tuple(cfg.providers) == DEFAULT_PROVIDERS
        if tuple(cfg.providers) != DEFAULT_PROVIDERS:
            self._real()  # a configured provider is checked at start-up, not at first use

    def _real(self) -> Any:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    from coordinator_engine_onnxruntime.engine import OnnxEngine

                    engine = OnnxEngine(*self._args)
                    self.execute = engine.execute  # type: ignore[method-assign]
                    self._engine = engine
        return self._engine

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        result: EngineResult = self._real().execute(ctx)
        return result

    def inspect(self, deploy: DeployRequest) -> dict[str, Any]:
        meta: dict[str, Any] = self._real().inspect(deploy)
        return meta

    def decode_cli_input(self, data: str | bytes, filename: str | None = None) -> Any:
        return self._real().decode_cli_input(data, filename)

    def encode_output(self, output: Any) -> Any:
        return self._real().encode_output(output)

    def fee(self, nodes: int, elements: int) -> int:
        fee: int = self._real().fee(nodes, elements)
        return fee

    @property
    def sessions(self) -> Any:
        return self._real().sessions

    def holds(self, resource_id: str) -> bool:
        return self._engine is not None and bool(self._engine.holds(resource_id))

    def model_stats(self) -> dict[str, Any] | None:
        """The real engine's per-model batching statistics (none before it is built)."""
        if self._engine is None:
            return None
        stats: dict[str, Any] = self._engine.model_stats()
        return stats

    def warm_up(self) -> None:
        """Build the real engine now (a server does before it reports ready)."""
        self._real()

    def health(self) -> bool:
        return self._engine is None or bool(self._engine.health())

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()


class LazyModelPolicy(ValidatorBase):
    """Stands in for :class:`~coordinator_engine_onnxruntime.policy.ModelPolicyValidator`."""

    def __init__(self, cfg: OnnxConfig, external_dir: Path | None) -> None:
        self._args = (cfg, external_dir)
        self._validator: Any = None

    def validate_deploy(self, deploy: DeployRequest) -> None:
        if self._validator is None:
            from coordinator_engine_onnxruntime.policy import ModelPolicyValidator

            self._validator = ModelPolicyValidator(*self._args)
        self._validator.validate_deploy(deploy)

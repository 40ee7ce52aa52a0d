"""coordinator plugin: the ONNX engine (onnxruntime) and its deploy-time model policy.

The heavy modules (onnxruntime, onnx, numpy) load only when one of these names is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "decode_cli_input": "coordinator_engine_onnxruntime.cli_io",
    "encode_output": "coordinator_engine_onnxruntime.cli_io",
    "OnnxConfig": "coordinator_engine_onnxruntime.config",
    "OnnxEngine": "coordinator_engine_onnxruntime.engine",
    "ModelPolicyValidator": "coordinator_engine_onnxruntime.policy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

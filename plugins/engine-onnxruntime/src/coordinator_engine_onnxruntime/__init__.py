"""coordinator plugin: the ONNX engine (onnxruntime) and its deploy-time model policy."""

from coordinator_engine_onnxruntime.cli_io import decode_cli_input, encode_output
from coordinator_engine_onnxruntime.config import OnnxConfig
from coordinator_engine_onnxruntime.engine import OnnxEngine
from coordinator_engine_onnxruntime.policy import ModelPolicyValidator

__all__ = ["ModelPolicyValidator", "OnnxConfig", "OnnxEngine", "decode_cli_input",
           "encode_output"]

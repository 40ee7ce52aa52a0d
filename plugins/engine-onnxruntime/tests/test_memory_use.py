"""The memory an ONNX execution reports: the bytes of its input and output tensors."""

from __future__ import annotations

from typing import Any

import numpy as np

from coordinator_engine_onnxruntime import OnnxEngine


def test_tensor_bytes_are_inputs_plus_outputs(engine: OnnxEngine, run: Any,
                                              models: Any) -> None:
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    result = run(engine, models.classifier(), {"x": x})
    (y,) = result.output.values()
    assert y.shape == (10, 3)
    assert result.usage == {"input_bytes": 10 * 4 * 4, "output_bytes": 10 * 3 * 4}
    assert result.memory_bytes == 160 + 120


def test_tensor_bytes_follow_the_batch(engine: OnnxEngine, run: Any, models: Any) -> None:
    small = run(engine, models.classifier(), {"x": np.zeros((1, 4), np.float32)})
    large = run(engine, models.classifier(), {"x": np.zeros((100, 4), np.float32)})
    assert small.memory_bytes == 4 * 4 + 3 * 4
    assert large.memory_bytes == 100 * small.memory_bytes

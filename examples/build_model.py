"""Build ``risk_model.onnx``: the small fraud/risk classifier the demo and the hybrid contract use.

Run from the repository root (needs the ``onnx`` and ``numpy`` packages of the dev group)::

    .venv/bin/python examples/build_model.py          # rewrites examples/risk_model.onnx

The model is a logistic classifier written with ``onnx.helper``: ``probs = Softmax(x @ W + B)``.

input  ``x``      float32 [N, 3], one row per transfer:
                  x0 = amount / 1000            (size of the transfer, in thousands)
                  x1 = amount / (balance + 1)   (share of the sender's balance it moves)
                  x2 = 1.0 if the recipient holds nothing yet, else 0.0
output ``probs``  float32 [N, 2]: [P(legitimate), P(fraud)]

The fraud logit is ``1.5*x0 + 4*x1 + 1*x2 - 3.5`` (the legitimate logit is 0): small transfers
between known accounts score about 0.03, moving most of a balance or several thousand units
at once scores above 0.5, and the hybrid contract refuses those. The weights are fixed, so
the file is byte-for-byte reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Columns: logit of "legitimate" (always 0) and of "fraud".
WEIGHTS = np.array([[0.0, 1.5], [0.0, 4.0], [0.0, 1.0]], dtype=np.float32)
BIAS = np.array([0.0, -3.5], dtype=np.float32)


def build() -> onnx.ModelProto:
    """The classifier as an ONNX model (opset 17, IR version 8)."""
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W", "B"], ["logits"], name="score"),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="probability"),
        ],
        "risk",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(WEIGHTS, "W"), numpy_helper.from_array(BIAS, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="coordinator-examples", doc_string=__doc__)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def fraud_probability(x: np.ndarray) -> np.ndarray:
    """What the model computes, in numpy (for tests and readers)."""
    logits = x.astype(np.float32) @ WEIGHTS + BIAS
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True))[:, 1]


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("risk_model.onnx")
    out.write_bytes(build().SerializeToString())
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

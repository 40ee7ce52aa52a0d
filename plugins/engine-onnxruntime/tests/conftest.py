"""Models built with onnx.helper for the engine's tests, and an engine-level context maker.

Every model is built here, in code, so each test shows exactly what it feeds the engine.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from coordinator_engine_onnxruntime import OnnxConfig, OnnxEngine
from coordinator_hookspecs import (
    CancelToken,
    DeployRequest,
    ExecutionContext,
    ExecutionRequest,
    ResourceInfo,
)

OPSET = [h.make_opsetid("", 17)]


def finish(graph: onnx.GraphProto, opsets: list[Any] | None = None, **kw: Any) -> bytes:
    model = h.make_model(graph, opset_imports=opsets or OPSET, **kw)
    model.ir_version = 8
    return model.SerializeToString()


def rid_of(code: bytes) -> str:
    return hashlib.sha256(code).hexdigest()


RNG = np.random.default_rng(4)
WEIGHTS = RNG.standard_normal((4, 3)).astype(np.float32)
BIAS = RNG.standard_normal(3).astype(np.float32)


def classifier() -> bytes:
    """Gemm + Softmax: x[N,4] -> probabilities y[N,3]."""
    graph = h.make_graph(
        [h.make_node("Gemm", ["x", "W", "B"], ["z"], name="dense"),
         h.make_node("Softmax", ["z"], ["y"], axis=1, name="softmax")],
        "classifier",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])],
        [nh.from_array(WEIGHTS, "W"), nh.from_array(BIAS, "B")],
    )
    return finish(graph)


def reference_classifier(x: np.ndarray) -> np.ndarray:
    z = x @ WEIGHTS + BIAS
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def if_model(then_node: onnx.NodeProto | None = None) -> bytes:
    """y = x * 2 if c else x - 1, both branches as subgraphs."""
    two = nh.from_array(np.array([2.0], np.float32), "two")
    one = nh.from_array(np.array([1.0], np.float32), "one")
    then_graph = h.make_graph(
        [then_node or h.make_node("Mul", ["x", "two"], ["t"], name="double")], "then", [],
        [h.make_tensor_value_info("t", T.FLOAT, [3])], [two])
    else_graph = h.make_graph(
        [h.make_node("Sub", ["x", "one"], ["e"], name="decrement")], "else", [],
        [h.make_tensor_value_info("e", T.FLOAT, [3])], [one])
    graph = h.make_graph(
        [h.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph,
                     name="branch")],
        "if", [h.make_tensor_value_info("c", T.BOOL, []),
               h.make_tensor_value_info("x", T.FLOAT, [3])],
        [h.make_tensor_value_info("y", T.FLOAT, [3])])
    return finish(graph)


def loop_model() -> bytes:
    """v = v0 + M, one Loop iteration per unit: long enough to cancel with M = 10**9."""
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]),
         h.make_node("Add", ["v_in", "one"], ["v_out"], name="step")],
        "body",
        [h.make_tensor_value_info("i", T.INT64, []),
         h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("v_in", T.FLOAT, [1])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []),
         h.make_tensor_value_info("v_out", T.FLOAT, [1])],
        [nh.from_array(np.array([1.0], np.float32), "one")])
    graph = h.make_graph(
        [h.make_node("Loop", ["M", "cond", "v0"], ["v"], body=body, name="loop")], "loop",
        [h.make_tensor_value_info("M", T.INT64, []),
         h.make_tensor_value_info("v0", T.FLOAT, [1])],
        [h.make_tensor_value_info("v", T.FLOAT, [1])],
        [nh.from_array(np.array(True), "cond")])
    return finish(graph)


def function_model(domain: str, body_domain: str = "") -> bytes:
    """A node calling a model-local function ``domain:Twice`` (body: Add x x)."""
    function = h.make_function(
        domain, "Twice", ["a"], ["b"],
        [h.make_node("Add", ["a", "a"], ["b"], domain=body_domain)],
        opset_imports=[h.make_opsetid("", 17)]
        + ([h.make_opsetid(body_domain, 1)] if body_domain else []))
    graph = h.make_graph(
        [h.make_node("Twice", ["x"], ["y"], domain=domain, name="call")], "fn",
        [h.make_tensor_value_info("x", T.FLOAT, [2])],
        [h.make_tensor_value_info("y", T.FLOAT, [2])])
    opsets = [*OPSET, h.make_opsetid(domain, 1)]
    if body_domain:
        opsets.append(h.make_opsetid(body_domain, 1))
    return finish(graph, opsets, functions=[function])


def external_model(location: str, length: int = 16) -> bytes:
    """y = x + W where W's four floats claim to live in the external file ``location``."""
    weight = onnx.TensorProto()
    weight.name, weight.data_type = "W", T.FLOAT
    weight.dims.extend([4])
    weight.data_location = T.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": str(length)}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = h.make_graph(
        [h.make_node("Add", ["x", "W"], ["y"], name="add")], "external",
        [h.make_tensor_value_info("x", T.FLOAT, [4])],
        [h.make_tensor_value_info("y", T.FLOAT, [4])], [weight])
    return finish(graph)


def constant_of_shape(count: int | None) -> bytes:
    """ConstantOfShape of ``[count]`` floats (a constant shape), or of a shape given as the
    input ``s`` when ``count`` is None (so only run time knows the size)."""
    node = h.make_node("ConstantOfShape", ["s"], ["y"], name="fill",
                       value=nh.from_array(np.array([1.0], np.float32)))
    if count is None:
        inputs, inits = [h.make_tensor_value_info("s", T.INT64, [1])], []
    else:
        inputs, inits = [], [nh.from_array(np.array([count], np.int64), "s")]
    graph = h.make_graph([node], "big", inputs,
                         [h.make_tensor_value_info("y", T.FLOAT, ["n"])], inits)
    return finish(graph)


def deploy_request(code: bytes) -> DeployRequest:
    return DeployRequest(code=code, resource_type="onnx", resource_id=rid_of(code))


@pytest.fixture
def engine() -> OnnxEngine:
    made = OnnxEngine(OnnxConfig())
    yield made
    made.close()


@pytest.fixture
def run() -> Callable[..., Any]:
    """``run(engine, code, inputs, fee_limit=..., timeout=..., token=...)`` -> EngineResult."""

    def call(engine: OnnxEngine, code: bytes, inputs: Any, *, fee_limit: int = 10_000_000,
             timeout: float = 5.0, token: CancelToken | None = None) -> Any:
        return engine.execute(make_context(code, inputs, fee_limit=fee_limit,
                                           token=token or CancelToken(time.monotonic() + timeout)))

    return call


def make_context(code: bytes, inputs: Any, *, fee_limit: int, token: CancelToken
                 ) -> ExecutionContext:
    rid = rid_of(code)
    return ExecutionContext(
        execution_id="t1", request=ExecutionRequest(resource_id=rid, input=inputs),
        resource=ResourceInfo(id=rid, type="onnx"), fee_limit=fee_limit, token=token,
        state_get={}.get, load_code=lambda: code)


@pytest.fixture(scope="session")
def models() -> Any:
    """This module: the model builders above (``models.classifier()``...)."""
    import sys

    return sys.modules[__name__]

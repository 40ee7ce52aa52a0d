"""The ONNX engine through the whole coordinator: real entry points, store, watchdog, CLI."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_hookspecs import InvalidRequest, SecurityRejected, Status
from tests.helpers import cli_json

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
B = np.array([0.1, -0.2, 0.3], np.float32)


def _model(graph: onnx.GraphProto, *extra: onnx.OperatorSetIdProto, **kw: object) -> bytes:
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), *extra], **kw)
    model.ir_version = 8
    return model.SerializeToString()


def classifier() -> bytes:
    return _model(h.make_graph(
        [h.make_node("Gemm", ["x", "W", "B"], ["z"]), h.make_node("Softmax", ["z"], ["y"])],
        "classifier", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])],
        [nh.from_array(W, "W"), nh.from_array(B, "B")]))


def expected(x: np.ndarray) -> np.ndarray:
    z = x @ W + B
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def long_loop() -> bytes:
    body = h.make_graph(
        [h.make_node("Identity", ["c_in"], ["c_out"]),
         h.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body", [h.make_tensor_value_info("i", T.INT64, []),
                 h.make_tensor_value_info("c_in", T.BOOL, []),
                 h.make_tensor_value_info("v_in", T.FLOAT, [1])],
        [h.make_tensor_value_info("c_out", T.BOOL, []),
         h.make_tensor_value_info("v_out", T.FLOAT, [1])],
        [nh.from_array(np.array([1.0], np.float32), "one")])
    return _model(h.make_graph(
        [h.make_node("Loop", ["M", "cond", "v0"], ["v"], body=body)], "loop",
        [h.make_tensor_value_info("M", T.INT64, []), h.make_tensor_value_info("v0", T.FLOAT, [1])],
        [h.make_tensor_value_info("v", T.FLOAT, [1])], [nh.from_array(np.array(True), "cond")]))


LONG = {"M": np.array(10**12, np.int64), "v0": np.zeros(1, np.float32)}


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    with Coordinator.open(data_dir=tmp_path / "data") as opened:
        yield opened


def test_deploy_and_execute_a_classifier(coord: Coordinator) -> None:
    rid = coord.deploy(classifier(), "onnx", name="clf")
    meta = coord.resource(rid).meta
    assert meta["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 4]}]
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    result = coord.execute(ExecutionRequest(resource_id=rid, caller="alice", input={"x": x}))
    assert result.status is Status.SUCCEEDED, result.error
    assert result.engine == "onnxruntime"
    np.testing.assert_allclose(result.output["y"], expected(x), rtol=1e-5)
    assert result.fee_used == coord.engine_for("onnx").fee(2, 12)


def test_bad_requests_and_small_fee_limits_fail_with_their_kind(coord: Coordinator) -> None:
    rid = coord.deploy(classifier(), "onnx")
    wrong = coord.execute(ExecutionRequest(resource_id=rid, input={"x": np.ones((1, 5))}))
    assert wrong.status is Status.REJECTED and wrong.error is not None
    assert wrong.error.kind == "invalid_request" and "input 'x'" in wrong.error.message
    poor = coord.execute(ExecutionRequest(resource_id=rid, input={"x": [[1, 2, 3, 4]]},
                                          fee_limit=10))
    assert poor.status is Status.FAILED and poor.error is not None
    assert poor.error.kind == "fee_exhausted" and poor.fee_used == 0


def test_hostile_models_are_refused_at_deploy(coord: Coordinator) -> None:
    with pytest.raises(InvalidRequest, match="not a valid ONNX model"):
        coord.deploy(b"\x0a\xff\xff garbage", "onnx")
    body = h.make_node("Add", ["a", "a"], ["b"])
    function = h.make_function("evil.ops", "Twice", ["a"], ["b"], [body],
                               opset_imports=[h.make_opsetid("", 17)])
    foreign = _model(h.make_graph(
        [h.make_node("Twice", ["x"], ["y"], domain="evil.ops")], "fn",
        [h.make_tensor_value_info("x", T.FLOAT, [2])],
        [h.make_tensor_value_info("y", T.FLOAT, [2])]),
        h.make_opsetid("evil.ops", 1), functions=[function])
    with pytest.raises(SecurityRejected, match="domain 'evil.ops'"):
        coord.deploy(foreign, "onnx")


def test_constant_of_shape_2_pow_40(coord: Coordinator) -> None:
    fill = h.make_node("ConstantOfShape", ["s"], ["y"],
                       value=nh.from_array(np.array([1.0], np.float32)))
    out = [h.make_tensor_value_info("y", T.FLOAT, ["n"])]
    static = _model(h.make_graph([fill], "static", [], out,
                                 [nh.from_array(np.array([2**40], np.int64), "s")]))
    with pytest.raises(SecurityRejected, match=r"static shape \[1099511627776\]"):
        coord.deploy(static, "onnx")
    dynamic = _model(h.make_graph([fill], "dynamic",
                                  [h.make_tensor_value_info("s", T.INT64, [1])], out))
    rid = coord.deploy(dynamic, "onnx")
    result = coord.execute(ExecutionRequest(resource_id=rid, input={"s": [2**40]}))
    assert result.status is Status.FAILED and result.error is not None
    assert result.error.kind == "trap" and "memory cap" in result.error.message
    small = coord.execute(ExecutionRequest(resource_id=rid, input={"s": [2]}))
    assert small.ok and small.output["y"].tolist() == [1.0, 1.0]


def test_timeout_through_the_watchdog_is_timed_out(coord: Coordinator) -> None:
    rid = coord.deploy(long_loop(), "onnx")
    coord.execute(ExecutionRequest(resource_id=rid, input={"M": 1, "v0": [0.0]}))  # warm
    started = time.monotonic()
    result = coord.execute(ExecutionRequest(resource_id=rid, input=LONG, timeout=0.2))
    assert time.monotonic() - started < 0.6
    assert result.status is Status.TIMED_OUT and result.error is not None
    assert result.error.kind == "timeout"
    assert coord.status(result.execution_id).status is Status.TIMED_OUT


def test_cancel_a_submitted_execution(coord: Coordinator) -> None:
    rid = coord.deploy(long_loop(), "onnx")
    handle = coord.submit(ExecutionRequest(resource_id=rid, input=LONG, timeout=10))
    deadline = time.monotonic() + 5
    while coord.status(handle.execution_id).status is not Status.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert coord.cancel(handle.execution_id)
    result = handle.result(timeout=5)
    assert result.status is Status.CANCELLED and result.error is not None
    assert result.error.kind == "cancelled"


def test_cli_deploys_and_executes_with_json_and_npz(tmp_path: Path) -> None:
    data = tmp_path / "cli-data"
    model = tmp_path / "clf.onnx"
    model.write_bytes(classifier())
    code, out = cli_json("deploy", str(model), "--type", "onnx", data_dir=data)
    assert code == 0, out
    rid = out["resource_id"]
    code, out = cli_json("exec", rid, "--input", json.dumps({"x": [[1, 2, 3, 4]]}),
                         data_dir=data)
    assert code == 0, out
    y = np.array(out["output"]["y"], np.float32)
    np.testing.assert_allclose(y, expected(np.array([[1, 2, 3, 4]], np.float32)), rtol=1e-5)
    npz = tmp_path / "x.npz"
    buffer = io.BytesIO()
    np.savez(buffer, x=np.ones((2, 4), np.float32))
    npz.write_bytes(buffer.getvalue())
    code, out = cli_json("exec", rid, "--input-file", str(npz), data_dir=data)
    assert code == 0 and len(out["output"]["y"]) == 2, out
    code, out = cli_json("exec", rid, "--input", '{"x": [[1, 2]]}', data_dir=data)
    assert code == 1 and out["error"]["kind"] == "invalid_request", out

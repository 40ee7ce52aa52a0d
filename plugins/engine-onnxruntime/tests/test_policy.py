"""The deploy-time model policy: hostile and malformed models are refused with the right kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from coordinator_engine_onnxruntime import ModelPolicyValidator, OnnxConfig, OnnxEngine
from coordinator_hookspecs import InvalidRequest, SecurityRejected


def validate(models: Any, code: bytes, **cfg: Any) -> None:
    external_dir = cfg.pop("external_dir", None)
    ModelPolicyValidator(OnnxConfig(**cfg), external_dir).validate_deploy(
        models.deploy_request(code))


def test_well_formed_models_are_admitted(models: Any) -> None:
    for code in (models.classifier(), models.if_model(), models.loop_model()):
        validate(models, code)


def test_corrupt_protobuf_is_invalid_request(models: Any) -> None:
    code = models.classifier()
    for bad in (b"\xff\xff\xff\xff garbage", code[: len(code) // 2], b"\x0a\x05abc"):
        with pytest.raises(InvalidRequest, match="not a valid ONNX model"):
            validate(models, bad)


def test_checker_failure_is_invalid_request_naming_the_problem(models: Any) -> None:
    graph = h.make_graph([h.make_node("Relu", ["missing"], ["y"], name="dangling")], "g",
                         [h.make_tensor_value_info("x", T.FLOAT, [1])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1])])
    with pytest.raises(InvalidRequest, match=r"onnx.checker refused the model: .*missing"):
        validate(models, models.finish(graph))


def test_inspect_refuses_garbage_before_validators(models: Any) -> None:
    engine = OnnxEngine(OnnxConfig())
    with pytest.raises(InvalidRequest, match="protobuf parse failed"):
        engine.inspect(models.deploy_request(b"\xff\xff\xff\xff"))


def test_size_cap(models: Any) -> None:
    code = models.classifier()
    with pytest.raises(SecurityRejected, match=f"model is {len(code)} bytes, over"):
        validate(models, code, max_model_bytes=len(code) - 1)


def test_foreign_op_inside_an_if_branch_is_refused_naming_node_and_path(models: Any) -> None:
    hostile = h.make_node("FusedMatMul", ["x", "x"], ["t"], domain="com.microsoft", name="sneaky")
    with pytest.raises(SecurityRejected) as info:
        validate(models, models.if_model(then_node=hostile))
    message = info.value.message
    assert "node 'sneaky' (com.microsoft:FusedMatMul)" in message
    assert "node 'branch' (ai.onnx:If) > then_branch" in message
    assert "not in onnxruntime.allowed_domains" in message


def test_model_local_function_in_a_foreign_domain_is_refused(models: Any) -> None:
    with pytest.raises(SecurityRejected,
                       match="model-local function 'Twice' is in domain 'evil.ops'"):
        validate(models, models.function_model("evil.ops"))


def test_function_body_is_walked(models: Any) -> None:
    # The function's own domain is allowed, but its body calls a contrib kernel.
    with pytest.raises(SecurityRejected, match=r"function 'custom:Twice'.*com.microsoft"):
        validate(models, models.function_model("custom", body_domain="com.microsoft"),
                 allowed_domains=["ai.onnx", "custom"])


def test_allowlisting_a_domain_admits_its_function(models: Any, run: Any) -> None:
    code = models.function_model("custom")
    validate(models, code, allowed_domains="ai.onnx,custom")
    engine = OnnxEngine(OnnxConfig(allowed_domains=["ai.onnx", "custom"]))
    assert run(engine, code, {"x": [1.5, -2.0]}).output["y"].tolist() == [3.0, -4.0]
    with pytest.raises(SecurityRejected, match="domain 'custom'"):
        run(OnnxEngine(OnnxConfig()), code, {"x": [1.5, -2.0]})


def test_denied_ops(models: Any) -> None:
    with pytest.raises(SecurityRejected, match="op 'Softmax', which is in onnxruntime.denied_ops"):
        validate(models, models.classifier(), denied_ops=["Softmax"])


def test_external_data_outside_the_model_is_refused(models: Any, tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"s" * 16)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    code = models.external_model("../secret.bin")
    with pytest.raises(SecurityRejected, match="external data is disabled"):
        validate(models, code)
    # Even when external data is allowed, "../" never leaves the model's directory.
    with pytest.raises(SecurityRejected, match="not a plain relative path"):
        validate(models, code, allow_external_data=True, external_dir=models_dir)
    (models_dir / "link.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(SecurityRejected, match="resolves outside the model's directory"):
        validate(models, models.external_model("link.bin"), allow_external_data=True,
                 external_dir=models_dir)
    with pytest.raises(SecurityRejected, match="not a plain relative path"):
        validate(models, models.external_model(str(tmp_path / "secret.bin")),
                 allow_external_data=True, external_dir=models_dir)


def test_engine_never_reads_external_data_even_if_the_validator_was_skipped(
        models: Any, run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # onnxruntime would resolve "secret.bin" against the working directory; the engine
    # refuses before onnxruntime sees the bytes.
    (tmp_path / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    monkeypatch.chdir(tmp_path)
    engine = OnnxEngine(OnnxConfig())
    with pytest.raises(SecurityRejected, match="external data is disabled"):
        run(engine, models.external_model("secret.bin"), {"x": np.zeros(4, np.float32)})
    assert len(engine.sessions) == 0


def test_allowed_external_data_is_read_by_the_engine_inside_its_directory(
        models: Any, run: Any, tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    code = models.external_model("w.bin")
    validate(models, code, allow_external_data=True, external_dir=tmp_path)
    with pytest.raises(SecurityRejected, match="past the end of 'w.bin'"):
        validate(models, models.external_model("w.bin", length=32), allow_external_data=True,
                 external_dir=tmp_path)
    engine = OnnxEngine(OnnxConfig(allow_external_data=True), tmp_path)
    out = run(engine, code, {"x": np.ones(4, np.float32)}).output["y"]
    assert out.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_constant_of_shape_2_pow_40_is_refused_at_deploy(models: Any) -> None:
    with pytest.raises(SecurityRejected) as info:
        validate(models, models.constant_of_shape(2**40))
    message = info.value.message
    assert "tensor 'y' produced by node 'fill' (ai.onnx:ConstantOfShape)" in message
    assert "static shape [1099511627776]" in message and "max_memory_mb" in message


def test_unloadable_model_is_refused_at_deploy(models: Any) -> None:
    # Passes onnx.checker but onnxruntime has no kernel for it: caught by the trial load.
    graph = h.make_graph([h.make_node("Twice", ["x"], ["y"], domain="custom", name="call")],
                         "nokernel", [h.make_tensor_value_info("x", T.FLOAT, [2])],
                         [h.make_tensor_value_info("y", T.FLOAT, [2])])
    code = models.finish(graph, [*models.OPSET, h.make_opsetid("custom", 1)])
    with pytest.raises(InvalidRequest, match="onnxruntime cannot load the model"):
        validate(models, code, allowed_domains=["ai.onnx", "custom"])

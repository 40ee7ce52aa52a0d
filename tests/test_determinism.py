"""The sources of nondeterminism a replay depends on being closed (docs/replay.md).

Real wasmtime and onnxruntime: a NaN computed from a non-canonical NaN comes out canonical,
modules using threads (shared memory) or relaxed SIMD are refused, two runs of the same
request use the same fee, and an ONNX engine configured without deterministic compute marks
its executions ``nondeterministic`` so that a replay compares their status only.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.cli.demo_workload import score_request
from coordinator_core.replay import replay
from coordinator_hookspecs import InvalidRequest, SecurityRejected

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: Adds 1.0 to the f32 whose bits are the argument and returns the bits of the sum.
NAN_WAT = """
(module (memory (export "memory") 1)
  (func (export "nan") (param i32) (result i32)
    (i32.reinterpret_f32 (f32.add (f32.reinterpret_i32 (local.get 0)) (f32.const 1)))))
"""
SHARED_MEMORY_WAT = '(module (memory (export "memory") 1 1 shared))'
RELAXED_SIMD_WAT = """
(module (memory (export "memory") 1)
  (func (export "main")
    (drop (f32x4.relaxed_madd (v128.const i32x4 0 0 0 0) (v128.const i32x4 0 0 0 0)
                              (v128.const i32x4 0 0 0 0)))))
"""
CANONICAL_NAN = 0x7FC00000


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Coordinator:
    with Coordinator.open(data_dir=tmp_path_factory.mktemp("determinism")) as opened:
        yield opened


def test_nan_results_are_canonical_and_fees_repeat(coord: Coordinator) -> None:
    rid = coord.deploy(NAN_WAT, "wasm", source_format="wat")
    # 0x7fa00001 is a signalling NaN with a payload: hardware would keep the payload
    request = ExecutionRequest(resource_id=rid, entry="nan", args=(0x7FA00001,))
    first, second = coord.execute(request), coord.execute(request)
    assert first.ok, first.error
    assert struct.pack("<i", first.output[0]) == struct.pack("<I", CANONICAL_NAN)
    assert (first.output, first.fee_used) == (second.output, second.fee_used)


def test_threads_and_relaxed_simd_are_refused(coord: Coordinator) -> None:
    with pytest.raises(SecurityRejected, match="shared"):
        coord.deploy(SHARED_MEMORY_WAT, "wasm", source_format="wat")
    with pytest.raises(InvalidRequest, match="relaxed SIMD"):
        coord.deploy(RELAXED_SIMD_WAT, "wasm", source_format="wat")


def _score(path: Path, deterministic: bool) -> None:
    overrides = {"onnxruntime": {"deterministic_compute": deterministic}}
    with Coordinator.open(data_dir=path, overrides=overrides) as c:
        model = c.deploy((EXAMPLES / "risk_model.onnx").read_bytes(), "onnx")
        for amount in (10, 2000):
            result = c.execute(score_request(model, "alice", amount, 1000))
            assert result.ok, result.error
            record = c.store.execution(result.execution_id)
            assert record is not None
            assert record.detail.get("nondeterministic", False) is (not deterministic)


def test_onnx_outputs_are_compared_exactly_when_deterministic(tmp_path: Path) -> None:
    _score(tmp_path / "src", deterministic=True)
    report = replay(tmp_path / "src", tmp_path / "dst")
    assert report.ok and report.replayed == 2 and report.nondeterministic == 0


def test_an_engine_marking_executions_nondeterministic(tmp_path: Path) -> None:
    _score(tmp_path / "src", deterministic=False)
    config = tmp_path / "c.toml"
    config.write_text("[onnxruntime]\ndeterministic_compute = false\n")
    report = replay(tmp_path / "src", tmp_path / "dst", config_path=config)
    assert report.ok and report.replayed == 2 and report.nondeterministic == 2


def test_random_number_operators_are_refused(coord: Coordinator) -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("RandomUniform", [], ["y"], shape=[2], dtype=TensorProto.FLOAT)
    graph = helper.make_graph([node], "random", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(SecurityRejected, match="RandomUniform"):
        coord.deploy(model.SerializeToString(), "onnx")

"""The process pool with the real engines. The example token contract gives the same
results, state and events from a worker process as on threads — including storage reads
through the worker's own read-only SQLite connection, traps, fee exhaustion and timeouts —
and the example ONNX model the same outputs, fee and input refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator_core import Coordinator, ExecutionRequest, Status

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN = EXAMPLES / "token.wat"


def amount_to(amount: int, name: str) -> bytes:
    return amount.to_bytes(8, "little") + name.encode()


CALLS: list[dict[str, Any]] = [
    {"caller": "treasury", "entry": "mint", "input": amount_to(100, "alice")},
    {"caller": "alice", "entry": "transfer", "input": amount_to(30, "bob")},
    {"caller": "bob", "entry": "balance", "input": b"bob"},
    {"caller": "alice", "entry": "balance", "input": b"alice"},
    {"caller": "bob", "entry": "transfer", "input": amount_to(31, "carol")},  # trap: too little
    {"caller": "mallory", "entry": "mint", "input": amount_to(5, "mallory")},  # trap: not treasury
    {"caller": "alice", "entry": "spin", "fee_limit": 50_000},  # fee exhausted
    {"caller": "alice", "entry": "spin", "fee_limit": 10**12, "timeout": 0.2},  # timed out
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Coordinator, Coordinator]]:
    pooled = Coordinator.open(
        data_dir=tmp_path_factory.mktemp("wasm-pooled"),
        overrides={"dispatch": {"executor": "processes", "processes": 1,
                                "process_engines": ["wasmtime", "onnxruntime"]}})
    threaded = Coordinator.open(data_dir=tmp_path_factory.mktemp("wasm-threaded"))
    with pooled, threaded:
        yield pooled, threaded


def test_token_contract_same_results_in_a_worker(pair: tuple[Coordinator, Coordinator]) -> None:
    pooled, threaded = pair
    assert pooled.metrics()["engines"]["wasmtime"]["executor"] == "processes"
    code = TOKEN.read_text()
    rids = [c.deploy(code, "wasm", source_format="wat", capabilities=["storage", "events"])
            for c in pair]
    assert rids[0] == rids[1]
    statuses = []
    for fields in CALLS:
        p, t = (c.execute(ExecutionRequest(resource_id=rids[0], **fields)) for c in pair)
        statuses.append(p.status)
        assert (p.status, p.output, p.effects) == (t.status, t.output, t.effects), fields
        assert (p.error.kind if p.error else None) == (t.error.kind if t.error else None)
        if p.status is not Status.TIMED_OUT:  # a timeout's fee depends on the clock
            assert p.fee_used == t.fee_used, fields
    assert statuses == [Status.SUCCEEDED] * 4 + [Status.FAILED] * 3 + [Status.TIMED_OUT]
    assert pooled.state(rids[0]) == threaded.state(rids[0])
    assert [e["payload"] for e in pooled.events(rids[0])] == [
        e["payload"] for e in threaded.events(rids[0])]
    assert pooled.metrics()["engines"]["wasmtime"]["workers"]["restarts"] == 0


def test_onnx_model_same_results_in_a_worker(pair: tuple[Coordinator, Coordinator]) -> None:
    assert pair[0].metrics()["engines"]["onnxruntime"]["executor"] == "processes"
    rids = [c.deploy((EXAMPLES / "risk_model.onnx").read_bytes(), "onnx") for c in pair]
    model = rids[0]
    assert rids[1] == model
    good = {"x": np.array([[0.5, 0.2, 1.0], [3.0, 0.9, 0.0]], dtype=np.float32)}
    bad = {"x": np.array([[0.5]], dtype=np.float32)}  # wrong shape: refused by the engine
    for inputs in (good, bad):
        p, t = (c.execute(ExecutionRequest(resource_id=model, input=inputs)) for c in pair)
        assert (p.status, p.fee_used) == (t.status, t.fee_used)
        assert (p.error.kind if p.error else None) == (t.error.kind if t.error else None)
        if p.ok:
            assert p.output.keys() == t.output.keys()
            for name in p.output:
                np.testing.assert_array_equal(p.output[name], t.output[name])


HYBRID_CALL = """
(module
  (import "env" "model_infer" (func $infer (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "%s")
  (func (export "main") (drop (call $infer (i32.const 0) (i32.const 64) (i32.const 64)
                                           (i32.const 0) (i32.const 128) (i32.const 64)))))
"""


def test_hybrid_call_in_a_worker_is_a_clear_engine_error(
    pair: tuple[Coordinator, Coordinator],
) -> None:
    pooled, _ = pair
    rid = pooled.deploy(HYBRID_CALL % ("ab" * 32), "wasm", source_format="wat",
                        capabilities=["models"])
    result = pooled.execute(ExecutionRequest(resource_id=rid))
    assert result.status is Status.FAILED and result.error is not None
    assert result.error.kind.value == "engine_error"
    assert "process-pool worker" in result.error.message

"""Dynamic batching of ONNX models through the whole coordinator: deploy options, concurrent
executions merged into one run and split back, each still its own execution (status, fee,
audit record), the queue's limits, cancel, and the statistics in metrics() and Prometheus."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_hookspecs import ErrorKind, InvalidRequest, Status
from tests.helpers import ECHO_WAT, cli_json, run_cli

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
B = np.array([0.1, -0.2, 0.3], np.float32)
TABLE = np.arange(30, dtype=np.float32).reshape(10, 3)
#: A queue delay no test waits out: batches in these tests run because they are full.
FOREVER_US = 60_000_000


def _model(graph: onnx.GraphProto, variant: str) -> bytes:
    # ``variant`` goes into doc_string: the same graph under another resource id, so one
    # test can deploy it batched and unbatched side by side.
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], doc_string=variant)
    model.ir_version = 8
    return model.SerializeToString()


def classifier(variant: str = "", first: str | int = "N") -> bytes:
    """Gemm + Softmax: x[first,4] -> y[first,3]."""
    return _model(h.make_graph(
        [h.make_node("Gemm", ["x", "W", "B"], ["z"]), h.make_node("Softmax", ["z"], ["y"])],
        "classifier", [h.make_tensor_value_info("x", T.FLOAT, [first, 4])],
        [h.make_tensor_value_info("y", T.FLOAT, [first, 3])],
        [nh.from_array(W, "W"), nh.from_array(B, "B")]), variant)


def lookup(variant: str = "") -> bytes:
    """Gather rows of a 10x3 table: i[N] int64 -> y[N,3]; an index past 9 fails at run time
    (the signature cannot tell), which is how one member of a batch can fail."""
    return _model(h.make_graph(
        [h.make_node("Gather", ["T", "i"], ["y"], axis=0)], "lookup",
        [h.make_tensor_value_info("i", T.INT64, ["N"])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])],
        [nh.from_array(TABLE, "T")]), variant)


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    # Enough submit workers that 64 executions are in the engine at once.
    with Coordinator.open(data_dir=tmp_path / "data",
                          overrides={"coordinator": {"workers": 64}}) as opened:
        yield opened


def model_stats(coord: Coordinator, rid: str) -> dict[str, Any]:
    stats: dict[str, Any] = coord.metrics()["engines"]["onnxruntime"]["models"][rid]
    return stats


def queued(coord: Coordinator, rid: str) -> int:
    """Requests in the model's batch queue (0 before its first execution built it)."""
    models = coord.metrics()["engines"]["onnxruntime"].get("models", {})
    return int(models[rid]["queued"]) if rid in models else 0


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.005)


def submit_all(coord: Coordinator, rid: str, inputs: list[dict[str, Any]]) -> list[Any]:
    handles = [coord.submit(ExecutionRequest(resource_id=rid, input=x, timeout=20.0))
               for x in inputs]
    return [handle.result(timeout=30.0) for handle in handles]


def test_200_concurrent_requests_match_unbatched_runs(coord: Coordinator) -> None:
    batched = coord.deploy(classifier(), "onnx", options={
        "max_batch_size": 32, "preferred_batch_sizes": [16, 32], "max_queue_delay_us": 3000})
    alone = coord.deploy(classifier("unbatched"), "onnx")
    rng = np.random.default_rng(18)
    inputs = [{"x": rng.standard_normal((1 + n % 3, 4)).astype(np.float32)}
              for n in range(200)]
    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(lambda x: coord.execute(
            ExecutionRequest(resource_id=batched, input=x, timeout=20.0)), inputs))
    references = [coord.execute(ExecutionRequest(resource_id=alone, input=x)) for x in inputs]
    for result, reference, given in zip(results, references, inputs, strict=True):
        assert result.status is Status.SUCCEEDED, result.error
        assert result.output["y"].shape == (given["x"].shape[0], 3)
        assert np.array_equal(result.output["y"], reference.output["y"])
    stats = model_stats(coord, batched)
    assert stats["requests"] == 200 and stats["rows"] == sum(x["x"].shape[0] for x in inputs)
    assert stats["mean_batch_size"] > 1.5, stats  # merged for real, not 200 single runs
    assert stats["retried_batches"] == 0
    # Each stays its own execution: one final audit record each, with its own fee.
    records = [r for r in coord.audit_records()
               if r.record_kind == "execution" and r.resource_id == batched]
    assert len({r.execution_id for r in records}) == 200
    assert sorted(r.fee_used for r in records) == sorted(r.fee_used for r in results)


def test_a_request_failing_in_a_batch_fails_alone(coord: Coordinator) -> None:
    rid = coord.deploy(lookup(), "onnx", options={
        "max_batch_size": 12, "max_queue_delay_us": FOREVER_US})
    indices = [np.array([n % 10], np.int64) for n in range(12)]
    indices[5] = np.array([42], np.int64)  # past the table: only onnxruntime notices
    results = submit_all(coord, rid, [{"i": i} for i in indices])
    bad = results[5]
    assert bad.status is Status.REJECTED and bad.error.kind is ErrorKind.INVALID_REQUEST
    assert "42" in bad.error.message and bad.fee_used > 0
    for n, result in enumerate(results):
        if n != 5:
            assert result.status is Status.SUCCEEDED, result.error
            assert np.array_equal(result.output["y"], TABLE[indices[n]])
    stats = model_stats(coord, rid)
    assert stats["retried_batches"] == 1 and stats["ran_alone"] == 12


def test_cancel_and_deadline_take_a_queued_request_out_of_its_batch(
        coord: Coordinator) -> None:
    rid = coord.deploy(classifier(), "onnx", options={
        "max_batch_size": 4, "max_queue_delay_us": FOREVER_US})
    x = np.ones((1, 4), np.float32)
    waiting = coord.submit(ExecutionRequest(resource_id=rid, input={"x": x}, timeout=20.0))
    expiring = coord.submit(ExecutionRequest(resource_id=rid, input={"x": x}, timeout=0.3))
    wait_until(lambda: queued(coord, rid) == 2, "both are queued")
    assert coord.cancel(waiting.execution_id)
    cancelled = waiting.result(timeout=5.0)
    assert cancelled.status is Status.CANCELLED and cancelled.fee_used == 0
    timed_out = expiring.result(timeout=5.0)
    assert timed_out.status is Status.TIMED_OUT and timed_out.fee_used == 0
    assert "queued" in timed_out.error.message
    assert model_stats(coord, rid)["queued"] == 0
    # The next four make a full batch of their own: the two that left are not in it.
    results = submit_all(coord, rid, [{"x": x}] * 4)
    assert all(r.status is Status.SUCCEEDED for r in results)
    stats = model_stats(coord, rid)
    assert stats["batch_sizes"] == {"4": 1} and stats["requests"] == 4


def test_queue_timeout_fails_a_request_still_queued(coord: Coordinator) -> None:
    rid = coord.deploy(classifier(), "onnx", options={
        "max_batch_size": 4, "max_queue_delay_us": FOREVER_US, "queue_timeout_us": 100_000})
    started = time.monotonic()
    result = coord.execute(ExecutionRequest(resource_id=rid, input={"x": np.ones((1, 4),
                                                                                 np.float32)}))
    assert result.status is Status.TIMED_OUT and result.fee_used == 0
    assert "queue_timeout_us (100000)" in result.error.message
    assert time.monotonic() - started < 3.0
    assert model_stats(coord, rid)["queued"] == 0


def test_a_full_queue_refuses_at_once_with_quota_exceeded(coord: Coordinator) -> None:
    rid = coord.deploy(classifier(), "onnx", options={
        "max_batch_size": 8, "max_queue_delay_us": FOREVER_US, "max_queue_size": 2})
    x = {"x": np.ones((1, 4), np.float32)}
    held = [coord.submit(ExecutionRequest(resource_id=rid, input=x, timeout=20.0))
            for _ in range(2)]
    wait_until(lambda: queued(coord, rid) == 2, "the queue is full")
    started = time.monotonic()
    refused = coord.execute(ExecutionRequest(resource_id=rid, input=x))
    assert time.monotonic() - started < 1.0
    assert refused.error.kind is ErrorKind.QUOTA_EXCEEDED and refused.fee_used == 0
    assert "max_queue_size 2" in refused.error.message
    for handle in held:
        coord.cancel(handle.execution_id)
        assert handle.result(timeout=5.0).status is Status.CANCELLED


def test_each_request_pays_its_share_of_the_batch_fee(coord: Coordinator) -> None:
    rid = coord.deploy(classifier(), "onnx", options={
        "max_batch_size": 8, "preferred_batch_sizes": [4], "max_queue_delay_us": FOREVER_US})
    # nodes = 2: alone, 1000 + 10*2 + ceil(10*2*elements/1000).
    rows = [1, 1, 1, 1]
    results = submit_all(coord, rid, [{"x": np.ones((r, 4), np.float32)} for r in rows])
    assert all(r.status is Status.SUCCEEDED for r in results)
    whole = 1000 + 20 + -(-20 * 16 // 1000)      # the batch of 16 elements as one run: 1021
    assert [r.fee_used for r in results] == [-(-whole * 4 // 16)] * 4 == [256] * 4
    alone = 1000 + 20 + -(-20 * 4 // 1000)       # what each would pay alone: 1021
    assert all(r.fee_used < alone for r in results)
    # Unequal members pay by their elements: 3 rows of 4 against 1 row of 4.
    results = submit_all(coord, rid, [{"x": np.ones((r, 4), np.float32)} for r in (3, 1)])
    whole = 1000 + 20 + -(-20 * 16 // 1000)
    assert [r.fee_used for r in results] == [-(-whole * 12 // 16), -(-whole * 4 // 16)]
    assert model_stats(coord, rid)["batch_sizes"] == {"2": 1, "4": 1}


def test_a_request_that_does_not_fit_runs_alone(coord: Coordinator) -> None:
    rid = coord.deploy(classifier(), "onnx", options={
        "max_batch_size": 2, "max_queue_delay_us": FOREVER_US})
    big = np.ones((5, 4), np.float32)  # more rows than max_batch_size
    result = coord.execute(ExecutionRequest(resource_id=rid, input={"x": big}))
    assert result.status is Status.SUCCEEDED and result.output["y"].shape == (5, 3)
    assert result.fee_used == 1000 + 20 + 1  # alone, the fee alone
    assert model_stats(coord, rid)["ran_alone"] == 1


def test_options_are_checked_at_deploy(coord: Coordinator, tmp_path: Path) -> None:
    fixed = classifier("fixed", first=1)
    cases: list[tuple[bytes | str, str, dict[str, Any], str]] = [
        (fixed, "onnx", {"max_batch_size": 4}, "fixed first dimension 1"),
        (classifier(), "onnx", {"max_batch_size": "8"}, "'max_batch_size' must be an integer"),
        (classifier(), "onnx", {"max_batch_size": True}, "'max_batch_size' must be an integer"),
        (classifier(), "onnx", {"max_batch_size": 0}, "'max_batch_size' must be at least 1"),
        (classifier(), "onnx", {"max_batch": 8}, "unknown deploy option 'max_batch'"),
        (classifier(), "onnx", {"max_queue_size": 4}, "'max_queue_size' needs max_batch_size"),
        (classifier(), "onnx", {"max_batch_size": 4, "preferred_batch_sizes": [8]},
         "'preferred_batch_sizes' holds 8"),
        (classifier(), "onnx", {"instances": 10_000}, "'instances' is 10000"),
        (ECHO_WAT, "wasm", {"max_batch_size": 4}, "the wasmtime engine does not"),
    ]
    for code, kind, options, message in cases:
        with pytest.raises(InvalidRequest, match=message):
            coord.deploy(code, kind, options=options,
                         source_format="wat" if isinstance(code, str) else "binary")
    assert coord.resources() == []
    refusals = [r for r in coord.audit_records() if r.record_kind == "deploy"]
    assert len(refusals) == len(cases) and all(r.status == "rejected" for r in refusals)
    # Accepted options are stored; the same bytes with other options are refused.
    rid = coord.deploy(classifier(), "onnx", options={"max_batch_size": 4})
    assert coord.resource(rid).options == {"max_batch_size": 4}
    assert coord.deploy(classifier(), "onnx", options={"max_batch_size": 4}) == rid
    with pytest.raises(InvalidRequest, match="already deployed with options"):
        coord.deploy(classifier(), "onnx", options={"max_batch_size": 8})


def test_instances_serve_unbatched_runs(coord: Coordinator) -> None:
    rid = coord.deploy(classifier(), "onnx", options={"instances": 2})
    x = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    results = submit_all(coord, rid, [{"x": x}] * 6)
    assert all(np.array_equal(r.output["y"], results[0].output["y"]) for r in results)
    stats = model_stats(coord, rid)
    assert stats["instances"] == 2 and stats["ran_alone"] == 6


def test_batch_metrics_in_prometheus(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    with Coordinator.open(data_dir=tmp_path / "data",
                          overrides={"coordinator": {"workers": 8}}) as coord:
        rid = coord.deploy(classifier(), "onnx", options={
            "max_batch_size": 4, "max_queue_delay_us": FOREVER_US})
        submit_all(coord, rid, [{"x": np.ones((1, 4), np.float32)}] * 8)
        sink = coord.registered("metrics_sinks")["prometheus"]
        text = generate_latest(sink.registry).decode()
    labels = f'engine="onnxruntime",resource_id="{rid}"'
    bucket = 'coordinator_model_batch_size_bucket{engine="onnxruntime",le="%s",resource_id="%s"}'
    assert bucket % ("4.0", rid) + " 2.0" in text  # prometheus_client sorts label names
    assert bucket % ("2.0", rid) + " 0.0" in text
    assert f"coordinator_model_batch_size_sum{{{labels}}} 8.0" in text
    assert f"coordinator_model_queue_duration_seconds_count{{{labels}}} 8.0" in text
    assert f"coordinator_model_compute_duration_seconds_count{{{labels}}} 2.0" in text
    assert f"coordinator_model_queued{{{labels}}} 0.0" in text


def test_cli_deploy_option_kept_across_reopen(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(classifier())
    data = tmp_path / "data"
    code, out = cli_json("deploy", str(model), "--type", "onnx", "--option",
                         "max_batch_size=8", "--option", "preferred_batch_sizes=[4,8]",
                         data_dir=data)
    assert code == 0 and out["options"] == {"max_batch_size": 8,
                                            "preferred_batch_sizes": [4, 8]}
    code, listed = cli_json("resources", data_dir=data)
    assert code == 0 and listed[0]["options"] == out["options"]
    plain = run_cli("resources", data_dir=data)
    assert "options: max_batch_size=8 preferred_batch_sizes=[4,8]" in plain.stdout
    code, ran = cli_json("exec", out["resource_id"], "--input", '{"x": [[1, 2, 3, 4]]}',
                         data_dir=data)
    assert code == 0 and ran["status"] == "succeeded"
    bad = run_cli("deploy", str(model), "--type", "onnx", "--option", "max_batch_size",
                  data_dir=data)
    assert bad.returncode == 2 and "is not KEY=VALUE" in bad.stderr
    bad = run_cli("deploy", str(model), "--type", "onnx", "--option", "instances=two",
                  data_dir=data)
    assert bad.returncode == 2 and "'instances' must be an integer" in bad.stderr


def test_the_dashboard_finds_a_batching_models_series(coord: Coordinator) -> None:
    """The dashboard's sampler keeps a batching model's batch sizes, queue and compute time
    from the metrics snapshot (it finds them by name, so this pins the names it relies on)."""
    from coordinator_server.dashboard.series import model_series

    rid = coord.deploy(classifier(), "onnx", options={
        "max_batch_size": 8, "max_queue_delay_us": 2000})
    x = {"x": np.ones((1, 4), np.float32)}
    assert all(r.ok for r in submit_all(coord, rid, [x] * 16))
    prefix = f"engines.onnxruntime.models.{rid}."
    series = {k[len(prefix):]: v for k, v in model_series(coord.metrics()).items()
              if k.startswith(prefix)}
    assert series["batches"] >= 2 and series["mean_batch_size"] >= 1.0
    assert series["queue.count"] == 16 and series["compute.count"] >= 2, series

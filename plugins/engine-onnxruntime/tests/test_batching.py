"""Deploy options and the batcher at engine level: option checks, the batch axis rule, batch
formation by preferred sizes, a member cancelled while its batch runs, closing the engine."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from coordinator_engine_onnxruntime import OnnxConfig, OnnxEngine
from coordinator_engine_onnxruntime.options import (
    ServingOptions,
    batch_axis_problem,
    check_options,
    intra_threads,
)
from coordinator_hookspecs import (
    CancelToken,
    CoordinatorError,
    DeployRequest,
    EngineError,
    ErrorKind,
    ExecutionContext,
    ExecutionRequest,
    InvalidRequest,
    ResourceInfo,
)

from .conftest import classifier, finish, reference_classifier, rid_of

SIGNATURE = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["N", 4]}],
             "outputs": [{"name": "y", "dtype": "float32", "shape": ["N", 3]}]}


def test_options_normalised_and_refused_by_key() -> None:
    got = check_options({"max_batch_size": 8, "preferred_batch_sizes": [8, 4, 4]}, SIGNATURE)
    assert got == {"max_batch_size": 8, "preferred_batch_sizes": [4, 8]}
    assert ServingOptions.of(got).preferred_batch_sizes == (4, 8)
    for options, message in [
        ({"max_batch_size": 2.5}, "'max_batch_size' must be an integer, got float"),
        ({"instances": 0}, "'instances' must be at least 1"),
        ({"max_queue_delay_us": -1}, "'max_queue_delay_us' must be at least 0"),
        ({"max_batch_size": 4, "preferred_batch_sizes": []}, "non-empty list"),
        ({"max_batch_size": 4, "preferred_batch_sizes": "4"}, "non-empty list"),
        ({"queue_timeout_us": 5}, "'queue_timeout_us' needs max_batch_size > 1"),
        ({"batch": 1}, "unknown deploy option 'batch'"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            check_options(options, SIGNATURE)


@pytest.mark.parametrize(("spec", "reason"), [
    ({"name": "x", "dtype": "float32", "shape": [1, 4]}, "input 'x' has the fixed first "
     "dimension 1"),
    ({"name": "x", "dtype": "float32", "shape": None}, "input 'x' has an unknown rank"),
    ({"name": "x", "dtype": "float32", "shape": []}, "input 'x' is a scalar"),
    ({"name": "x", "dtype": "seq(float32)", "shape": None}, "is a seq(float32), not a tensor"),
])
def test_batch_axis_must_be_a_symbolic_first_dimension(spec: dict[str, Any],
                                                       reason: str) -> None:
    meta = {**SIGNATURE, "inputs": [spec]}
    problem = batch_axis_problem(meta)
    assert problem is not None and reason in problem
    with pytest.raises(InvalidRequest, match="'max_batch_size' refused"):
        check_options({"max_batch_size": 2}, meta)
    assert batch_axis_problem(SIGNATURE) is None
    fixed_out = {**SIGNATURE, "outputs": [{"name": "y", "dtype": "float32", "shape": [2, 3]}]}
    assert "output 'y' has the fixed first dimension 2" in str(batch_axis_problem(fixed_out))
    assert "no inputs" in str(batch_axis_problem({"inputs": [], "outputs": []}))


def test_intra_op_threads_divided_among_instances() -> None:
    import os

    cores = os.cpu_count() or 1
    assert intra_threads(4, 1) == min(4, cores)
    assert intra_threads(4, cores) == 1
    assert intra_threads(1, 1) == 1


def test_inspect_keeps_checked_options() -> None:
    engine = OnnxEngine(OnnxConfig())
    code = classifier()
    meta = engine.inspect(DeployRequest(code=code, resource_type="onnx",
                                        resource_id=rid_of(code),
                                        options={"max_batch_size": 4}))
    assert meta["options"] == {"max_batch_size": 4}
    engine.close()


def context(code: bytes, options: dict[str, Any], inputs: Any,
            token: CancelToken | None = None) -> ExecutionContext:
    rid = rid_of(code)
    return ExecutionContext(
        execution_id="t", request=ExecutionRequest(resource_id=rid, input=inputs),
        resource=ResourceInfo(id=rid, type="onnx", meta={"options": options}),
        fee_limit=10**9, token=token or CancelToken(time.monotonic() + 10.0),
        state_get={}.get, load_code=lambda: code)


def run_all(engine: OnnxEngine, contexts: list[ExecutionContext]) -> list[Any]:
    out: list[Any] = [None] * len(contexts)

    def one(n: int) -> None:
        try:
            out[n] = engine.execute(contexts[n])
        except CoordinatorError as exc:
            out[n] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(contexts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return out


def test_batches_cut_to_preferred_sizes() -> None:
    engine = OnnxEngine(OnnxConfig())
    code = classifier()
    options = {"max_batch_size": 8, "preferred_batch_sizes": [3],
               "max_queue_delay_us": 60_000_000}
    xs = [np.full((1, 4), n, np.float32) for n in range(6)]
    results = run_all(engine, [context(code, options, {"x": x}) for x in xs])
    for result, x in zip(results, xs, strict=True):
        assert np.allclose(result.output["y"], reference_classifier(x), atol=1e-6)
    stats = engine.model_stats()[rid_of(code)]
    assert stats["batch_sizes"] == {"3": 2} and stats["queued"] == 0
    engine.close()


def batched_loop() -> bytes:
    """v[N,1] = x[N,1] + M with M = 10**9 Loop iterations: a batch that runs until stopped."""
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]),
         h.make_node("Add", ["v_in", "one"], ["v_out"], name="step")],
        "body",
        [h.make_tensor_value_info("i", T.INT64, []),
         h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("v_in", T.FLOAT, ["N", 1])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []),
         h.make_tensor_value_info("v_out", T.FLOAT, ["N", 1])],
        [nh.from_array(np.array([1.0], np.float32), "one")])
    graph = h.make_graph(
        [h.make_node("Loop", ["M", "cond", "x"], ["v"], body=body, name="loop")], "loop",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 1])],
        [h.make_tensor_value_info("v", T.FLOAT, ["N", 1])],
        [nh.from_array(np.array(10**9, np.int64), "M"), nh.from_array(np.array(True), "cond")])
    return finish(graph)


def test_cancelling_every_member_of_a_running_batch_terminates_it() -> None:
    """One member cancelled while its batch runs leaves the batch running for the other;
    cancelling the other too sets the batch's terminate flag. Both had started: both are
    cancelled with their fee charged."""
    engine = OnnxEngine(OnnxConfig())
    code = batched_loop()
    options = {"max_batch_size": 2, "max_queue_delay_us": 60_000_000}
    tokens = [CancelToken(time.monotonic() + 20.0) for _ in range(2)]
    contexts = [context(code, options, {"x": np.ones((1, 1), np.float32)}, tokens[n])
                for n in range(2)]
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.extend(run_all(engine, contexts)))
    thread.start()
    rid = rid_of(code)
    deadline = time.monotonic() + 10
    while engine.model_stats().get(rid, {}).get("queued", 1) or thread.ident is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)  # both taken into the running batch (the queue is empty)
    tokens[0].cancel()
    time.sleep(0.2)
    assert thread.is_alive()  # the other member still runs the batch
    started = time.monotonic()
    tokens[1].cancel()
    thread.join(10)
    assert time.monotonic() - started < 5
    for result in out:
        assert isinstance(result, CoordinatorError) and result.kind is ErrorKind.CANCELLED
        assert result.fee_used > 0
    engine.close()


def test_close_fails_queued_requests_as_engine_errors() -> None:
    engine = OnnxEngine(OnnxConfig())
    code = classifier()
    options = {"max_batch_size": 4, "max_queue_delay_us": 60_000_000}
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.extend(run_all(
        engine, [context(code, options, {"x": np.ones((1, 4), np.float32)})])))
    thread.start()
    deadline = time.monotonic() + 10
    while not engine.model_stats().get(rid_of(code), {}).get("queued"):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    engine.close()
    thread.join(10)
    assert isinstance(out[0], EngineError) and "closed while the request was queued" in \
        out[0].message


def test_merged_feeds_equal_numpy_concatenation() -> None:
    """``feeds_of`` joins the members' bytes instead of calling ``np.concatenate``: the result
    must be the same arrays, for strided inputs, several trailing dimensions, dtypes of
    every width, and string tensors (which it leaves to numpy)."""
    from coordinator_engine_onnxruntime.batcher import Pending
    from coordinator_engine_onnxruntime.serving import feeds_of

    rng = np.random.default_rng(7)
    members = []
    for rows in (1, 3, 2):
        feeds = {
            "f": rng.standard_normal((rows, 2, 5)).astype(np.float32),
            "strided": rng.integers(-9, 9, (5, rows)).astype(np.int64).T,  # not C-contiguous
            "flag": rng.integers(0, 2, (rows, 1)).astype(np.bool_),
            "text": np.array([[f"row-{rows}-{i}"] for i in range(rows)], dtype=object),
        }
        members.append(Pending(feeds, rows, (), 0, None))
    merged = feeds_of(members, ["f", "strided", "flag", "text"])
    for name in ("f", "strided", "flag", "text"):
        expected = np.concatenate([m.feeds[name] for m in members])
        assert merged[name].dtype == expected.dtype
        assert merged[name].shape == expected.shape == (6, *expected.shape[1:])
        assert np.array_equal(merged[name], expected)
    assert feeds_of(members[:1], ["f"]) is members[0].feeds

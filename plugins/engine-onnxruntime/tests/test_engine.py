"""The engine on well-formed models: outputs, input checks, fee, cache, meta."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from coordinator_engine_onnxruntime import OnnxConfig, OnnxEngine
from coordinator_hookspecs import FeeExhausted, InvalidRequest


def test_classifier_matches_numpy(engine: OnnxEngine, run: Any, models: Any) -> None:
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    result = run(engine, models.classifier(), {"x": x})
    assert set(result.output) == {"y"}
    np.testing.assert_allclose(result.output["y"], models.reference_classifier(x), rtol=1e-5)


def test_lists_and_json_dicts_are_converted(engine: OnnxEngine, run: Any, models: Any) -> None:
    rows = [[0.5, -1.0, 2.0, 0.0], [1, 2, 3, 4]]
    expected = models.reference_classifier(np.array(rows, np.float32))
    code = models.classifier()
    for value in (rows, {"data": [v for row in rows for v in row], "shape": [2, 4]},
                  {"data": rows, "dtype": "float32"}):
        out = run(engine, code, {"x": value}).output["y"]
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_text_and_bytes_input_are_decoded_as_json(engine: OnnxEngine, run: Any,
                                                   models: Any) -> None:
    text = json.dumps({"x": [[1, 2, 3, 4]]})
    for given in (text, text.encode()):
        out = run(engine, models.classifier(), given).output["y"]
        np.testing.assert_allclose(out, models.reference_classifier(
            np.array([[1, 2, 3, 4]], np.float32)), rtol=1e-5)


def test_if_runs_the_chosen_subgraph(engine: OnnxEngine, run: Any, models: Any) -> None:
    code, x = models.if_model(), np.array([1.0, 2.0, 3.0], np.float32)
    assert run(engine, code, {"c": np.array(True), "x": x}).output["y"].tolist() == [2, 4, 6]
    assert run(engine, code, {"c": np.array(False), "x": x}).output["y"].tolist() == [0, 1, 2]


def test_loop_runs_to_completion_when_short(engine: OnnxEngine, run: Any, models: Any) -> None:
    out = run(engine, models.loop_model(), {"M": np.array(25, np.int64),
                                            "v0": np.zeros(1, np.float32)})
    assert out.output["v"].tolist() == [25.0]


@pytest.mark.parametrize(("inputs", "message"), [
    ({"x": np.zeros((1, 4), np.float32), "z": [1]}, "unknown input 'z'"),
    ({}, "missing input 'x'"),
    ({"x": np.zeros((1, 4), np.float64)}, "input 'x' is an array of float64; expected x: float32"),
    ({"x": np.zeros(4, np.float32)}, "input 'x' has rank 1"),
    ({"x": np.zeros((2, 5), np.float32)}, "input 'x' has 5 at axis 1"),
    ({"x": [[1, 2, 3]]}, "input 'x' has 3 at axis 1"),
    ({"x": [[1, 2], [3]]}, "input 'x' is not a rectangular array"),
    ({"x": [["a", "b", "c", "d"]]}, "input 'x' holds string values"),
    ({"x": {"data": [1, 2, 3, 4], "shape": [3, 3]}}, "input 'x' has 4 elements"),
    ({"x": {"data": [1, 2, 3, 4], "dtype": "int8"}}, "input 'x' says dtype 'int8'"),
    ([1, 2], "must be a mapping"),
    ("[1, 2]", "must be a JSON object"),
])
def test_bad_inputs_are_invalid_requests_naming_the_input(
        engine: OnnxEngine, run: Any, models: Any, inputs: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        run(engine, models.classifier(), inputs)
    assert message in info.value.message
    assert info.value.fee_used == 0


def test_integer_inputs_refuse_floats_and_out_of_range(engine: OnnxEngine, run: Any,
                                                        models: Any) -> None:
    code = models.loop_model()
    with pytest.raises(InvalidRequest, match="input 'M' holds floating-point values"):
        run(engine, code, {"M": 2.5, "v0": [0.0]})
    with pytest.raises(InvalidRequest, match="outside the range of int64"):
        run(engine, code, {"M": 2**70, "v0": [0.0]})
    assert run(engine, code, {"M": 3, "v0": [0.5]}).output["v"].tolist() == [3.5]


def test_named_dimensions_must_agree(engine: OnnxEngine, run: Any, models: Any) -> None:
    from onnx import TensorProto as T
    from onnx import helper as h

    graph = h.make_graph([h.make_node("Add", ["a", "b"], ["c"])], "add",
                         [h.make_tensor_value_info("a", T.FLOAT, ["N"]),
                          h.make_tensor_value_info("b", T.FLOAT, ["N"])],
                         [h.make_tensor_value_info("c", T.FLOAT, ["N"])])
    code = models.finish(graph)
    with pytest.raises(InvalidRequest, match="dimension 'N' is 2 in input 'a' but 3 in input 'b'"):
        run(engine, code, {"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]})
    assert run(engine, code, {"a": [1.0], "b": [2.0]}).output["c"].tolist() == [3.0]


def test_fee_is_deterministic_and_checked_before_running(engine: OnnxEngine, run: Any,
                                                          models: Any) -> None:
    cfg, code = engine.cfg, models.classifier()
    x = np.ones((64, 4), np.float32)
    expected = cfg.fee_base + 2 * cfg.fee_per_node + -(-cfg.fee_per_1k_element_nodes * 256 * 2
                                                       // 1000)
    assert run(engine, code, {"x": x}).fee_used == expected
    assert run(engine, code, {"x": x}).fee_used == expected
    assert run(engine, code, {"x": x[:1]}).fee_used < expected
    with pytest.raises(FeeExhausted) as info:
        run(engine, code, {"x": x}, fee_limit=expected - 1)
    assert info.value.fee_used == 0
    assert f"costs {expected}" in info.value.message


def test_inspect_meta_is_json_signature(engine: OnnxEngine, models: Any) -> None:
    meta = engine.inspect(models.deploy_request(models.classifier()))
    assert json.loads(json.dumps(meta)) == meta
    assert meta["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 4]}]
    assert meta["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["N", 3]}]
    assert meta["node_count"] == 2
    loop_meta = engine.inspect(models.deploy_request(models.loop_model()))
    assert loop_meta["node_count"] == 3  # the Loop and the two nodes of its body
    assert {"name": "M", "dtype": "int64", "shape": []} in loop_meta["inputs"]


def test_session_cache_is_bounded_lru(run: Any, models: Any) -> None:
    engine = OnnxEngine(OnnxConfig(session_cache_size=2))
    codes = [models.classifier(), models.if_model(), models.loop_model()]
    feeds = [{"x": np.ones((1, 4), np.float32)},
             {"c": np.array(True), "x": np.ones(3, np.float32)},
             {"M": np.array(1, np.int64), "v0": np.zeros(1, np.float32)}]
    for code, inputs in zip(codes, feeds, strict=True):
        run(engine, code, inputs)
        assert len(engine.sessions) <= 2
    rids = [models.rid_of(c) for c in codes]
    assert [engine.holds(r) for r in rids] == [False, True, True]
    run(engine, codes[1], feeds[1])  # touch: the Loop model is now the oldest
    run(engine, codes[0], feeds[0])
    assert [engine.holds(r) for r in rids] == [True, True, False]
    engine.close()
    assert not engine.health() and len(engine.sessions) == 0


def test_concurrent_executions_with_evictions(run: Any, models: Any) -> None:
    # Cache of one, three models, four threads: sessions are evicted while other threads
    # still run them; every result must still be right.
    import threading

    engine = OnnxEngine(OnnxConfig(session_cache_size=1))
    cases = [
        (models.classifier(), {"x": np.ones((2, 4), np.float32)}, "y",
         models.reference_classifier(np.ones((2, 4), np.float32))),
        (models.if_model(), {"c": np.array(True), "x": np.ones(3, np.float32)}, "y",
         np.full(3, 2.0, np.float32)),
        (models.loop_model(), {"M": 5, "v0": [1.0]}, "v", np.array([6.0], np.float32)),
    ]
    failures: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(30):
                code, inputs, name, want = cases[(i + offset) % 3]
                np.testing.assert_allclose(run(engine, code, inputs).output[name], want,
                                           rtol=1e-5)
        except BaseException as exc:  # collected for the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(engine.sessions) == 1

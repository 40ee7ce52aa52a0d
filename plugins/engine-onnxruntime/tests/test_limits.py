"""Deadline, cancel and memory: long or greedy models end with the right kind, process alive."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from coordinator_engine_onnxruntime import OnnxConfig, OnnxEngine
from coordinator_hookspecs import Cancelled, CancelToken, ErrorKind, Timeout, Trap

LONG = {"M": np.array(10**12, np.int64), "v0": np.zeros(1, np.float32)}


def arm(token: CancelToken, after: float, reason: ErrorKind) -> threading.Timer:
    """Cancel ``token`` after ``after`` seconds, as the core's watchdog or cancel would."""
    timer = threading.Timer(after, token.cancel, (reason,))
    timer.daemon = True
    timer.start()
    return timer


def test_timeout_of_0_2_s_on_a_long_loop_ends_within_0_6_s(engine: OnnxEngine, run: Any,
                                                             models: Any) -> None:
    code = models.loop_model()
    run(engine, code, {"M": np.array(1, np.int64), "v0": np.zeros(1, np.float32)})  # warm
    token = CancelToken(time.monotonic() + 0.2)
    arm(token, 0.2, ErrorKind.TIMEOUT)
    started = time.monotonic()
    with pytest.raises(Timeout) as info:
        run(engine, code, LONG, token=token)
    elapsed = time.monotonic() - started
    assert elapsed < 0.6, elapsed
    assert info.value.fee_used == engine.fee(3, 2)
    assert "deadline" in info.value.message


def test_one_long_kernel_overruns_then_ends_as_timeout(engine: OnnxEngine, run: Any,
                                                       models: Any) -> None:
    # One MatMul (about 7 GFLOP) has no point where the terminate flag is checked: the run
    # finishes past the deadline, and the engine still reports the timeout.
    from onnx import TensorProto as T
    from onnx import helper as h

    n = 1536
    graph = h.make_graph([h.make_node("MatMul", ["a", "b"], ["c"], name="big")], "mm",
                         [h.make_tensor_value_info("a", T.FLOAT, [n, n]),
                          h.make_tensor_value_info("b", T.FLOAT, [n, n])],
                         [h.make_tensor_value_info("c", T.FLOAT, [n, n])])
    code, a = models.finish(graph), np.ones((n, n), np.float32)
    run(engine, code, {"a": a, "b": a})  # warm the session
    token = CancelToken()  # only the timer decides, so a slow start cannot change the path
    arm(token, 0.002, ErrorKind.TIMEOUT)
    with pytest.raises(Timeout, match="passed its deadline"):
        run(engine, code, {"a": a, "b": a}, token=token)


def test_cancel_stops_a_running_loop(engine: OnnxEngine, run: Any, models: Any) -> None:
    token = CancelToken(time.monotonic() + 30)
    arm(token, 0.05, ErrorKind.CANCELLED)
    with pytest.raises(Cancelled, match="cancelled while running"):
        run(engine, models.loop_model(), LONG, token=token)
    # The session is intact: a later run on it completes.
    out = run(engine, models.loop_model(), {"M": 4, "v0": [1.0]})
    assert out.output["v"].tolist() == [5.0]


def test_already_cancelled_or_expired_never_runs(engine: OnnxEngine, run: Any,
                                                 models: Any) -> None:
    token = CancelToken(time.monotonic() + 30)
    token.cancel(ErrorKind.CANCELLED)
    with pytest.raises(Cancelled, match="before it started") as info:
        run(engine, models.loop_model(), LONG, token=token)
    assert info.value.fee_used == 0
    with pytest.raises(Timeout, match="before it started"):
        run(engine, models.loop_model(), LONG, token=CancelToken(time.monotonic() - 1))


def test_late_cancel_of_a_finished_execution_does_not_leak_into_the_next(
        engine: OnnxEngine, run: Any, models: Any) -> None:
    code, small = models.loop_model(), {"M": 2, "v0": [0.0]}
    first = CancelToken(time.monotonic() + 30)
    run(engine, code, small, token=first)
    first.cancel(ErrorKind.CANCELLED)  # arrives after the run: flips a flag nobody reads
    assert run(engine, code, small).output["v"].tolist() == [2.0]


def test_constant_of_shape_2_pow_40_at_run_time_is_a_trap(engine: OnnxEngine, run: Any,
                                                          models: Any) -> None:
    code = models.constant_of_shape(None)  # the size is only known from the input
    with pytest.raises(Trap, match="exceeded the memory cap") as info:
        run(engine, code, {"s": np.array([2**40], np.int64)})
    assert info.value.fee_used > 0
    # The process and the session are fine: small requests still run.
    assert run(engine, code, {"s": [3]}).output["y"].tolist() == [1.0, 1.0, 1.0]
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(run(engine, models.classifier(), {"x": x}).output["y"],
                               models.reference_classifier(x), rtol=1e-5)


def test_memory_cap_applies_below_what_the_machine_could_give(run: Any, models: Any) -> None:
    # 2**25 floats (128 MiB) would fit in RAM; with a 64 MiB cap it must fail cleanly.
    engine = OnnxEngine(OnnxConfig(max_memory_mb=64))
    code = models.constant_of_shape(None)
    with pytest.raises(Trap, match="memory cap"):
        run(engine, code, {"s": [2**25]})
    assert run(engine, code, {"s": [2**20]}).output["y"].shape == (2**20,)
    engine.close()
    OnnxEngine(OnnxConfig())  # put the default cap back for sessions built later


def test_constant_subgraphs_are_not_folded_outside_the_cap(run: Any, models: Any) -> None:
    # A constant ConstantOfShape (256 MiB) that reaches the engine without the deploy check:
    # with folding off it is computed at run time, inside the 64 MiB arena, and traps.
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    fill = h.make_node("ConstantOfShape", ["s"], ["c"], name="fill",
                       value=nh.from_array(np.array([1.0], np.float32)))
    total = h.make_node("ReduceSum", ["c"], ["y"], keepdims=0, name="sum")
    graph = h.make_graph([fill, total], "folded", [], [h.make_tensor_value_info("y", T.FLOAT, [])],
                         [nh.from_array(np.array([2**26], np.int64), "s")])
    engine = OnnxEngine(OnnxConfig(max_memory_mb=64))
    with pytest.raises(Trap, match="memory cap"):
        run(engine, models.finish(graph), {})
    engine.close()
    OnnxEngine(OnnxConfig())  # put the default cap back for sessions built later

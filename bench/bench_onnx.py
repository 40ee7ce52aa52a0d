"""ONNX engine: a tiny model through the whole coordinator vs plain ``sess.run``, side by side.

Issue 4's target: the coordinator adds at most 8 us per execution (p50) over a plain
``InferenceSession.run`` on the same session, batch 1 and batch 64. Variants run interleaved
in one process (``harness.interleaved``) so machine noise hits them alike; read the ratios.

Rows:
- ``plain sess.run``: ``sess.run(None, feeds)`` on the engine's own cached session.
- ``engine.execute``: the engine alone with a hand-built context (input check, fee,
  ``RunOptions`` + cancel callback, the run, the output mapping).
- ``coordinator.execute``: the whole pipeline with the embedded SQLite store in a temp dir
  (validation, security, quota, dispatch, engine, audit record, metrics).
- the run-call hazard of issue 4: ``sess.run`` given a ``RunOptions`` and
  ``run_with_ort_values``, relative to plain ``sess.run``.

Alone: ``.venv/bin/python -m bench.bench_onnx`` from the repository root.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from bench.harness import Table, interleaved, percentiles
from coordinator_core import Coordinator, ExecutionRequest
from coordinator_hookspecs import CancelToken, ExecutionContext

SECTION = "onnx"
SAMPLES = 3000
TARGET_US = 8.0


def tiny_model() -> bytes:
    """Gemm + Softmax, x[N,4] -> y[N,3]: the smallest model that still does real work."""
    rng = np.random.default_rng(0)
    graph = h.make_graph(
        [h.make_node("Gemm", ["x", "W", "B"], ["z"]), h.make_node("Softmax", ["z"], ["y"])],
        "tiny", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])],
        [nh.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W"),
         nh.from_array(rng.standard_normal(3).astype(np.float32), "B")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _p50_us(samples: list[float]) -> float:
    return percentiles(samples)[0] * 1e6


def run(table: Table) -> None:
    code = tiny_model()
    with tempfile.TemporaryDirectory() as tmp, Coordinator.open(data_dir=Path(tmp)) as coord:
        rid = coord.deploy(code, "onnx", name="tiny")
        engine = coord.engine_for("onnx")
        resource = coord.resource(rid)
        for batch in (1, 64):
            feeds = {"x": np.random.default_rng(batch).standard_normal((batch, 4))
                     .astype(np.float32)}
            request = ExecutionRequest(resource_id=rid, caller="bench", input=feeds)
            first = coord.execute(request)
            assert first.ok, first.error
            session = engine.sessions.get(rid, lambda: code).session

            def no_state(_key: bytes) -> bytes | None:
                return None

            def engine_only(request: ExecutionRequest = request) -> object:
                ctx = ExecutionContext(
                    execution_id="bench", request=request, resource=resource,
                    fee_limit=10**12, token=CancelToken(time.monotonic() + 5.0),
                    state_get=no_state, load_code=lambda: code)
                return engine.execute(ctx)

            def plain_run(feeds: dict[str, np.ndarray] = feeds,
                          session: ort.InferenceSession = session) -> object:
                return session.run(None, feeds)

            def full_run(request: ExecutionRequest = request) -> object:
                return coord.execute(request)

            samples = interleaved({"plain": plain_run, "engine": engine_only,
                                   "coordinator": full_run}, SAMPLES)
            plain, eng, full = (_p50_us(samples[k]) for k in ("plain", "engine", "coordinator"))
            note = f"batch {batch}, p50"
            table.add(SECTION, f"plain sess.run, batch {batch}", plain, "us", note=note)
            table.add(SECTION, f"engine.execute, batch {batch}", eng, "us",
                      note=f"engine overhead {eng - plain:.1f} us")
            table.add(SECTION, f"coordinator.execute, batch {batch}", full, "us", note=note)
            table.add(SECTION, f"coordinator overhead per execution, batch {batch}",
                      full - plain, "us", target=f"<= {TARGET_US:g} us",
                      ok=full - plain <= TARGET_US,
                      note=f"{full / plain:.1f}x plain; engine's share {eng - plain:.1f} us")
        _run_call_hazard(table, session, {"x": np.ones((1, 4), np.float32)})


def _run_call_hazard(table: Table, session: ort.InferenceSession,
                     feeds: dict[str, np.ndarray]) -> None:
    """Issue 4's measured trap: which run call keeps ``RunOptions.terminate`` cheap."""
    options = ort.RunOptions()
    values = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in feeds.items()}
    samples = interleaved({
        "plain": lambda: session.run(None, feeds),
        "fresh_options": lambda: session.run(None, feeds, ort.RunOptions()),
        "reused_options": lambda: session.run(None, feeds, options),
        "ort_values": lambda: session.run_with_ort_values(["y"], values, options),
    }, SAMPLES)
    plain = _p50_us(samples["plain"])
    for key, label in (("fresh_options", "sess.run + fresh RunOptions (engine's choice)"),
                       ("reused_options", "sess.run + reused RunOptions"),
                       ("ort_values", "run_with_ort_values + RunOptions")):
        value = _p50_us(samples[key])
        table.add(SECTION, label, value, "us", note=f"{value / plain:.2f}x plain sess.run")


if __name__ == "__main__":  # .venv/bin/python -m bench.bench_onnx (from the repo root)
    result = Table()
    run(result)
    for row in result.rows:
        print(f"{row.name:55s} {row.value:9.2f} {row.unit:3s} {row.target:10s} "
              f"{row.verdict:6s} {row.note}")

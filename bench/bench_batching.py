"""Dynamic batching: a mid-sized MLP served batched and unbatched, 64 concurrent submitters.

The model is generated here with ``onnx.helper``: x[N,384] -> Gemm 384x768 -> Relu -> Gemm
768x384 -> Relu -> Gemm 384x64 -> y[N,64], about 600k parameters (batch 1 takes some tens to
a hundred microseconds on one thread, depending on the CPU). It is deployed twice under two
ids (a doc string tells them apart): once with ``max_batch_size = MAX_BATCH``,
``max_queue_delay_us = DELAY_US`` and ``instances = INSTANCES``, once without options. 64
threads then call, in rounds alternating the two models so machine noise hits both alike:

- ``engine.execute`` with a hand-built context: the batcher's own gain (input check, fee,
  queue, one ``sess.run`` per batch, split), where the throughput target applies;
- ``Coordinator.execute``, the whole pipeline (security, quota, audit record per execution):
  its per-execution Python work is not batched, so the gain is smaller there.

Rows: throughput of each (executions/s), the batched/unbatched ratio (target >= 3x at the
engine), the batched p99 latency against ``max_queue_delay + 2 batch compute times`` (the
compute time of a batch is the p50 of ``sess.run`` of the batches that ran, from the model's
statistics), and the mean batch size.

On a machine shared with other work, the unbatched rows have an edge the batched ones lack:
64 threads each running ``sess.run`` get a larger share of the cores from the OS scheduler
than the batcher's ``INSTANCES`` runner threads do, and each runner waits for the GIL after
every run while the callers it woke hold it; read the rows next to the load average.

Alone: ``.venv/bin/python -m bench.bench_batching`` from the repository root.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from bench.harness import Table, percentiles
from coordinator_core import Coordinator, ExecutionRequest
from coordinator_hookspecs import CancelToken, ExecutionContext

SECTION = "batching"
SUBMITTERS = 64
DELAY_US = 500
MAX_BATCH = 32
ROUNDS = 3
INSTANCES = 2
ROUND_SECONDS = 1.5
LAYERS = (384, 768, 384, 64)


def mlp(variant: str) -> bytes:
    """The benchmark's MLP (see the module docstring); ``variant`` only changes the id."""
    rng = np.random.default_rng(18)
    nodes, inits, last = [], [], "x"
    for n, (fan_in, fan_out) in enumerate(itertools.pairwise(LAYERS)):
        inits += [nh.from_array((rng.standard_normal((fan_in, fan_out)) / fan_in ** 0.5)
                                .astype(np.float32), f"W{n}"),
                  nh.from_array(np.zeros(fan_out, np.float32), f"B{n}")]
        out = "y" if n == len(LAYERS) - 2 else f"h{n}"
        nodes.append(h.make_node("Gemm", [last, f"W{n}", f"B{n}"], [out + ("" if out == "y"
                                                                          else "_pre")]))
        if out != "y":
            nodes.append(h.make_node("Relu", [out + "_pre"], [out]))
        last = out
    graph = h.make_graph(nodes, "mlp", [h.make_tensor_value_info("x", T.FLOAT, ["N", LAYERS[0]])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", LAYERS[-1]])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], doc_string=variant)
    model.ir_version = 8
    return model.SerializeToString()


def parameters() -> int:
    return sum(a * b + b for a, b in itertools.pairwise(LAYERS))


def hammer(call: Callable[[], Any], seconds: float) -> tuple[int, list[float]]:
    """``SUBMITTERS`` threads calling ``call`` for ``seconds``: calls done, their latencies."""
    stop = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(SUBMITTERS)]
    clock = time.perf_counter

    def loop(mine: list[float]) -> None:
        while clock() < stop:
            t0 = clock()
            call()
            mine.append(clock() - t0)

    threads = [threading.Thread(target=loop, args=(mine,)) for mine in latencies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    merged = [x for mine in latencies for x in mine]
    return len(merged), merged


def run(table: Table) -> None:
    with tempfile.TemporaryDirectory() as tmp, Coordinator.open(
            data_dir=Path(tmp)) as coord:
        batched = coord.deploy(mlp("batched"), "onnx", name="mlp-batched", options={
            "max_batch_size": MAX_BATCH, "max_queue_delay_us": DELAY_US, "instances": INSTANCES})
        alone = coord.deploy(mlp("unbatched"), "onnx", name="mlp")
        engine = coord.engine_for("onnx")
        x = {"x": np.random.default_rng(1).standard_normal((1, LAYERS[0])).astype(np.float32)}
        calls: dict[str, Callable[[], Any]] = {}
        for label, rid in (("batched", batched), ("unbatched", alone)):
            resource = coord.resource(rid)
            request = ExecutionRequest(resource_id=rid, caller="bench", input=x, timeout=10.0)
            assert coord.execute(request).ok

            def engine_call(request: ExecutionRequest = request,
                            resource: Any = resource) -> Any:
                return engine.execute(ExecutionContext(
                    execution_id="bench", request=request, resource=resource,
                    fee_limit=10**12, token=CancelToken(time.monotonic() + 10.0),
                    state_get=lambda _k: None, load_code=lambda: b""))

            def full_call(request: ExecutionRequest = request) -> Any:
                result = coord.execute(request)
                assert result.ok, result.error
                return result

            calls[f"engine {label}"] = engine_call
            calls[f"coordinator {label}"] = full_call
        single = _batch1_compute(engine, alone, x)
        done: dict[str, int] = dict.fromkeys(calls, 0)
        spent: dict[str, float] = dict.fromkeys(calls, 0.0)
        latencies: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(ROUNDS):
            for name, call in calls.items():
                t0 = time.perf_counter()
                n, lat = hammer(call, ROUND_SECONDS)
                spent[name] += time.perf_counter() - t0
                done[name] += n
                latencies[name] += lat
        stats = coord.metrics()["engines"]["onnxruntime"]["models"][batched]
    compute_ms = stats["compute"]["p50_ms"]
    table.add(SECTION, "MLP batch 1, plain sess.run", single * 1e6, "us",
              note=f"{parameters():,} parameters, one intra-op thread")
    for level in ("engine", "coordinator"):
        rates = {k: done[f"{level} {k}"] / spent[f"{level} {k}"]
                 for k in ("batched", "unbatched")}
        ratio = rates["batched"] / rates["unbatched"]
        for k in ("batched", "unbatched"):
            p50, p99 = percentiles(latencies[f"{level} {k}"])
            table.add(SECTION, f"{level}.execute throughput, {k}", rates[k], "exec/s",
                      note=f"{SUBMITTERS} submitters; p50 {p50 * 1e3:.2f} ms, "
                      f"p99 {p99 * 1e3:.2f} ms")
        table.add(SECTION, f"{level}.execute batched / unbatched throughput", ratio, "x",
                  target=">= 3x" if level == "engine" else "",
                  ok=ratio >= 3 if level == "engine" else None,
                  note="the pipeline's per-execution work is not batched"
                  if level == "coordinator" else "")
    bound_ms = DELAY_US / 1e3 + 2 * compute_ms
    p99 = percentiles(latencies["engine batched"])[1] * 1e3
    table.add(SECTION, "engine.execute batched p99 latency", p99, "ms",
              target=f"<= {bound_ms:.2f} ms", ok=p99 <= bound_ms,
              note=f"max_queue_delay {DELAY_US / 1e3:g} ms + 2 x batch compute "
              f"{compute_ms:.2f} ms (p50)")
    p99 = percentiles(latencies["coordinator batched"])[1] * 1e3
    table.add(SECTION, "coordinator.execute batched p99 latency", p99, "ms",
              note=f"same bound {bound_ms:.2f} ms; queue p99 {stats['queue']['p99_ms']:.2f} ms")
    table.add(SECTION, "mean batch size", stats["mean_batch_size"], "requests",
              note=f"max_batch_size {MAX_BATCH}; {stats['batches']:,} batches")


def _batch1_compute(engine: Any, rid: str, x: dict[str, np.ndarray]) -> float:
    session = engine.sessions.get(rid, lambda: b"").session
    for _ in range(50):
        session.run(None, x)
    samples = []
    for _ in range(500):
        t0 = time.perf_counter()
        session.run(None, x)
        samples.append(time.perf_counter() - t0)
    return percentiles(samples)[0]


if __name__ == "__main__":  # .venv/bin/python -m bench.bench_batching (from the repo root)
    result = Table()
    run(result)
    for row in result.rows:
        print(f"{row.name:50s} {row.value:10.2f} {row.unit:8s} {row.target:12s} "
              f"{row.verdict:6s} {row.note}")

"""Dynamic batching: a mid-sized MLP served batched and unbatched, 64 concurrent submitters.

The model is generated here with ``onnx.helper``: x[N,640] -> Gemm 640x1024 -> Relu -> Gemm
1024x640 -> Relu -> Gemm 640x64 -> y[N,64], about 1.35M parameters. It is sized so that batch 1
takes about 0.1 ms on one thread of the benchmark machine (the row "MLP batch 1" says what it
took in this run): a smaller MLP stays in the L2 cache and runs batch 1 in a few tens of
microseconds, where the Python work of each execution, not ``sess.run``, is what is measured.
The row "MLP batch MAX_BATCH / batch 1" gives the ceiling batching can reach on this CPU: rows
per second of one ``sess.run`` over ``MAX_BATCH`` rows against ``MAX_BATCH`` runs of one row,
on one thread; no batcher can beat the CPU's own GEMM-over-GEMV gain.

The model is deployed under several ids (a doc string tells them apart): batched with
``max_batch_size = MAX_BATCH`` and ``max_queue_delay_us = DELAY_US``, once with one instance
(two intra-op threads) and once with two instances (one thread each), and once without
options (one session, one intra-op thread, called by all submitters at once: two ``sess.run``
run in parallel on the two cores, so the unbatched rows use both cores too). 64 threads then
call, in rounds alternating the models so machine noise hits all alike:

- ``engine.execute`` with a hand-built context: the batcher's own gain (input check, fee,
  queue, one ``sess.run`` per batch, split), where the throughput target applies;
- ``Coordinator.execute`` (two instances only), the whole pipeline (security, quota, audit
  record per execution): its per-execution Python work is not batched, so the gain is
  smaller there.

Rows: throughput of each (executions/s), the batched/unbatched ratio (target >= 3x at the
engine), the batched p99 latency against ``max_queue_delay + 2 batch compute times`` (the
compute time of a batch is the p50 of ``sess.run`` of the batches that ran, from the model's
statistics), and the mean batch size.

On a machine shared with other work, the unbatched rows have an edge the batched ones lack:
64 threads each running ``sess.run`` get a larger share of the cores from the OS scheduler
than the batcher's runner threads do, and each runner waits for the GIL after every run
while the callers it woke hold it; read the rows next to the load average.

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
LAYERS = (640, 1024, 640, 64)
#: The batched deployments: label -> instances.
BATCHED = {"batched, 1 instance": 1, "batched, 2 instances": 2}
#: The batched deployment also measured through the whole pipeline.
FULL = "batched, 2 instances"


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
        deployed = {label: coord.deploy(mlp(label), "onnx", name="mlp-batched", options={
            "max_batch_size": MAX_BATCH, "max_queue_delay_us": DELAY_US,
            "instances": instances}) for label, instances in BATCHED.items()}
        deployed["unbatched"] = coord.deploy(mlp("unbatched"), "onnx", name="mlp")
        engine = coord.engine_for("onnx")
        x = {"x": np.random.default_rng(1).standard_normal((1, LAYERS[0])).astype(np.float32)}
        calls: dict[str, Callable[[], Any]] = {}
        for label, rid in deployed.items():
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
            if label in (FULL, "unbatched"):
                calls[f"coordinator {label}"] = full_call
        single, gain = _compute(engine, deployed["unbatched"], x)
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
        models = coord.metrics()["engines"]["onnxruntime"]["models"]
        stats = {label: models[deployed[label]] for label in BATCHED}
    table.add(SECTION, "MLP batch 1, plain sess.run", single * 1e6, "us",
              note=f"{parameters():,} parameters, one intra-op thread")
    table.add(SECTION, f"MLP batch {MAX_BATCH} / batch 1, rows per second", gain, "x",
              note="plain sess.run on one thread: the most batching can gain on this CPU")
    rate = {name: done[name] / spent[name] for name in calls}
    for name in calls:
        p50, p99 = percentiles(latencies[name])
        level, label = name.split(" ", 1)
        table.add(SECTION, f"{level}.execute throughput, {label}", rate[name], "exec/s",
                  note=f"{SUBMITTERS} submitters; p50 {p50 * 1e3:.2f} ms, "
                  f"p99 {p99 * 1e3:.2f} ms")
    for label in BATCHED:
        ratio = rate[f"engine {label}"] / rate["engine unbatched"]
        table.add(SECTION, f"engine.execute {label} / unbatched throughput", ratio, "x",
                  target=">= 3x", ok=ratio >= 3)
    ratio = rate[f"coordinator {FULL}"] / rate["coordinator unbatched"]
    table.add(SECTION, f"coordinator.execute {FULL} / unbatched throughput", ratio, "x",
              note="the pipeline's per-execution work is not batched")
    for label in BATCHED:
        compute_ms = stats[label]["compute"]["p50_ms"]
        bound_ms = DELAY_US / 1e3 + 2 * compute_ms
        p99 = percentiles(latencies[f"engine {label}"])[1] * 1e3
        table.add(SECTION, f"engine.execute {label} p99 latency", p99, "ms",
                  target=f"<= {bound_ms:.2f} ms", ok=p99 <= bound_ms,
                  note=f"max_queue_delay {DELAY_US / 1e3:g} ms + 2 x batch compute "
                  f"{compute_ms:.2f} ms (p50); queue p99 {stats[label]['queue']['p99_ms']:.2f} ms")
        table.add(SECTION, f"mean batch size, {label}", stats[label]["mean_batch_size"],
                  "requests", note=f"max_batch_size {MAX_BATCH}; "
                  f"{stats[label]['batches']:,} batches")
    p99 = percentiles(latencies[f"coordinator {FULL}"])[1] * 1e3
    table.add(SECTION, f"coordinator.execute {FULL} p99 latency", p99, "ms")


def _compute(engine: Any, rid: str, x: dict[str, np.ndarray]) -> tuple[float, float]:
    """Batch 1 time of a plain ``sess.run`` (p50) and the rows/s gain of batch ``MAX_BATCH``."""
    session = engine.sessions.get(rid, lambda: b"").session
    wide = {"x": np.repeat(x["x"], MAX_BATCH, axis=0)}
    one, many = [], []
    for n in range(550):
        for feeds, samples in ((x, one), (wide, many)):
            t0 = time.perf_counter()
            session.run(None, feeds)
            if n >= 50:
                samples.append(time.perf_counter() - t0)
    p1, pn = percentiles(one)[0], percentiles(many)[0]
    return p1, p1 * MAX_BATCH / pn


if __name__ == "__main__":  # .venv/bin/python -m bench.bench_batching (from the repo root)
    result = Table()
    run(result)
    for row in result.rows:
        print(f"{row.name:50s} {row.value:10.2f} {row.unit:8s} {row.target:12s} "
              f"{row.verdict:6s} {row.note}")

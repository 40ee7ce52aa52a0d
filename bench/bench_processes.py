"""Throughput with cores: the pipeline in-process vs in 1, 2 and ``auto`` worker processes.

Coordinators stay open side by side on durable SQLite stores — ``[coordinator] processes``
= 0 (the in-process pipeline, ``workers`` threads), 1, 2 and ``auto`` — and each workload
runs on each of them in interleaved rounds (median kept), so machine noise hits all alike.
One producer thread keeps many executions in flight (``submit`` a batch, then wait for it),
the way a service's request handlers do. Workloads: the trivial wasm contract (echo), the
counter contract (a state write per execution, serialised per resource) and the tiny ONNX
model.

Reported: throughput per configuration; the ratios 2 vs 1 worker process (target >= 1.6x
for the trivial contract) and 1 worker process vs in-process (target >= 1.0x); p50/p99
latency from ``submit`` to the result; the writer's mean group size and its CPU share (the
coordinator's reader threads, which commit for the workers); audit on/off with 2 worker
processes (target >= 80%). docs/scaling.md builds its model of a larger machine on these.

Alone: ``.venv/bin/python bench/run.py --only processes``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import Table, percentiles
from coordinator_core import Coordinator, ExecutionRequest
from tests.helpers import ECHO_WAT  # the trivial contract the worker-process tests run

SECTION = "worker processes"
ROUNDS = 5
BATCH = 2_000
THREADS = 4  # worker threads: in-process, and in each worker process
AUTO = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
#: (name, processes, audit tracking, process_routing, threads)
CONFIGS: tuple[tuple[str, int, bool, str, int], ...] = (
    ("in-process", 0, True, "affinity", THREADS), ("1 process", 1, True, "affinity", THREADS),
    ("2 processes", 2, True, "affinity", THREADS),
    *((("auto", AUTO, True, "affinity", THREADS),) if AUTO not in (1, 2) else ()),
    ("2 processes, audit off", 2, False, "affinity", THREADS),
    ("2 processes, load routing", 2, True, "load", THREADS),
    ("1 process, 1 thread", 1, True, "affinity", 1),
    ("2 processes, 1 thread each", 2, True, "affinity", 1),
)
#: configurations that run only some workloads
ONLY = {"2 processes, audit off": "trivial contract",
        "2 processes, load routing": "counter contract",
        "1 process, 1 thread": "trivial contract",
        "2 processes, 1 thread each": "trivial contract"}
ROOT = Path(__file__).resolve().parent.parent


def _open(tmp: Path, name: str, processes: int, audit: bool, routing: str,
          threads: int) -> Coordinator:
    return Coordinator.open(data_dir=tmp / name.replace(" ", "-").replace(",", ""), overrides={
        "coordinator": {"processes": processes, "workers": threads,
                        "enable_audit_tracking": audit, "process_routing": routing}})


def _deploy(coord: Coordinator) -> dict[str, tuple[str, Any]]:
    from bench.bench_onnx import tiny_model

    echo = coord.deploy(ECHO_WAT, "wasm", source_format="wat")
    counter = coord.deploy((ROOT / "examples" / "counter.wat").read_text(), "wasm",
                           source_format="wat", capabilities=["storage"])
    model = coord.deploy(tiny_model(), "onnx", name="tiny")
    import numpy as np

    x = {"x": np.ones((1, 4), dtype=np.float32)}
    return {"trivial contract": (echo, b"x"), "counter contract": (counter, b""),
            "tiny ONNX model": (model, x)}


def _batch(coord: Coordinator, rid: str, data: Any, latencies: list[float] | None) -> float:
    """Executions per second of one batch kept in flight by one producer."""
    clock = time.perf_counter
    done_at: list[float] = []
    start = clock()
    submitted = []
    for _ in range(BATCH):
        handle = coord.submit(ExecutionRequest(resource_id=rid, input=data))
        submitted.append((clock(), handle))
        handle.future.add_done_callback(lambda _f: done_at.append(clock()))
    results = [h.result(timeout=120) for _, h in submitted]
    elapsed = clock() - start
    bad = [r for r in results if not r.ok]
    if bad:
        raise RuntimeError(f"{len(bad)} executions failed: {bad[0].error}")
    if latencies is not None:
        ends = sorted(done_at)
        latencies.extend(end - t for (t, _), end in zip(submitted, ends, strict=False))
    return BATCH / elapsed


def _reader_cpu(coord: Coordinator) -> float:
    """CPU seconds of the coordinator's threads that commit for its worker processes."""
    total = 0.0
    for thread in threading.enumerate():
        if thread.name.endswith("-reader") and thread.native_id is not None:
            try:
                stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _echo(conn: Any) -> None:
    while (message := conn.recv_bytes()) != b"stop":
        conn.send_bytes(message)


def _pipe_round_trip(table: Table) -> None:
    """The transport's own cost: one execution's message each way over a pipe, with the
    coordinator's pickling (``workers/channel.py``), to a process that echoes it."""
    import multiprocessing

    from coordinator_core.workers.channel import dumps
    from coordinator_hookspecs import ExecutionRequest as Request

    parent, child = multiprocessing.get_context("spawn").Pipe()
    proc = multiprocessing.get_context("spawn").Process(target=_echo, args=(child,))
    proc.start()
    message = ("run", "ex-0123456789-00000001", Request(resource_id="a" * 64, input=b"x"), 1.0)
    samples = []
    for _ in range(3000):
        start = time.perf_counter()
        parent.send_bytes(dumps(message))
        parent.recv_bytes()
        samples.append(time.perf_counter() - start)
    parent.send_bytes(b"stop")
    proc.join(10)
    p50, p99 = percentiles(samples[200:])
    table.add(SECTION, "pipe round trip of one execution's message (pickle, send, echo)",
              p50 * 1e6, "us", note=f"p99 {p99 * 1e6:.0f} us; a thread wake-up on each side")


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cost_model(table: Table, coord: Coordinator, rid: str, data: Any) -> None:
    """CPU per execution of the trivial contract in each part, with one worker process, and
    what they predict for a machine with more cores (docs/scaling.md explains the model)."""
    store: Any = coord.store
    spent = [0.0, 0]
    finish_many = store.finish_many

    def timed(items: Any, processors: Any) -> Any:  # measurement only: the writer's own cost
        start = time.thread_time()
        try:
            return finish_many(items, processors)
        finally:
            spent[0] += time.thread_time() - start
            spent[1] += len(items)

    store.finish_many = timed
    pids = [p["pid"] for p in coord.metrics()["workers"]["processes"]]
    front0, workers0 = time.process_time(), sum(_proc_cpu(p) for p in pids)
    count = 0
    try:
        for _ in range(3):
            _batch(coord, rid, data, None)
            count += BATCH
    finally:
        store.finish_many = finish_many
    front = (time.process_time() - front0) / count * 1e6
    worker = (sum(_proc_cpu(p) for p in pids) - workers0) / count * 1e6
    writer = spent[0] / max(spent[1], 1) * 1e6
    table.add(SECTION, "trivial contract, CPU per execution: coordinator process", front, "us",
              note="admission, writer, results, sinks, and this benchmark's producer loop")
    table.add(SECTION, "trivial contract, CPU per execution: worker process", worker, "us",
              note="the pipeline and the engine")
    table.add(SECTION, "trivial contract, CPU per execution: the writer's commit", writer, "us",
              note=f"finish_many alone; saturates at {1e6 / writer:,.0f} exec/s")
    for cores in (2, 16):
        model = min(cores * 1e6 / (front + worker), 1e6 / front) if front > 0 else float("nan")
        table.add(SECTION, f"model: {cores} cores, one coordinator process, trivial contract",
                  model, "exec/s",
                  note="min(cores / (coordinator + worker CPU), 1 / coordinator CPU)")


def run(table: Table) -> None:
    _pipe_round_trip(table)
    with tempfile.TemporaryDirectory() as tmp:
        coords = {c[0]: _open(Path(tmp), c[0], c[1], c[2], c[3], c[4]) for c in CONFIGS}
        try:
            resources = {name: _deploy(coord) for name, coord in coords.items()}
            workloads = list(next(iter(resources.values())))
            rates: dict[tuple[str, str], list[float]] = {}
            latencies: dict[tuple[str, str], list[float]] = {}
            writer: dict[str, list[float]] = {}
            for name, coord in coords.items():  # warm every worker's caches
                for rid, data in resources[name].values():
                    _batch(coord, rid, data, None)
            for _ in range(ROUNDS):
                for workload in workloads:
                    for name, coord in coords.items():
                        if ONLY.get(name, workload) != workload:
                            continue
                        rid, data = resources[name][workload]
                        cpu0, t0 = _reader_cpu(coord), time.perf_counter()
                        rate = _batch(coord, rid, data,
                                      latencies.setdefault((workload, name), []))
                        share = (_reader_cpu(coord) - cpu0) / (time.perf_counter() - t0)
                        rates.setdefault((workload, name), []).append(rate)
                        if workload == "trivial contract":
                            writer.setdefault(name, []).append(share)
            _report(table, coords, workloads, rates, latencies, writer)
            rid, data = resources["1 process"]["trivial contract"]
            _cost_model(table, coords["1 process"], rid, data)
        finally:
            for coord in coords.values():
                coord.close()


def _report(table: Table, coords: dict[str, Coordinator], workloads: list[str],
            rates: dict[tuple[str, str], list[float]],
            latencies: dict[tuple[str, str], list[float]],
            writer: dict[str, list[float]]) -> None:
    median = {key: statistics.median(values) for key, values in rates.items()}
    for workload in workloads:
        for name, *_ in CONFIGS:
            if ONLY.get(name, workload) != workload:
                continue
            p50, p99 = percentiles(latencies[(workload, name)])
            table.add(SECTION, f"{workload}: {name}", median[(workload, name)], "exec/s",
                      note=f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms from submit, "
                           f"{BATCH} in flight")
        two = median[(workload, "2 processes")] / median[(workload, "1 process")]
        one = median[(workload, "1 process")] / median[(workload, "in-process")]
        trivial = workload == "trivial contract"
        table.add(SECTION, f"{workload}: 2 processes / 1 process", two, "x",
                  target=">= 1.6x" if trivial else "", ok=two >= 1.6 if trivial else None)
        table.add(SECTION, f"{workload}: 1 process / in-process", one, "x",
                  target=">= 1.0x" if trivial else "", ok=one >= 1.0 if trivial else None)
    audit = (median[("trivial contract", "2 processes")]
             / median[("trivial contract", "2 processes, audit off")])
    table.add(SECTION, "trivial contract, 2 processes: audit on / off", audit, "x",
              target=">= 0.8x", ok=audit >= 0.8)
    single = (median[("trivial contract", "2 processes, 1 thread each")]
              / median[("trivial contract", "1 process, 1 thread")])
    table.add(SECTION, "trivial contract, 1 thread per worker: 2 processes / 1 process", single,
              "x", note="threads in a worker only help executions that block off the GIL")
    counter = median[("counter contract", "2 processes")] / median[
        ("counter contract", "2 processes, load routing")]
    table.add(SECTION, "counter contract, 2 processes: affinity / load routing", counter, "x",
              note="why stateful resources are routed by affinity (docs/scaling.md)")
    for name, processes, *_ in CONFIGS:
        if not processes or name not in writer:
            continue
        groups, jobs = coords[name].store.commit_stats  # type: ignore[attr-defined]
        table.add(SECTION, f"writer, {name}: mean group size", jobs / max(groups, 1),
                  "jobs/txn", note="every workload and round together")
        table.add(SECTION, f"writer, {name}: CPU share (trivial contract)",
                  statistics.median(writer[name]) * 100, "% of a core",
                  note="the coordinator's reader threads: receive, commit, answer")


if __name__ == "__main__":
    table = Table()
    run(table)
    for row in table.rows:
        print(f"{row.name:<60} {row.value:>10.2f} {row.unit:<12} {row.verdict} {row.note}")

"""The network service under load: HTTP vs in-process ``submit`` vs MLServer, side by side.

Two workloads, the trivial wasm contract (``add``, ``POST /v1/executions``) and the tiny ONNX
model (``POST /v2/models/tiny/infer``), each run three ways in alternating rounds of one run:

- **in-process**: ``Coordinator.submit`` on a coordinator of the same config in this process
  (same worker count, audit and quota on), 32 executions kept in flight;
- **HTTP**: ``coordinator serve`` as a subprocess, driven by ``bench/loadgen.py`` in another
  process with 32 keep-alive connections, one request in flight on each, bearer key checked
  on every request;
- **MLServer** (the model only): ``mlserver start`` on the same ONNX file through
  ``bench/mlserver_runtime``, driven by the same load generator with the same body bytes.

Targets: HTTP throughput >= 60% of in-process; HTTP p99 < 5 ms; ahead of MLServer. The rows
also give each side's CPU use in cores: on a 2-core machine the client competes with the
server, so "the client took 0.4 cores" is part of the result. A closed loop of 32 clients
has latency = 32 / throughput (Little's law), so p99 under 5 ms at 32 clients needs more
than 6,400 requests a second; the 1-client rows give the unloaded latency beside it.

Alone: ``.venv/bin/python bench/run.py --only http``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_core import TRIVIAL_WAT
from bench.bench_onnx import tiny_model
from bench.harness import Table
from bench.http_servers import (
    ROOT,
    CoordinatorServer,
    MLServerProcess,
    ensure_mlserver,
    tree_cpu,
)
from bench.loadgen import build_request
from coordinator_core import Coordinator, ExecutionRequest

SECTION = "HTTP service (32 keep-alive clients)"
CLIENTS = 32
ROUNDS = 3
DURATION = 2.0
WARMUP = 0.5
WORKERS = 2
#: Audit and quota on, as in production: every execution passes a per-caller token bucket
#: and a concurrency slot with limits far above the load, so the policies do their work.
CONFIG = f"""
[coordinator]
workers = {WORKERS}
enable_audit_tracking = true
enable_quota_management = true
[quota-rate]
rate = 10000000.0
burst = 10000000
[quota-concurrency]
limit = 10000
"""
X = [[0.5, -1.0, 2.0, 0.25]]
INFER_BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                     "data": X[0]}]}).encode()


def closed_loop(coord: Coordinator, request: ExecutionRequest, clients: int,
                duration: float = DURATION, warmup: float = WARMUP) -> dict[str, float]:
    """``submit`` with ``clients`` executions in flight: the in-process twin of the load
    generator (latency from submit to the result being set)."""
    slots = threading.Semaphore(clients)
    latencies: list[float] = []
    failures: list[str] = []
    clock = time.perf_counter
    begin = clock()
    measure_from, stop = begin + warmup, begin + warmup + duration

    def done(started: float, future: Any) -> None:
        result = future.result()
        if not result.ok:
            failures.append(str(result.error))
        elif started >= measure_from:
            latencies.append(clock() - started)
        slots.release()

    cpu0 = wall0 = None
    while True:
        slots.acquire()
        started = clock()
        if cpu0 is None and started >= measure_from:
            cpu0, wall0 = time.process_time(), started
        if started >= stop:
            slots.release()
            break
        coord.submit(request).future.add_done_callback(partial(done, started))
    for _ in range(clients):
        slots.acquire()
    end = clock()
    if failures:
        raise RuntimeError(f"in-process execution failed: {failures[0]}")
    assert cpu0 is not None and wall0 is not None
    return _summary(latencies, end - measure_from,
                    {"cpu": (time.process_time() - cpu0) / (end - wall0)})


def _summary(latencies: list[float], seconds: float, extra: dict[str, float]
             ) -> dict[str, float]:
    lat = sorted(latencies)
    return {"throughput": len(lat) / seconds, "p50_ms": lat[len(lat) // 2] * 1e3,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3, **extra}


def drive(port: int, request: bytes, expect: bytes, server_pid: int, workdir: Path,
          clients: int = CLIENTS) -> dict[str, float]:
    """One load-generator process against ``port``; the server's CPU is read around it."""
    path = workdir / "request.bin"
    path.write_bytes(request)
    cpu0, t0 = tree_cpu(server_pid), time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--request-file",
         str(path), "--clients", str(clients), "--duration", str(DURATION), "--warmup",
         str(WARMUP), "--expect-body", expect.decode()],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    wall = time.perf_counter() - t0
    server_cpu = (tree_cpu(server_pid) - cpu0) / wall
    if done.returncode != 0 and not done.stdout:
        raise RuntimeError(f"the load generator failed: {done.stderr[-800:]}")
    report = json.loads(done.stdout)
    if "failed" in report:
        raise RuntimeError(f"the load generator failed: {report['failed']}")
    if report["errors"]:
        raise RuntimeError(f"{report['errors']} bad responses, the first {report['first_error']}")
    return {"throughput": report["throughput"], "p50_ms": report["p50_ms"],
            "p99_ms": report["p99_ms"], "client_cpu": report["client_cpu"],
            "server_cpu": server_cpu}


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _spread(runs: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in runs]
    return f"rounds {min(values):,.0f}-{max(values):,.0f}"


def _prepare(tmp: Path) -> tuple[Path, Path, Path]:
    config = tmp / "bench.toml"
    config.write_text(CONFIG)
    wat, onnx = tmp / "add.wat", tmp / "tiny.onnx"
    wat.write_text(TRIVIAL_WAT)
    onnx.write_bytes(tiny_model())
    return config, wat, onnx


def run(table: Table) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        config, wat, onnx = _prepare(tmp)
        server = CoordinatorServer(tmp, config)
        rid = server.deploy(wat, "wasm", "add")
        server.deploy(onnx, "onnx", "tiny")
        token = server.create_key("bench")
        ml_skip = ensure_mlserver()
        mlserver = None if ml_skip else MLServerProcess(tmp, "tiny", onnx.read_bytes())
        server.start()
        try:
            if mlserver is not None:
                mlserver.start()
            with Coordinator.open(config, data_dir=tmp / "inproc") as coord:
                _measure(table, tmp, coord, server, token, rid, wat, onnx, mlserver, ml_skip)
        finally:
            server.stop()
            if mlserver is not None:
                mlserver.stop()


def _measure(table: Table, tmp: Path, coord: Coordinator, server: CoordinatorServer,
             token: str, rid: str, wat: Path, onnx: Path, mlserver: MLServerProcess | None,
             ml_skip: str | None) -> None:
    assert server.proc is not None
    host = f"127.0.0.1:{server.port}"
    auth = [("Authorization", f"Bearer {token}"), ("Content-Type", "application/json")]
    own_rid = coord.deploy(wat.read_text(), "wasm", source_format="wat", name="add")
    model = coord.deploy(onnx.read_bytes(), "onnx", name="tiny")
    feeds = {"x": np.asarray(X, dtype=np.float32)}
    execute_body = json.dumps({"resource_id": rid, "entry": "add", "args": [2, 3]}).encode()
    workloads: dict[str, dict[str, Callable[[int], dict[str, float]]]] = {
        "trivial wasm contract": {
            "in-process": partial(closed_loop, coord, ExecutionRequest(
                own_rid, caller="bench", entry="add", args=(2, 3))),
            "HTTP": partial(drive, server.port, build_request(
                "POST", "/v1/executions", host, execute_body, auth), b'"succeeded"',
                server.proc.pid, tmp)},
        "tiny ONNX model": {
            "in-process": partial(closed_loop, coord, ExecutionRequest(
                model, caller="bench", input=feeds)),
            "HTTP": partial(drive, server.port, build_request(
                "POST", "/v2/models/tiny/infer", host, INFER_BODY, auth), b'"outputs"',
                server.proc.pid, tmp)},
    }
    if mlserver is not None and mlserver.proc is not None:
        workloads["tiny ONNX model"]["MLServer"] = partial(
            drive, mlserver.port, build_request(
                "POST", "/v2/models/tiny/infer", f"127.0.0.1:{mlserver.port}", INFER_BODY,
                [("Content-Type", "application/json")]), b'"outputs"', mlserver.proc.pid, tmp)
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for i in range(ROUNDS):
        for workload, ways in workloads.items():
            order = list(ways) if i % 2 == 0 else list(reversed(ways))
            for way in order:
                runs.setdefault((workload, way), []).append(ways[way](CLIENTS))
    single = {(w, way): ways[way](1) for w, ways in workloads.items() for way in ways
              if way != "in-process"}
    for workload, ways in workloads.items():
        _rows(table, workload, runs, single, list(ways), ml_skip)


def _rows(table: Table, workload: str, runs: dict[tuple[str, str], list[dict[str, float]]],
          single: dict[tuple[str, str], dict[str, float]], ways: list[str],
          ml_skip: str | None) -> None:
    inproc, http = runs[(workload, "in-process")], runs[(workload, "HTTP")]
    for way in ways:
        got = runs[(workload, way)]
        cpu = (f"in-process CPU {_median(got, 'cpu'):.2f} cores" if way == "in-process" else
               f"server {_median(got, 'server_cpu'):.2f} + client "
               f"{_median(got, 'client_cpu'):.2f} cores")
        table.add(SECTION, f"{workload}: {way}, throughput", _median(got, "throughput"), "/s",
                  note=f"median of {len(got)} rounds, {_spread(got, 'throughput')}; {cpu}")
        table.add(SECTION, f"{workload}: {way}, p50", _median(got, "p50_ms"), "ms")
        p99 = _median(got, "p99_ms")
        if way == "HTTP":
            table.add(SECTION, f"{workload}: {way}, p99", p99, "ms", target="< 5 ms",
                      ok=p99 < 5.0, note=f"Little's law floor at this rate: "
                      f"{CLIENTS / _median(got, 'throughput') * 1e3:.1f} ms")
        else:
            table.add(SECTION, f"{workload}: {way}, p99", p99, "ms")
    ratio = statistics.median(h["throughput"] / p["throughput"]
                              for h, p in zip(http, inproc, strict=True))
    table.add(SECTION, f"{workload}: HTTP / in-process throughput", ratio * 100, "%",
              target=">= 60%", ok=ratio >= 0.6, note="median of the per-round ratios")
    for (w, way), one in single.items():
        if w == workload:
            table.add(SECTION, f"{workload}: {way}, 1 client, p50 / p99", one["p50_ms"], "ms",
                      note=f"p99 {one['p99_ms']:.2f} ms, {one['throughput']:,.0f}/s: "
                      "unloaded latency")
    if workload != "tiny ONNX model":
        return
    if "MLServer" not in ways:
        table.add(SECTION, f"{workload}: ours / MLServer throughput", float("nan"), "x",
                  target="> 1", note=f"skipped: {ml_skip}")
        return
    ml = runs[(workload, "MLServer")]
    lead = statistics.median(h["throughput"] / m["throughput"]
                             for h, m in zip(http, ml, strict=True))
    table.add(SECTION, f"{workload}: ours / MLServer throughput", lead, "x", target="> 1",
              ok=lead > 1, note="median of the per-round ratios; ours with key check, "
              "quota and the hash-chained audit record of every infer")

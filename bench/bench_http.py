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
from bench.http_servers import ROOT, CoordinatorServer, MLServerProcess, ensure_mlserver
from bench.loadgen import build_request
from coordinator_core import Coordinator, ExecutionRequest

SECTION = "HTTP service (32 keep-alive clients)"
CLIENTS = 32
ROUNDS = 3
DURATION = 2.0
WARMUP = 0.5
WORKERS = 2
#: The service with ``serve --workers 2``: two HTTP processes over one writer.
HTTP2 = "HTTP, 2 processes"
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
#: MLServer side by side in two settings: its default (inference in one worker process) and
#: inference in the server's own event loop, which is faster for a model this small.
MLSERVER_SETTINGS = {"MLServer (parallel_workers 1)": 1, "MLServer (parallel_workers 0)": 0}
X = [[0.5, -1.0, 2.0, 0.25]]
INFER_BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                     "data": X[0]}]}).encode()


READING = """
### how to read the HTTP rows

- **Closed loop.** Each of the 32 clients keeps one request in flight on its keep-alive
  connection and sends the next the moment the answer's last byte is in; latency is from the
  request's write to that byte. By Little's law the mean latency is 32 / throughput, so at 32
  clients p50 follows throughput (the p99 row's note gives that floor) and p99 < 5 ms needs
  more than 6,400 requests a second; the 1-client rows give the unloaded latency.
- **One machine, 2 cores.** Server, load generator (a separate process) and anything else on
  the machine share them. The throughput note gives each side's CPU in cores over the
  measured window: the server's process tree (MLServer's worker process included) and the
  client's. A client at a tenth of a core is not the bottleneck; a server well below one core
  while the client waits is being starved (other load) or is waiting on its own threads.
- **Side by side.** In each round the in-process loop, our server and MLServer run back to
  back (order reversed every other round); ratios are taken per round and their median
  reported, because absolute figures drift with other load (the "rounds a-b" note is the
  spread within the run).
- **What differs.** In-process, ``submit`` gets a ready ``ExecutionRequest`` (for the model, a
  numpy array). Over HTTP the same execution also pays for one Python process's event loop:
  HTTP parsing, the bearer key's SQLite look-up, JSON decoding and encoding, and the hand-off
  to the worker threads and back, all under the same interpreter lock the workers need.
  MLServer answers with no key check, no quota and no durable audit record; its default
  (``parallel_workers`` 1) sends each request to a worker process, and ``parallel_workers`` 0
  runs ``predict`` in its event loop; ours is compared with the faster of the two.
"""


def closed_loop(coord: Coordinator, request: ExecutionRequest, clients: int,
                duration: float = DURATION, warmup: float = WARMUP) -> dict[str, Any]:
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


def _summary(latencies: list[float], seconds: float, extra: dict[str, Any]
             ) -> dict[str, Any]:
    lat = sorted(latencies)
    return {"throughput": len(lat) / seconds, "p50_ms": lat[len(lat) // 2] * 1e3,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3, **extra}


def drive(port: int, request: bytes, expect: bytes, server_pid: int, workdir: Path,
          clients: int = CLIENTS) -> dict[str, Any]:
    """One load-generator process against ``port`` (``server_pid``'s CPU read around the
    measured window)."""
    path = workdir / "request.bin"
    path.write_bytes(request)
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--request-file",
         str(path), "--clients", str(clients), "--duration", str(DURATION), "--warmup",
         str(WARMUP), "--expect-body", expect.decode(), "--server-pid", str(server_pid)],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    if done.returncode != 0 and not done.stdout:
        raise RuntimeError(f"the load generator failed: {done.stderr[-800:]}")
    report = json.loads(done.stdout)
    if "failed" in report:
        raise RuntimeError(f"the load generator failed: {report['failed']}")
    if report["errors"]:
        raise RuntimeError(f"{report['errors']} bad responses, the first {report['first_error']}")
    return report


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _spread(runs: list[dict[str, Any]], key: str) -> str:
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
        # The same service in two HTTP processes over one writer (serve --workers 2).
        two = CoordinatorServer(tmp, config, ("--workers", "2"))
        two_rid = two.deploy(wat, "wasm", "add")
        two.deploy(onnx, "onnx", "tiny")
        two_token = two.create_key("bench")
        ml_skip = ensure_mlserver()
        mlservers = {} if ml_skip else {
            label: MLServerProcess(tmp, "tiny", onnx.read_bytes(), parallel_workers=workers)
            for label, workers in MLSERVER_SETTINGS.items()}
        server.start()
        two.start()
        try:
            for label, mlserver in list(mlservers.items()):
                try:
                    mlserver.start()
                except RuntimeError as exc:  # report MLServer as skipped, keep our rows
                    del mlservers[label]
                    ml_skip = f"{label} did not start: {str(exc).splitlines()[-1][:160]}"
            with Coordinator.open(config, data_dir=tmp / "inproc") as coord:
                _measure(table, tmp, coord, server, token, rid, wat, onnx, mlservers, ml_skip,
                         (two, two_token, two_rid))
        finally:
            server.stop()
            two.stop()
            for mlserver in mlservers.values():
                mlserver.stop()


def _measure(table: Table, tmp: Path, coord: Coordinator, server: CoordinatorServer,
             token: str, rid: str, wat: Path, onnx: Path,
             mlservers: dict[str, MLServerProcess], ml_skip: str | None,
             second: tuple[CoordinatorServer, str, str]) -> None:
    assert server.proc is not None
    host = f"127.0.0.1:{server.port}"
    auth = [("Authorization", f"Bearer {token}"), ("Content-Type", "application/json")]
    own_rid = coord.deploy(wat.read_text(), "wasm", source_format="wat", name="add")
    model = coord.deploy(onnx.read_bytes(), "onnx", name="tiny")
    feeds = {"x": np.asarray(X, dtype=np.float32)}
    execute_body = json.dumps({"resource_id": rid, "entry": "add", "args": [2, 3]}).encode()
    workloads: dict[str, dict[str, Callable[[int], dict[str, Any]]]] = {
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
    two, two_token, two_rid = second
    assert two.proc is not None
    two_host = f"127.0.0.1:{two.port}"
    two_auth = [("Authorization", f"Bearer {two_token}"), ("Content-Type", "application/json")]
    workloads["trivial wasm contract"][HTTP2] = partial(drive, two.port, build_request(
        "POST", "/v1/executions", two_host, json.dumps(
            {"resource_id": two_rid, "entry": "add", "args": [2, 3]}).encode(), two_auth),
        b'"succeeded"', two.proc.pid, tmp)
    workloads["tiny ONNX model"][HTTP2] = partial(drive, two.port, build_request(
        "POST", "/v2/models/tiny/infer", two_host, INFER_BODY, two_auth), b'"outputs"',
        two.proc.pid, tmp)
    for label, mlserver in mlservers.items():
        assert mlserver.proc is not None
        workloads["tiny ONNX model"][label] = partial(
            drive, mlserver.port, build_request(
                "POST", "/v2/models/tiny/infer", f"127.0.0.1:{mlserver.port}", INFER_BODY,
                [("Content-Type", "application/json")]), b'"outputs"', mlserver.proc.pid, tmp)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for i in range(ROUNDS):
        for workload, ways in workloads.items():
            order = list(ways) if i % 2 == 0 else list(reversed(ways))
            for way in order:
                runs.setdefault((workload, way), []).append(ways[way](CLIENTS))
    single = {(w, way): ways[way](1) for w, ways in workloads.items() for way in ways
              if way != "in-process"}
    for workload, ways in workloads.items():
        _rows(table, workload, runs, single, list(ways), ml_skip)


def _rows(table: Table, workload: str, runs: dict[tuple[str, str], list[dict[str, Any]]],
          single: dict[tuple[str, str], dict[str, Any]], ways: list[str],
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
        if way in ("HTTP", HTTP2):
            table.add(SECTION, f"{workload}: {way}, p99", p99, "ms", target="< 5 ms",
                      ok=p99 < 5.0, note=f"Little's law floor at this rate: "
                      f"{CLIENTS / _median(got, 'throughput') * 1e3:.1f} ms")
        else:
            table.add(SECTION, f"{workload}: {way}, p99", p99, "ms")
    ratio = statistics.median(h["throughput"] / p["throughput"]
                              for h, p in zip(http, inproc, strict=True))
    table.add(SECTION, f"{workload}: HTTP / in-process throughput", ratio * 100, "%",
              target=">= 60%", ok=ratio >= 0.6, note="median of the per-round ratios")
    two = statistics.median(h["throughput"] / p["throughput"]
                            for h, p in zip(runs[(workload, HTTP2)], inproc, strict=True))
    table.add(SECTION, f"{workload}: {HTTP2} / in-process throughput", two * 100, "%",
              target=">= 60%", ok=two >= 0.6, note="two HTTP processes, one writer")
    for (w, way), one in single.items():
        if w == workload:
            table.add(SECTION, f"{workload}: {way}, 1 client, p50 / p99", one["p50_ms"], "ms",
                      note=f"p99 {one['p99_ms']:.2f} ms, {one['throughput']:,.0f}/s: "
                      "unloaded latency")
    if workload != "tiny ONNX model":
        return
    labels = [way for way in ways if way in MLSERVER_SETTINGS]
    if not labels:
        table.add(SECTION, f"{workload}: ours / MLServer throughput", float("nan"), "x",
                  target="> 1", note=f"skipped: {ml_skip}".replace("|", "/"))
        return
    # Against MLServer's faster setting in each round: the stronger baseline.
    best = [max(runs[(workload, label)][i]["throughput"] for label in labels)
            for i in range(len(http))]
    lead = statistics.median(h["throughput"] / b for h, b in zip(http, best, strict=True))
    table.add(SECTION, f"{workload}: ours / MLServer throughput", lead, "x", target="> 1",
              ok=lead > 1, note="per round against MLServer's faster setting, median; ours "
              "with key check, quota and the hash-chained audit record of every infer")

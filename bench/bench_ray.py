"""The Ray executor (``coordinator-executor-ray``): scaling over actors, and what a Ray
round trip costs per execution.

One local Ray cluster (``num_cpus`` 4, no dashboard) serves every coordinator here; they stay
open side by side and run in interleaved rounds, so machine noise hits all alike.

- 5 ms executions (``examples/busy.wat``, eight resources so no state lock serialises them,
  a batch kept in flight by one producer) on 1 vs 2 engine actors: executions per second and
  the ratio (target >= 1.7x on two cores).
- Cancel: median time from ``cancel`` to the result of a long execution in an actor
  (target <= 200 ms).
- Per-execution overhead for a short execution (the trivial echo contract, one at a time):
  p50 latency on threads, in one worker process (``[dispatch] executor = "processes"``) and
  in one Ray actor; the differences are what each executor adds.

Alone: ``.venv/bin/python bench/run.py --only ray``.
"""

from __future__ import annotations

import os
import statistics
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Table, interleaved, percentiles
from coordinator_core import Coordinator, ExecutionRequest
from tests.helpers import ECHO_WAT

SECTION = "ray executor"
ROOT = Path(__file__).resolve().parent.parent
BUSY = (ROOT / "examples" / "busy.wat").read_text()
RESOURCES = 8
BATCH = 64
ROUNDS = 5
#: a first guess of busy.wat's steps for 5 ms, corrected by a measurement on threads
STEPS = 1_100_000

READING = """\
**Ray executor.** The ratio of 2 to 1 actors shows executions of a few milliseconds spread
over actors (processes, on a real cluster machines). The overhead rows are the price of each
hop for a short execution: a worker process costs a pipe round trip, a Ray actor a task
submission, a streamed reply and the scheduler's bookkeeping, which is why Ray pays for
itself only for executions well above its overhead (docs/scaling.md).
"""


def _open(tmp: Path, name: str, dispatch: dict[str, Any], ray: dict[str, Any] | None = None
          ) -> Coordinator:
    overrides: dict[str, Any] = {"dispatch": dispatch}
    if ray is not None:
        overrides["ray"] = ray
    return Coordinator.open(data_dir=tmp / name, overrides=overrides)


def _busy_rids(coord: Coordinator) -> list[str]:
    return [coord.deploy(BUSY.replace('"done"', f'"d{i:03d}"'), "wasm", source_format="wat",
                         capabilities=["storage"]) for i in range(RESOURCES)]


def _request(rid: str, steps: int) -> ExecutionRequest:
    return ExecutionRequest(resource_id=rid, input=struct.pack("<Q", steps), fee_limit=10**12)


def _throughput(coord: Coordinator, rids: list[str], steps: int) -> float:
    started = time.perf_counter()
    handles = [coord.submit(_request(rids[i % len(rids)], steps)) for i in range(BATCH)]
    for handle in handles:
        result = handle.result(timeout=120)
        assert result.ok, result.error
    return BATCH / (time.perf_counter() - started)


def _calibrate(coord: Coordinator, rid: str) -> int:
    """busy.wat's steps for about 5 ms on this machine, measured on threads."""
    samples = []
    for _ in range(20):
        t0 = time.perf_counter()
        coord.execute(_request(rid, STEPS))
        samples.append(time.perf_counter() - t0)
    return max(1000, int(STEPS * 0.005 / statistics.median(samples)))


def _cancel_latency(coord: Coordinator) -> float:
    """Median seconds from ``cancel`` to the result of a long execution running in an actor."""
    rid = _busy_rids(coord)[0]
    samples = []
    for _ in range(5):
        handle = coord.submit(_request(rid, 10**11))
        workers = coord.metrics()["engines"]["wasmtime"]["workers"]
        while not any(a["inflight"] for a in workers["actors"]):
            time.sleep(0.005)
            workers = coord.metrics()["engines"]["wasmtime"]["workers"]
        time.sleep(0.05)  # inside the engine, not on its way there
        t0 = time.perf_counter()
        handle.cancel()
        handle.result(timeout=30)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def run(table: Table) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    opened: list[Coordinator] = []
    try:
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            threads = _open(tmp, "threads", {"executor": "threads"})
            opened.append(threads)
            steps = _calibrate(threads, _busy_rids(threads)[0])
            one = _open(tmp, "ray-1", {"executor": "ray"},
                        {"engines": ["wasmtime"], "actors_per_node": 1})
            two = _open(tmp, "ray-2", {"executor": "ray"},
                        {"engines": ["wasmtime"], "actors_per_node": 2})
            procs = _open(tmp, "processes", {"executor": "processes", "processes": 1,
                                             "process_engines": ["wasmtime"]})
            opened += [one, two, procs]
            rids = {c: _busy_rids(c) for c in (one, two)}
            rates: dict[str, list[float]] = {"1 actor": [], "2 actors": []}
            for c in (one, two):
                _throughput(c, rids[c], steps)  # warm: every actor compiles its resources
            for _ in range(ROUNDS):
                rates["1 actor"].append(_throughput(one, rids[one], steps))
                rates["2 actors"].append(_throughput(two, rids[two], steps))
            r1, r2 = (statistics.median(rates[k]) for k in ("1 actor", "2 actors"))
            for name, value in (("1 actor", r1), ("2 actors", r2)):
                table.add(SECTION, f"5 ms executions, {name}", value, "exec/s",
                          note=f"{BATCH} in flight over {RESOURCES} resources")
            ratio = statistics.median(b / a for a, b in zip(rates["1 actor"],
                                                            rates["2 actors"], strict=True))
            table.add(SECTION, "5 ms executions, 2 vs 1 actors", ratio, "x", target=">= 1.7",
                      ok=ratio >= 1.7)

            cancel = _cancel_latency(one)
            table.add(SECTION, "cancel to result, in an actor", cancel * 1e3,
                      "ms", target="<= 200", ok=cancel <= 0.2,
                      note="median of 5; the actor stops its engine itself")

            echo = {c: c.deploy(ECHO_WAT, "wasm", source_format="wat")
                    for c in (threads, procs, one)}
            calls = {
                "threads": lambda: threads.execute(
                    ExecutionRequest(resource_id=echo[threads], input=b"x")),
                "1 worker process": lambda: procs.execute(
                    ExecutionRequest(resource_id=echo[procs], input=b"x")),
                "1 Ray actor": lambda: one.execute(
                    ExecutionRequest(resource_id=echo[one], input=b"x")),
            }
            samples = interleaved(calls, n=500, rounds=ROUNDS, warmup=20)
            p50 = {name: percentiles(s)[0] for name, s in samples.items()}
            for name, value in p50.items():
                table.add(SECTION, f"short execution p50, {name}", value * 1e6, "us",
                          note="trivial contract, one at a time")
            for name in ("1 worker process", "1 Ray actor"):
                table.add(SECTION, f"overhead vs threads, {name}",
                          (p50[name] - p50["threads"]) * 1e6, "us")
    finally:
        for coord in reversed(opened):
            coord.close()
        ray.shutdown()

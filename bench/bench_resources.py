"""The cost of measuring the resource use of every execution, side by side in one run.

- pipeline with vs without the measurement: one coordinator each (echo engine from
  ``coordinator_core.testing``, in-memory store), ``[coordinator] measure_resources`` on and
  off, timed in alternating rounds; the row is the median over rounds of the difference of
  the two medians (drift between rounds cancels);
- the same with a trivial wasm contract (which also reads its linear memory at the end,
  whatever the switch says: that part is in both variants);
- the direct cost of what the switch adds to the pipeline: two thread CPU clock reads, the
  check of the engine's figures and the audit detail, timed alone;
- one trivial system call (``os.getppid``), for scale: reading a thread's CPU clock is a
  system call on Linux (no vDSO fast path), so its cost is the machine's system call cost.

Alone: ``.venv/bin/python bench/run.py --only resources``.
"""

from __future__ import annotations

import os
import statistics
import timeit
from typing import Any

from bench.harness import Table, interleaved
from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.execution.usage import engine_use, thread_time_ns, usage_detail
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import EngineResult

SECTION = "resource use of every execution"

READING = """
**Reading the resource-use rows.** The measurement is two reads of the thread's CPU clock
(`time.thread_time_ns`, a system call on Linux) plus checks and two integer audit fields.
Its cost is therefore about two system calls of the machine it runs on: compare the
"one thread CPU clock read" and "one trivial system call" rows. The pipeline rows also
include the two fields' share of the audit record's canonical JSON and hash.
`[coordinator] measure_resources = false` removes the clock reads and the fields.
"""
N = 20_000
ROUNDS = 20
TARGET_US = 1.0

TRIVIAL_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "add") (param i64 i64) (result i64)
    (i64.add (local.get 0) (local.get 1))))
"""


def _difference_us(run_on: Any, run_off: Any) -> tuple[float, float, float]:
    """(median per-round difference, median on, median off), microseconds."""
    medians: dict[str, list[float]] = {}
    interleaved({"on": run_on, "off": run_off}, N, rounds=ROUNDS, warmup=500,
                round_medians=medians)
    diffs = [(a - b) * 1e6 for a, b in zip(medians["on"], medians["off"], strict=True)]
    return (statistics.median(diffs), statistics.median(medians["on"]) * 1e6,
            statistics.median(medians["off"]) * 1e6)


def _pipeline_rows(table: Table, what: str, resource: Any, request_of: Any,
                   *plugins: Any) -> None:
    opened = []
    try:
        runs = {}
        for measure in (True, False):
            coord = Coordinator.open(
                data_dir=":memory:", plugins=list(plugins), entry_points=not plugins,
                overrides={"coordinator": {"measure_resources": measure}})
            opened.append(coord)
            request = request_of(coord.deploy(resource[0], resource[1], **resource[2]))
            first = coord.execute(request)
            if not first.ok:
                raise RuntimeError(f"bench execution failed: {first.error}")
            runs[measure] = lambda c=coord, r=request: c.execute(r)
        diff, on, off = _difference_us(runs[True], runs[False])
        table.add(SECTION, f"measurement cost in the pipeline, {what}", diff, "us",
                  target=f"<= {TARGET_US:g} us", ok=diff <= TARGET_US,
                  note=f"execute() p50 {on:.1f} us on vs {off:.1f} us off; median of "
                       f"{ROUNDS} paired rounds")
    finally:
        for coord in opened:
            coord.close()


def _direct_rows(table: Table) -> None:
    outcome = EngineResult(b"", 1, (), 65536, {"memory_pages": 1, "memory_peak_pages": 1})

    def step() -> None:
        cpu0 = thread_time_ns()
        cpu = (thread_time_ns() - cpu0) * 1e-9
        memory, _usage, elsewhere = engine_use(outcome, "bench")
        usage_detail({}, (round((cpu + elsewhere) * 1e9), memory))

    n = 200_000
    direct = min(timeit.repeat(step, number=n, repeat=5)) / n * 1e6
    clock = min(timeit.repeat(thread_time_ns, number=n, repeat=5)) / n * 1e6
    syscall = min(timeit.repeat(os.getppid, number=n, repeat=5)) / n * 1e6
    table.add(SECTION, "direct cost of the measurement step", direct, "us",
              target=f"<= {TARGET_US:g} us", ok=direct <= TARGET_US,
              note="2 thread CPU clock reads + checking the engine's figures + audit detail")
    table.add(SECTION, "one thread CPU clock read (time.thread_time_ns)", clock, "us",
              note="a system call on Linux: no vDSO fast path for thread CPU clocks")
    table.add(SECTION, "one trivial system call (os.getppid), for scale", syscall, "us",
              note="this machine's system call cost bounds the clock reads")


def run(table: Table) -> None:
    _direct_rows(table)
    _pipeline_rows(table, "echo engine", (b"echo", "echo", {}),
                   lambda rid: ExecutionRequest(resource_id=rid, caller="bench", input=b"x"),
                   EchoPlugin())
    try:
        _pipeline_rows(table, "trivial wasm contract",
                       (TRIVIAL_WAT, "wasm", {"source_format": "wat"}),
                       lambda rid: ExecutionRequest(resource_id=rid, caller="bench",
                                                    entry="add", args=(2, 3)))
    except Exception as exc:  # the wasm engine is another plugin; report, do not fail
        table.add(SECTION, "measurement cost, trivial wasm contract", float("nan"), "",
                  note=f"not measured: {type(exc).__name__}: {exc}"[:200])

"""Replay: what keeping every request costs an execution, and how fast a log replays.

Two coordinators on two data directories, ``[store] keep_requests`` on and off, run the
counter contract in interleaved rounds (every request distinct, so each one adds a row to the
``requests`` table: the worst case); the ratio is taken round by round. Then a log of
counter executions is replayed into a fresh directory (docs/replay.md).
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

from bench.harness import Table, interleaved, paired_ratio, percentiles
from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.replay import replay

SECTION = "replay"
COUNTER = (Path(__file__).resolve().parents[1] / "examples" / "counter.wat").read_text()


def bench_keep(table: Table, n: int = 3000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        coords = {keep: Coordinator.open(data_dir=Path(tmp) / str(keep),
                                         overrides={"store": {"keep_requests": keep}})
                  for keep in (True, False)}
        try:
            calls = {}
            for keep, coord in coords.items():
                rid = coord.deploy(COUNTER, "wasm", capabilities=["storage"],
                                   source_format="wat")
                numbers = itertools.count()

                def call(coord: Coordinator = coord, rid: str = rid,
                         numbers: itertools.count[int] = numbers) -> None:
                    coord.execute(ExecutionRequest(resource_id=rid,
                                                   caller=f"caller-{next(numbers)}"))

                calls["on" if keep else "off"] = call
            medians: dict[str, list[float]] = {}
            samples = interleaved(calls, n, rounds=6, round_medians=medians)
            for name, times in samples.items():
                p50, p99 = percentiles(times)
                table.add(SECTION, f"counter execution, keep_requests {name}", p50 * 1e6, "us",
                          note=f"p99 {p99 * 1e6:.0f} us")
            ratio = paired_ratio(medians["on"], medians["off"])
            table.add(SECTION, "counter execution time, keep_requests on / off", ratio * 100,
                      "%", note="median of 6 interleaved rounds; each request distinct")
        finally:
            for coord in coords.values():
                coord.close()


def bench_replay(table: Table, n: int = 3000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source"
        with Coordinator.open(data_dir=source) as coord:
            rid = coord.deploy(COUNTER, "wasm", capabilities=["storage"], source_format="wat")
            for i in range(n):
                coord.execute(ExecutionRequest(resource_id=rid, caller=f"caller-{i % 50}"))
        started = time.perf_counter()
        report = replay(source, Path(tmp) / "into")
        seconds = time.perf_counter() - started
        if not report.ok:
            raise RuntimeError(f"bench replay diverged: {report.divergence}")
        table.add(SECTION, f"replay of {n} counter executions (open, verify, re-run, compare)",
                  report.replayed / seconds, "exec/s", note=f"{seconds:.2f} s in all")


def run(table: Table) -> None:
    bench_keep(table)
    bench_replay(table)

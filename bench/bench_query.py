"""Queries and simulations against executions: the counter contract's read entry (``get``).

One coordinator on a durable SQLite store (the default configuration: audit log on), the
counter of ``examples/counter.wat`` deployed and counted to 100. ``execute`` of ``get`` pays
for the final audit record's commit; ``query`` of it commits nothing, takes no state lock and
consumes no quota. Both run on one thread, in interleaved rounds, so the ratio compares them
on the same machine state (target: query >= 2x execute). ``simulate`` of ``main`` (the
counting entry) against ``execute`` of it shows what a dry run of a write saves.

Alone: ``.venv/bin/python bench/run.py --only query``.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench.harness import Table, interleaved, paired_ratio
from coordinator_core import Coordinator, ExecutionRequest
from tests.helpers import COUNTER_WAT

SECTION = "query and simulate"
CALLS = 4_000
ROUNDS = 8


def run(table: Table) -> None:
    with tempfile.TemporaryDirectory() as tmp, Coordinator.open(data_dir=Path(tmp)) as coord:
        counter = coord.deploy(COUNTER_WAT, "wasm", capabilities=["storage"],
                               source_format="wat")
        count = ExecutionRequest(resource_id=counter)
        for _ in range(100):
            assert coord.execute(count).ok
        get = ExecutionRequest(resource_id=counter, entry="get")
        for call in (coord.execute, coord.query):
            result = call(get)
            if not result.ok:
                raise RuntimeError(f"{call.__name__} of get failed: {result.error}")
        medians: dict[str, list[float]] = {}
        samples = interleaved({"execute": lambda: coord.execute(get),
                               "query": lambda: coord.query(get)},
                              CALLS, rounds=ROUNDS, round_medians=medians)
        rate = {name: 1 / statistics.median(s) for name, s in samples.items()}
        table.add(SECTION, "counter get: execute", rate["execute"], "calls/s",
                  note="one thread; the final audit record committed per call")
        table.add(SECTION, "counter get: query", rate["query"], "calls/s",
                  note="one thread; nothing committed, no state lock, no quota")
        ratio = paired_ratio(medians["execute"], medians["query"])
        table.add(SECTION, "counter get: query / execute throughput", ratio, "x",
                  target=">= 2x", ok=ratio >= 2.0,
                  note="median over rounds of execute time / query time, measured back to back")
        writes: dict[str, list[float]] = {}
        interleaved({"execute": lambda: coord.execute(count),
                     "simulate": lambda: coord.simulate(count)},
                    CALLS // 2, rounds=ROUNDS, round_medians=writes)
        table.add(SECTION, "counter main: simulate / execute throughput",
                  paired_ratio(writes["execute"], writes["simulate"]), "x",
                  note="a dry run of a write: no commit, the state lock still taken")

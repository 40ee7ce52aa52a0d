"""What the dashboard (``/ui``) costs: each of its reads on a store of many records, and the
throughput of executions while a reader polls it far faster than the page does.

The page asks for the overview once a second and the listing every three seconds; the rows
say how long one of each takes on this store (the listing's worst case is a filter matching
nothing, which searches the newest ``history.SCAN`` records), and the last row compares
executions per second with and without a thread making those reads ten times a second,
side by side in alternating rounds.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import Table, paired_ratio, percentiles, time_calls
from coordinator_core import Coordinator, ExecutionRequest
from coordinator_server.dashboard.history import Filters, History
from coordinator_server.dashboard.series import reduce, series
from tests.helpers import ECHO_WAT

SECTION = "dashboard"
RECORDS = 20_000
READING = """### dashboard

Each read row is one call on a store of about 20000 execution records: `overview` is what
`GET /ui/api/overview` computes (the metrics snapshot, ten minutes of series, the chain's
head, each engine's newest failure); `listing` the newest 100 records, unfiltered and with a
filter that matches nothing. The last row is execution throughput with a reader making the
overview and listing reads ten times a second over without, round by round: the page makes
them once a second.
"""


def _overview(coord: Coordinator, history: History, samples: list[dict[str, Any]]) -> None:
    snapshot = coord.metrics()
    samples.append(reduce(snapshot, time.time()))
    del samples[:-600]
    series(samples)
    history.head()
    history.last_errors(sorted(snapshot["engines"]))


def _rate(coord: Coordinator, request: ExecutionRequest, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        coord.execute(request)
    return n / (time.perf_counter() - t0)


def run(table: Table) -> None:
    with tempfile.TemporaryDirectory() as tmp, \
            Coordinator.open(data_dir=Path(tmp)) as coord:
        rid = coord.deploy(ECHO_WAT, "wasm", source_format="wat")
        request = ExecutionRequest(resource_id=rid, caller="bench", input=b"x")
        handles = [coord.submit(request) for _ in range(RECORDS)]
        for handle in handles:
            handle.result()
        history = History(coord.store)
        samples: list[dict[str, Any]] = []
        for _ in range(600):
            samples.append(reduce(coord.metrics(), time.time()))
        reads = {
            "overview": lambda: _overview(coord, history, samples),
            "listing, newest 100": lambda: history.executions(Filters()),
            "listing, a filter matching nothing": lambda: history.executions(
                Filters(caller="nobody")),
            "drill-down record and children": lambda: (
                history.record(handles[-1].execution_id),
                history.children(handles[-1].execution_id, RECORDS)),
        }
        for name, fn in reads.items():
            p50, p99 = percentiles(time_calls(fn, 30, warmup=3))
            table.add(SECTION, f"{name} ({RECORDS} records)", p50 * 1e3, "ms",
                      note=f"p99 {p99 * 1e3:.2f} ms")
        stop = threading.Event()

        def reader() -> None:
            while not stop.wait(0.1):
                _overview(coord, history, samples)
                history.executions(Filters())

        without, with_reader = [], []
        for _ in range(5):
            without.append(_rate(coord, request, 1000))
            stop.clear()
            thread = threading.Thread(target=reader)
            thread.start()
            try:
                with_reader.append(_rate(coord, request, 1000))
            finally:
                stop.set()
                thread.join()
        table.add(SECTION, "executions/s with a reader at 10 Hz / without",
                  paired_ratio(with_reader, without) * 100, "%",
                  note=f"without: {statistics.median(without):.0f} exec/s")
        history.close()

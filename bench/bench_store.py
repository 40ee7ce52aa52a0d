"""Store: group commit throughput, and executions/s with audit + state commit on vs off.

Issue 5's target: for small contracts, throughput with the durable audit log and state commit
on is at least 80% of the throughput with them off, measured in one run.

Rows:
- ``store.finish``: the store alone, one state write + the final audit record per call, from
  1 and 4 threads, ``normal`` and ``full`` durability (and ``full`` with ``commit_delay``);
  the note gives the mean group size (executions per transaction), which is what makes
  ``full`` affordable.
- ``sqlite3 alone``: one audit row per transaction with no coordinator: the floor of any
  durable per-execution commit, and the ceiling of on/off it implies for each workload;
- ``coordinator``: WASM contracts through the whole pipeline from 1 and from 4 threads, with
  ``[coordinator] enable_audit_tracking`` true vs false, interleaved in rounds. Contracts:
  ``add`` (the smallest: no effects, so with tracking off nothing at all is written),
  ``spin 20k`` (a small contract doing some work, no effects) and ``write`` (a state write
  and an event: committed either way, since effects always commit with their final record).

Alone: ``.venv/bin/python -m bench.bench_store`` from the repository root.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import Table
from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.store import BoundProcessor, SqliteStore
from coordinator_core.store.chain import GENESIS, seal
from coordinator_core.store.schema import INSERT_AUDIT, connect, initialise
from coordinator_core.store.state_processor import KINDS, StateProcessor
from coordinator_hookspecs import AuditRecord, Effect

SECTION = "store"
THREADS = 4
TARGET = 0.8

CONTRACT = """
(module
  (import "env" "storage_set" (func $set (param i32 i32 i32 i32)))
  (import "env" "emit_event" (func $event (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "counter")
  (func (export "add") (param i64 i64) (result i64)
    (i64.add (local.get 0) (local.get 1)))
  (func (export "spin") (param $n i64) (result i64)
    (local $i i64)
    (loop $again
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $again (i64.lt_u (local.get $i) (local.get $n))))
    (local.get $i))
  (func (export "write")
    (call $set (i32.const 0) (i32.const 7) (i32.const 0) (i32.const 7))
    (call $event (i32.const 0) (i32.const 7))))
"""


def _threaded(fn: Callable[[int, int], object], threads: int, per_thread: int) -> float:
    """Run ``fn(thread, i)`` per_thread times on each of ``threads`` threads; return calls/s."""
    start = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            fn(t, i)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    t0 = time.perf_counter()
    for thread in pool:
        thread.join()
    return threads * per_thread / (time.perf_counter() - t0)


def bench_store(table: Table) -> None:
    processors = (BoundProcessor("state", StateProcessor(), KINDS),)
    rid = "ab" * 32
    for durability, calls, delay in (("normal", 1200, 0.0), ("full", 240, 0.0),
                                     ("full", 240, 0.0005)):
        for threads in (1, THREADS) if not delay else (THREADS,):
            with tempfile.TemporaryDirectory() as tmp:
                store = SqliteStore(tmp, durability=durability, commit_delay=delay)
                ids = iter(range(10**9))

                def finish(t: int, i: int, store: SqliteStore = store, ids: Any = ids) -> None:
                    n = next(ids)
                    store.finish(AuditRecord(seq=0, record_kind="execution",
                                             timestamp=time.time(), execution_id=f"e{n}",
                                             caller="bench", resource_id=rid,
                                             status="succeeded"),
                                 [Effect("state.set", rid, b"k%d" % n, b"v")], processors)

                rate = _threaded(finish, threads, calls // threads)
                groups, jobs = store.commit_stats
                store.close()
            variant = f", commit_delay {delay * 1e6:.0f}us" if delay else ""
            table.add(SECTION, f"store.finish {durability}, {threads} thread(s){variant}", rate,
                      "exec/s", note=f"mean group {jobs / groups:.1f} executions/transaction")


#: The variants compared side by side: (audit tracking, [store] commit_delay).
VARIANTS = {"on": (True, 0.0), "off": (False, 0.0)}
#: Workloads: the smallest contract (no effects), a small one doing real work (no effects),
#: and a state-writing one (its effects commit with a final record whether tracking is on
#: or off, so on/off is ~100% by construction).
WORKLOADS = {"add": (2, 3), "spin 20k": (20_000,), "write": None}


def raw_insert_seconds(n: int = 3000) -> float:
    """The floor under any durable per-execution commit: sqlite3 alone inserting one audit row
    per transaction (WAL, ``synchronous=NORMAL``, the store's schema and index), no Python
    sealing, no coordinator. Median of 5 rounds, seconds per commit."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = connect(Path(tmp) / "raw.db", durability="normal", busy_timeout=5.0,
                       readonly=False)
        initialise(conn)
        row: list[Any] = [0, "execution", time.time(), "", None, "bench", "ab" * 32,
                          "succeeded", None, None, 5, 0.0001, None, '{"engine":"wasmtime"}',
                          bytes(32), bytes(32)]
        rounds = []
        seq = 0
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n // 5):
                seq += 1
                row[0], row[3] = seq, f"ex-{seq:08d}"
                conn.execute(INSERT_AUDIT, row)
            rounds.append((time.perf_counter() - t0) / (n // 5))
        conn.close()
    return sorted(rounds)[2]


def seal_seconds(n: int = 20_000) -> float:
    """Sealing one typical final record into the hash chain (canonical JSON, two sha256, the
    sealed record), warm loop: the other part of the commit that tamper evidence requires."""
    record = AuditRecord(seq=0, record_kind="execution", timestamp=time.time(),
                         execution_id="ex-0123456789-00000001", caller="bench",
                         resource_id="ab" * 32, status="succeeded", fee_used=5,
                         duration=0.0001, detail={"engine": "wasmtime", "entry": "add"})
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(n // 5):
            seal(record, i + 1, GENESIS)
        rounds.append((time.perf_counter() - t0) / (n // 5))
    return sorted(rounds)[2]


def bench_coordinator(table: Table, threads: int = THREADS, rounds: int = 4,
                      per_thread: int = 100, floor: tuple[float, float] | None = None
                      ) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        coords = {
            name: Coordinator.open(data_dir=Path(tmp) / str(i), overrides={
                "coordinator": {"enable_audit_tracking": tracking},
                "store": {"commit_delay": delay}})
            for i, (name, (tracking, delay)) in enumerate(VARIANTS.items())
        }
        try:
            rids = {k: c.deploy(CONTRACT, "wasm", capabilities=["storage", "events"],
                                source_format="wat") for k, c in coords.items()}
            for workload, args in WORKLOADS.items():
                entry = workload.split()[0]
                rates: dict[str, list[float]] = {name: [] for name in coords}
                for _ in range(rounds):
                    for name, coord in coords.items():
                        request = ExecutionRequest(resource_id=rids[name], entry=entry,
                                                   args=args, caller="bench")

                        def execute(t: int, i: int, coord: Any = coord,
                                    request: ExecutionRequest = request) -> None:
                            result = coord.execute(request)
                            if not result.ok:
                                raise RuntimeError(f"bench execution failed: {result.error}")

                        rates[name].append(_threaded(execute, threads, per_thread))
                median = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
                off = median["off"]
                where = f"{threads} thread{'s' if threads > 1 else ''}"
                for name in VARIANTS:
                    row = f"coordinator {workload}, {where}, audit+state {name}"
                    if name == "off":
                        table.add(SECTION, row, off, "exec/s")
                        continue
                    ratio = median[name] / off
                    table.add(SECTION, row, median[name], "exec/s")
                    table.add(SECTION, f"{row} / off", ratio * 100, "%",
                              target=f">= {TARGET:.0%}", ok=ratio >= TARGET,
                              note=f"median of {rounds} interleaved rounds")
                if floor is not None and args is not None:
                    insert, sealing = floor
                    for cost, what in ((insert, "sqlite3's own insert, no Python at all"),
                                       (insert + sealing, "that insert + sealing the record")):
                        ceiling = (1 / off) / (1 / off + cost)
                        table.add(SECTION, f"coordinator {workload}, {where}: on / off if the "
                                  f"commit cost only {what}", ceiling * 100, "%",
                                  note=f"{cost * 1e6:.0f} us per execution")
        finally:
            for coord in coords.values():
                coord.close()


def run(table: Table) -> None:
    bench_store(table)
    insert, sealing = raw_insert_seconds(), seal_seconds()
    table.add(SECTION, "sqlite3 alone: one audit row per transaction", insert * 1e6, "us",
              note="the floor under a durable per-execution commit (no coordinator)")
    table.add(SECTION, "sealing one record into the hash chain", sealing * 1e6, "us",
              note="canonical JSON, two sha256: what tamper evidence costs per record")
    bench_coordinator(table, threads=1, per_thread=400, floor=(insert, sealing))
    bench_coordinator(table, threads=THREADS)


if __name__ == "__main__":
    t = Table()
    run(t)
    for row in t.rows:
        print(f"{row.name:<45} {row.value:>10.1f} {row.unit:<7} {row.target:<7} "
              f"{row.verdict:<6} {row.note}")

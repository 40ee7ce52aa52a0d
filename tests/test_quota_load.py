"""Acceptance test of issue 6: quota limits hold under load, observed from inside the engine.

16 threads run 2,000 executions for 4 callers through a real coordinator (SQLite store, the
built-in security validators and quota policies) under an overall limit of 5 concurrent
executions (2 per caller) and a rate of 100/s per caller (burst 10). Two callers are refused
at once when out of tokens, two wait briefly (per-caller overrides), so the run admits,
waits and rejects. Checked: the limits at every instant the probe engine observes; exactly
one final audit record per execution; admitted + rejected == submitted; all quota accounting
back to zero at the end.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from coordinator_hookspecs import (
    EngineRecord,
    EngineResult,
    ExecutionContext,
    ExecutionRequest,
    ExecutionResult,
    Status,
    hookimpl,
)

THREADS, TOTAL, CALLERS = 16, 2000, ("c0", "c1", "c2", "c3")
OVERALL, PER_CALLER, RATE, BURST = 5, 2, 100.0, 10.0
FEE = 7


class ProbeEngine:
    """Records, under its own lock, how many executions run at each instant and when each
    caller's executions start; each execution holds its slot for about 2 ms."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: Counter[str] = Counter()
        self.total = 0
        self.max_total = 0
        self.max_caller = 0
        self.starts: dict[str, list[float]] = {c: [] for c in CALLERS}
        self.calls = 0

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        caller = ctx.request.caller
        with self.lock:
            self.calls += 1
            self.total += 1
            self.running[caller] += 1
            self.max_total = max(self.max_total, self.total)
            self.max_caller = max(self.max_caller, self.running[caller])
            self.starts[caller].append(time.monotonic())
        try:
            time.sleep(0.002)
        finally:
            with self.lock:
                self.total -= 1
                self.running[caller] -= 1
        return EngineResult(output=b"", fee_used=FEE)

    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        return [EngineRecord(name="probe", engine=self, resource_types={"probe"})]


def most_in_window(starts: list[float], window: float) -> int:
    """The largest number of starts within any interval of ``window`` seconds."""
    ordered = sorted(starts)
    best, j = 0, 0
    for i, t in enumerate(ordered):
        while ordered[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_limits_hold_under_load(make_coordinator: Any) -> None:
    probe = ProbeEngine()
    wait_mode = {"mode": "wait", "max_wait": 0.05}
    coord = make_coordinator(probe, overrides={
        "quota-concurrency": {"overall": OVERALL, "limit": PER_CALLER, "mode": "wait",
                              "max_wait": 0.05},
        "quota-rate": {"rate": RATE, "burst": BURST, "mode": "reject",
                       "callers": {"c2": wait_mode, "c3": wait_mode}},
        "quota-fee": {"budget": 10**12},
    })
    rid = coord.deploy(b"probe", "probe")
    results: list[ExecutionResult] = []
    results_lock = threading.Lock()

    def submitter(index: int) -> None:
        # Each thread cycles through the callers, so every caller is contended throughout.
        mine = [coord.execute(ExecutionRequest(resource_id=rid,
                                               caller=CALLERS[(index + k) % len(CALLERS)]))
                for k in range(TOTAL // THREADS)]
        with results_lock:
            results.extend(mine)

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == TOTAL

    # Concurrency, at every instant the engine saw.
    assert probe.max_total <= OVERALL and probe.max_caller <= PER_CALLER
    # Rate: a token bucket admits at most burst + rate * T in any T seconds. An engine start
    # trails its admission (concurrency wait, scheduling), but each thread has at most one
    # execution admitted and not yet started, so starts in a window exceed admissions in it
    # by at most THREADS: a bound with no timing assumption, still far below the ~600/s per
    # caller the slots alone would allow.
    for caller, starts in probe.starts.items():
        for window in (0.25, 1.0):
            assert most_in_window(starts, window) <= BURST + RATE * window + THREADS, caller

    # Every execution ended admitted or refused by quota, with one final audit record each.
    by_status = Counter(r.status for r in results)
    admitted = by_status[Status.SUCCEEDED]
    rejected = by_status[Status.REJECTED]
    assert admitted + rejected == TOTAL and admitted == probe.calls
    assert all(r.error is not None and r.error.kind.value == "quota_exceeded"
               for r in results if r.status is Status.REJECTED)
    assert admitted > 0 and rejected > 0
    finals = Counter(rec.execution_id for rec in coord.store.audit_records()
                     if rec.record_kind == "execution")
    assert len(finals) == TOTAL and set(finals.values()) == {1}
    assert set(finals) == {r.execution_id for r in results}

    # Quota accounting is back to zero, and its counters agree with what happened.
    quota = coord.metrics()["quota"]
    conc, rate, fee = quota["quota-concurrency"], quota["quota-rate"], quota["quota-fee"]
    assert conc["overall"]["running"] == 0 and conc["overall"]["queued"] == 0
    assert conc["callers"] == {} and conc["overall"]["peak"] <= OVERALL
    assert all(c["waiting"] == 0 for c in rate["callers"].values())
    assert all(c["reserved"] == 0 for c in fee["callers"].values())
    assert fee["charged"] == FEE * admitted
    assert conc["admitted"] == admitted
    assert rate["rejected"] + conc["rejected"] + fee["rejected"] == rejected
    assert rate["waited"] > 0

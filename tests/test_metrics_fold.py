"""The built-in metrics collector queues reports and folds them in batches: nothing is lost
or double counted, whether a read folds them, the queue reaching ``FOLD_AT`` does, or many
threads record while another reads."""

from __future__ import annotations

import random
import threading

from coordinator_core.services.metrics.collector import Histogram, MetricsCollector
from coordinator_hookspecs import (
    ErrorInfo,
    ErrorKind,
    ExecutionReport,
    ExecutionResult,
    Status,
)


def report(n: int) -> ExecutionReport:
    failed = n % 3 == 0
    result = ExecutionResult(
        execution_id=f"ex-{n}", status=Status.FAILED if failed else Status.SUCCEEDED,
        resource_id="r" * 64, caller="c", fee_used=n, engine="echo", duration=0.001 * (n % 7 + 1),
        error=ErrorInfo(ErrorKind.TRAP, "boom") if failed else None)
    return ExecutionReport(result, "echo", (("validation", 2e-6), ("execution", 1e-4 * n)))


def test_a_read_sees_every_report_recorded_before_it() -> None:
    collector = MetricsCollector()
    for n in range(1, 11):
        collector.record(report(n))
    assert len(collector._pending) == 10  # queued, not folded yet
    snap = collector.snapshot()
    assert snap["executions"] == 10
    assert snap["by_status"] == {"succeeded": 7, "failed": 3}
    assert snap["by_error_kind"] == {"trap": 3}
    assert snap["fee_used"] == sum(range(1, 11))
    assert snap["stages"]["execution"]["count"] == 10
    assert snap["latency"]["max_ms"] == 7.0


def test_a_full_queue_is_folded_by_the_recording_thread() -> None:
    collector = MetricsCollector()
    for n in range(collector.FOLD_AT + 5):
        collector.record(report(n))
    assert len(collector._pending) == 5  # the first FOLD_AT were folded without a read
    assert sum(collector.statuses.values()) == collector.FOLD_AT
    assert collector.snapshot()["executions"] == collector.FOLD_AT + 5


def test_threads_recording_while_another_reads_lose_nothing() -> None:
    collector = MetricsCollector()
    per_thread, threads = 3000, 4
    stop = threading.Event()

    def record() -> None:
        for n in range(per_thread):
            collector.record(report(n))

    def read() -> None:
        while not stop.is_set():
            collector.snapshot()

    reader = threading.Thread(target=read)
    reader.start()
    workers = [threading.Thread(target=record) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    reader.join()
    snap = collector.snapshot()
    assert snap["executions"] == per_thread * threads
    assert snap["fee_used"] == threads * sum(range(per_thread))
    assert snap["stages"]["validation"]["count"] == per_thread * threads


def test_batched_bucketing_matches_one_at_a_time() -> None:
    rng = random.Random(7)
    samples = [10 ** rng.uniform(-8.5, 2.5) for _ in range(20_000)] + [0.0, 1e-7, 1e3]
    one, batch = Histogram(), Histogram()
    for seconds in samples:
        one.add(seconds)
    batch.add_all(samples)
    assert batch.buckets == one.buckets
    assert (batch.count, batch.max) == (one.count, one.max)
    assert abs(batch.total - one.total) < 1e-9 * one.total

"""In-process metrics: log-bucketed latency histograms and counters, cheap to update.

A histogram keeps counts in fixed logarithmic buckets (20 per decade, 100 ns to 100 s), so
recording is one list increment and percentiles are read from the buckets (within 12% of the
true value). The collector only queues each report on the execution's thread and folds the
queue into its counters in batches, never holding its lock across an execution.
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
import time
from collections import Counter, deque
from typing import Any

from coordinator_hookspecs import ExecutionReport

_PER_DECADE = 20
_LOW_EXP = -7  # 100 ns
_BUCKETS = (2 - _LOW_EXP) * _PER_DECADE + 1  # up to 100 s


#: Lower edges of buckets 1, 2, ...: ``bisect_right`` over them gives a sample's bucket
#: (0 up to the first edge, the last bucket from the last edge on).
_EDGES = tuple(10 ** (_LOW_EXP + i / _PER_DECADE) for i in range(1, _BUCKETS))
_bucket_of = functools.partial(bisect.bisect_right, _EDGES)


def _upper(index: int) -> float:
    return float(10 ** (_LOW_EXP + (index + 1) / _PER_DECADE))


class Histogram:
    """Latency histogram in seconds."""

    __slots__ = ("buckets", "count", "max", "total")

    def __init__(self) -> None:
        self.buckets = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self.buckets[_bucket_of(seconds)] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def add_all(self, values: list[float]) -> None:
        """``add`` for many samples at once (the collector's batched fold): the bucket of
        each sample is found by ``bisect`` over the bucket edges and counted by ``Counter``,
        both in C, instead of a ``log10`` per sample in Python."""
        if not values:
            return
        buckets = self.buckets
        for index, n in Counter(map(_bucket_of, values)).items():
            buckets[index] += n
        self.count += len(values)
        self.total += sum(values)
        self.max = max(self.max, max(values))

    def percentile(self, q: float) -> float:
        """Upper bound of the bucket holding the ``q`` quantile (0 < q <= 1)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                return min(_upper(index), self.max)
        return self.max

    def snapshot(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean_ms": round(self.total / self.count * 1e3, 4) if self.count else 0.0,
            "p50_ms": round(self.percentile(0.5) * 1e3, 4),
            "p90_ms": round(self.percentile(0.9) * 1e3, 4),
            "p99_ms": round(self.percentile(0.99) * 1e3, 4),
            "max_ms": round(self.max * 1e3, 4),
        }


class MetricsCollector:
    """The built-in metrics sink: counts by status, error kind and engine; latencies
    end-to-end and per stage; fee consumed; throughput; the CPU time and memory of
    executions that reached an engine (``resources``).

    ``record`` runs on every execution's thread, so it only queues the report (one deque
    append); the reports are folded into the counters and histograms in batches, when
    ``FOLD_AT`` are waiting and before every read. Updating the counters inline costs
    several times more than the append: the code runs cold between an engine call and an
    SQLite commit, while a batch folds its reports warm (``bench/results.md`` has the
    figures).
    """

    #: Reports waiting before the recording thread folds them (bounds the memory held and
    #: the pause of the one execution that folds: about a millisecond).
    FOLD_AT = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[tuple[float, ExecutionReport]] = deque()
        self.reset()

    def reset(self) -> None:
        # resources.py builds on this module's Histogram, so it is imported here, not above.
        from coordinator_core.services.metrics.resources import ResourceStats

        with self._lock:
            self._pending.clear()
            self.statuses: Counter[Any] = Counter()
            self.error_kinds: Counter[Any] = Counter()
            self.engines: Counter[str] = Counter()
            self.resource_types: Counter[str] = Counter()
            self.fee_used = 0
            self.stages: dict[str, Histogram] = {}
            self.resources = ResourceStats()
            self.first: float | None = None
            self.last = 0.0

    def record(self, report: ExecutionReport) -> None:
        pending = self._pending
        pending.append((time.monotonic(), report))  # deque.append is atomic: no lock
        if len(pending) >= self.FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Fold the queued reports into the counters (also done before every read)."""
        with self._lock:
            pending, take = self._pending, self._pending.popleft
            if not pending:
                return
            statuses, kinds, engines, types = (self.statuses, self.error_kinds, self.engines,
                                               self.resource_types)
            samples: dict[str, list[float]] = {"end_to_end": []}
            end_to_end = samples["end_to_end"].append
            fee = 0
            use = self.resources.add
            for _ in range(len(pending)):  # what is queued now; later appends wait
                now, report = take()
                result = report.result
                statuses[result.status] += 1
                if result.error is not None:
                    kinds[result.error.kind] += 1
                if result.engine is not None:
                    engines[result.engine] += 1
                    use(report.resource_type, result.cpu_seconds, result.memory_bytes)
                if report.resource_type is not None:
                    types[report.resource_type] += 1
                fee += result.fee_used
                end_to_end(result.duration)
                for name, seconds in report.stages:
                    values = samples.get(name)
                    if values is None:
                        values = samples[name] = []
                    values.append(seconds)
                if self.first is None:
                    self.first = now - result.duration
            self.last = now
            self.fee_used += fee
            self.resources.flush()
            for name, values in samples.items():
                h = self.stages.get(name)
                if h is None:
                    h = self.stages[name] = Histogram()
                h.add_all(values)

    def snapshot(self) -> dict[str, Any]:
        self.fold()
        with self._lock:
            total = sum(self.statuses.values())
            elapsed = (self.last - self.first) if self.first is not None else 0.0
            by_status = {status.value: n for status, n in self.statuses.items()}
            stages = {name: h.snapshot() for name, h in self.stages.items()}
            empty = Histogram().snapshot()
            return {
                "executions": total,
                "by_status": by_status,
                "by_error_kind": {kind.value: n for kind, n in self.error_kinds.items()},
                "by_engine": dict(self.engines),
                "by_resource_type": dict(self.resource_types),
                "success_rate": round(by_status.get("succeeded", 0) / total, 6) if total else None,
                "throughput_per_s": round(total / elapsed, 2) if elapsed > 0 else None,
                "fee_used": self.fee_used,
                "latency": stages.pop("end_to_end", empty),
                "stages": stages,
                "resources": self.resources.snapshot(),
            }

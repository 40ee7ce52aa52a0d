"""In-process metrics: log-bucketed latency histograms and counters, cheap to update.

A histogram keeps counts in fixed logarithmic buckets (20 per decade, 100 ns to 100 s), so
recording is one ``log10`` and one list increment and percentiles are read from the buckets
(within 12% of the true value). The collector holds one short lock per record, never
across an execution.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Any

from coordinator_hookspecs import ExecutionReport

_PER_DECADE = 20
_LOW_EXP = -7  # 100 ns
_BUCKETS = (2 - _LOW_EXP) * _PER_DECADE + 1  # up to 100 s


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
        index = int((math.log10(seconds) - _LOW_EXP) * _PER_DECADE) if seconds > 1e-7 else 0
        self.buckets[index if index < _BUCKETS else _BUCKETS - 1] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

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
    end-to-end and per stage; fee consumed; throughput."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.statuses: Counter[Any] = Counter()
            self.error_kinds: Counter[Any] = Counter()
            self.engines: Counter[str] = Counter()
            self.resource_types: Counter[str] = Counter()
            self.fee_used = 0
            self.stages: dict[str, Histogram] = {}
            self.first: float | None = None
            self.last = 0.0

    def record(self, report: ExecutionReport) -> None:
        # Hot path: histogram updates are inlined (a method call per stage costs more than
        # the update itself); counters are keyed by the enum members, names resolved on read.
        result = report.result
        now = time.monotonic()
        log10, low, per, top = math.log10, _LOW_EXP, _PER_DECADE, _BUCKETS - 1
        with self._lock:
            self.statuses[result.status] += 1
            if result.error is not None:
                self.error_kinds[result.error.kind] += 1
            if result.engine is not None:
                self.engines[result.engine] += 1
            if report.resource_type is not None:
                self.resource_types[report.resource_type] += 1
            self.fee_used += result.fee_used
            stages = self.stages
            for name, seconds in (("end_to_end", result.duration), *report.stages):
                h = stages.get(name)
                if h is None:
                    h = stages[name] = Histogram()
                index = int((log10(seconds) - low) * per) if seconds > 1e-7 else 0
                h.buckets[index if index < top else top] += 1
                h.count += 1
                h.total += seconds
                if seconds > h.max:
                    h.max = seconds
            if self.first is None:
                self.first = now - result.duration
            self.last = now

    def snapshot(self) -> dict[str, Any]:
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
            }

"""Per-model serving statistics: batch sizes, queue time and compute time.

Queue time (enqueued until its batch starts) and compute time (one ``sess.run`` of a batch)
are kept apart, as Triton's ``queue_duration`` and ``compute_infer_duration``: a model whose
latency is mostly queue wants more instances or a shorter delay, one whose latency is compute
wants bigger batches or more threads. Updated by the runner threads under a lock (a few
operations per batch); read by ``metrics()`` and the Prometheus collector.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

#: Recent samples kept for the percentiles of each duration.
WINDOW = 2048


class Durations:
    """Count, sum and max of a duration, with percentiles over the recent ``WINDOW``."""

    __slots__ = ("count", "max", "recent", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.recent: deque[float] = deque(maxlen=WINDOW)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds
        self.recent.append(seconds)

    def snapshot(self) -> dict[str, Any]:
        ordered = sorted(self.recent)

        def at(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 4) \
                if ordered else 0.0

        return {"count": self.count, "sum_seconds": round(self.total, 6),
                "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": round(self.max * 1e3, 4)}


class BatchStats:
    """What one model's batcher and instances did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[int] = Counter()   # requests per batch -> batches
        self.rows = 0
        self.alone = 0       # requests run alone (did not fit a batch, or a retry)
        self.retried = 0     # batches that failed and were retried request by request
        self.queue = Durations()
        self.compute = Durations()

    def batch(self, size: int, rows: int, queued: list[float], compute: float) -> None:
        with self._lock:
            self.requests[size] += 1
            self.rows += rows
            for seconds in queued:
                self.queue.add(seconds)
            self.compute.add(compute)

    def ran_alone(self, compute: float) -> None:
        with self._lock:
            self.alone += 1
            self.requests[1] += 1
            self.compute.add(compute)

    def retry(self) -> None:
        with self._lock:
            self.retried += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            batches = sum(self.requests.values())
            served = sum(size * n for size, n in self.requests.items())
            return {
                "batches": batches,
                "requests": served,
                "rows": self.rows,
                "mean_batch_size": round(served / batches, 3) if batches else 0.0,
                "batch_sizes": {str(size): n for size, n in sorted(self.requests.items())},
                "ran_alone": self.alone,
                "retried_batches": self.retried,
                "queue": self.queue.snapshot(),
                "compute": self.compute.snapshot(),
            }

"""Metrics rebuilt from a data directory's audit log, for ``coordinator serve-metrics``.

The in-process sink only sees executions of its own process. Every execution of every
process sharing a data directory leaves exactly one final audit record, so a separate
``serve-metrics`` process can count them all: on each scrape it reads the records appended
since the last one (the log is append-only with gapless sequence numbers) and serves the
same names as the sink — ``coordinator_executions_total``, ``coordinator_fee_used_total``
and ``coordinator_execution_duration_seconds`` (per-stage times are not in the log).
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from coordinator_hookspecs import CoordinatorView


class AuditLogCollector:
    """A ``prometheus_client`` collector over the coordinator's audit log."""

    def __init__(self, coordinator: CoordinatorView, buckets: Sequence[float]) -> None:
        self._coordinator = coordinator
        self._bounds = tuple(buckets)
        self._lock = threading.Lock()
        self._next_seq = 1
        self._types: dict[str, str] = {}
        self.executions: Counter[tuple[str, str, str, str]] = Counter()
        self.fee: Counter[tuple[str, str]] = Counter()
        self._buckets: dict[str, list[int]] = {}
        self._sums: defaultdict[str, float] = defaultdict(float)

    def _type_of(self, resource_id: str | None) -> str:
        if not resource_id:
            return ""
        rtype = self._types.get(resource_id)
        if rtype is None:
            try:
                rtype = self._coordinator.resource(resource_id).type
            except Exception:  # an execution of a resource that was never deployed
                rtype = ""
            self._types[resource_id] = rtype
        return rtype

    def catch_up(self) -> int:
        """Fold the records appended since the last call; return how many were read."""
        read = 0
        for record in self._coordinator.audit_records(self._next_seq):
            self._next_seq = record.seq + 1
            read += 1
            if record.record_kind != "execution":
                continue
            rtype = self._type_of(record.resource_id)
            engine = str(record.detail.get("engine", "")) if record.detail else ""
            self.executions[(record.status or "", record.error_kind or "", engine, rtype)] += 1
            if record.fee_used:
                self.fee[(engine, rtype)] += record.fee_used
            counts = self._buckets.setdefault(rtype, [0] * (len(self._bounds) + 1))
            counts[bisect.bisect_left(self._bounds, record.duration)] += 1
            self._sums[rtype] += record.duration
        return read

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self.catch_up()
            executions = CounterMetricFamily(
                "coordinator_executions", "Finished executions by status, error kind, engine "
                "and resource type (from the audit log).",
                labels=["status", "error_kind", "engine", "resource_type"])
            for labels, n in sorted(self.executions.items()):
                executions.add_metric(list(labels), n)
            fee = CounterMetricFamily("coordinator_fee_used", "Execution fee consumed (from "
                                      "the audit log).", labels=["engine", "resource_type"])
            for fee_labels, n in sorted(self.fee.items()):
                fee.add_metric(list(fee_labels), n)
            duration = HistogramMetricFamily(
                "coordinator_execution_duration_seconds",
                "End-to-end execution latency (from the audit log).", labels=["resource_type"])
            for rtype, counts in sorted(self._buckets.items()):
                cumulative, running = [], 0
                for bound, n in zip((*map(repr, self._bounds), "+Inf"), counts, strict=True):
                    running += n
                    cumulative.append((bound, running))
                duration.add_metric([rtype], cumulative, sum_value=self._sums[rtype])
        yield from (executions, fee, duration)

"""Metrics rebuilt from a data directory's audit log, for ``coordinator serve-metrics``.

The in-process sink only sees executions of its own process. Every execution of every
process sharing a data directory leaves exactly one final audit record, so a separate
``serve-metrics`` process can count them all: on each scrape it reads the records appended
since the last one (the log is append-only with gapless sequence numbers) and serves the
same names as the sink — ``coordinator_executions_total``, ``coordinator_fee_used_total``,
``coordinator_execution_duration_seconds``, and the resource use of each execution that
reached an engine, ``coordinator_execution_cpu_seconds`` and
``coordinator_execution_memory_bytes`` (from the sealed ``detail["cpu_ns"]`` and
``["memory_bytes"]``; absent with ``[coordinator] measure_resources`` off). Per-stage times
and the per-model batch series are not in the log.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from coordinator_hookspecs import CoordinatorView
from coordinator_metrics_prometheus.config import MEMORY_BUCKETS


class _Series:
    """One histogram series folded from the log: per-bucket counts (not cumulative), sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class AuditLogCollector:
    """A ``prometheus_client`` collector over the coordinator's audit log."""

    def __init__(self, coordinator: CoordinatorView, buckets: Sequence[float],
                 memory_buckets: Sequence[float] = MEMORY_BUCKETS) -> None:
        self._coordinator = coordinator
        bounds = tuple(sorted(float(b) for b in buckets))
        memory_bounds = tuple(sorted(float(b) for b in memory_buckets))
        self._lock = threading.Lock()
        self._next_seq = 1
        self._types: dict[str, str] = {}
        self.executions: Counter[tuple[str, str, str, str]] = Counter()
        self.fee: Counter[tuple[str, str]] = Counter()
        #: resource type -> series, for the duration, CPU and memory histograms
        self.durations: defaultdict[str, _Series] = defaultdict(lambda: _Series(bounds))
        self.cpu: defaultdict[str, _Series] = defaultdict(lambda: _Series(bounds))
        self.memory: defaultdict[str, _Series] = defaultdict(lambda: _Series(memory_bounds))

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
            detail = record.detail or {}
            engine = str(detail.get("engine", ""))
            self.executions[(record.status or "", record.error_kind or "", engine, rtype)] += 1
            if record.fee_used:
                self.fee[(engine, rtype)] += record.fee_used
            self.durations[rtype].add(record.duration)
            cpu_ns, memory = detail.get("cpu_ns"), detail.get("memory_bytes")
            if type(cpu_ns) is int and type(memory) is int:  # reached an engine, measured
                self.cpu[rtype].add(cpu_ns * 1e-9)
                self.memory[rtype].add(memory)
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
            cpu = HistogramMetricFamily(
                "coordinator_execution_cpu_seconds", "CPU time of each execution's engine "
                "call (from the audit log).", labels=["resource_type"])
            memory = HistogramMetricFamily(
                "coordinator_execution_memory_bytes", "Peak memory of each execution as its "
                "engine counts it (from the audit log).", labels=["resource_type"])
            for family, series_by_type in ((duration, self.durations), (cpu, self.cpu),
                                           (memory, self.memory)):
                for rtype, series in sorted(series_by_type.items()):
                    family.add_metric([rtype], series.cumulative(), sum_value=series.total)
        yield from (executions, fee, duration, cpu, memory)

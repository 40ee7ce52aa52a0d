"""The metrics sink: every execution report into Prometheus metrics on the sink's own
``CollectorRegistry`` (never the process-global one: several coordinators may share a
process, each with its own sink and endpoint).

Names follow the Prometheus conventions (base units, ``_total`` for counters):

- ``coordinator_executions_total{status, error_kind, engine, resource_type}``
- ``coordinator_fee_used_total{engine, resource_type}``
- ``coordinator_execution_duration_seconds{resource_type}`` (histogram, end to end)
- ``coordinator_stage_duration_seconds{stage}`` (histogram: validation, security, quota,
  selection, execution, commit, audit_sinks)
- ``coordinator_execution_cpu_seconds{resource_type}`` and
  ``coordinator_execution_memory_bytes{resource_type}`` (histograms: the resource use of
  each execution that reached an engine, ``ExecutionResult.cpu_seconds``/``memory_bytes``)
- read at scrape time from the coordinator: ``coordinator_engine_inflight{engine}``,
  ``coordinator_engine_capacity{engine}``, ``coordinator_engine_busy_seconds_total{engine}``,
  ``coordinator_engine_healthy{engine}``, ``coordinator_active_executions``, and per model
  served with deploy options (``batch_metrics.py``): ``coordinator_model_batch_size``,
  ``coordinator_model_queue_duration_seconds``, ``coordinator_model_compute_duration_seconds``,
  ``coordinator_model_queued``.

``record`` runs on the caller's thread after every execution, so it only queues the report;
queued reports are added to plain counters and bucket lists in batches (``FOLD_AT`` waiting,
and before every scrape), and the Prometheus families are built from those counts at scrape
time. (``prometheus_client``'s labelled metrics cost a validation and a lock per
observation, ~20 us per execution with the stage histograms.)

``prometheus_client`` is imported when the registry is first read (a scrape, the endpoint, a
test), not when the plugin loads: every ``coordinator`` command and every coordinator
registers this sink, and most are never scraped.
"""

from __future__ import annotations

import functools
import threading
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from coordinator_hookspecs import CoordinatorView, ExecutionReport, MetricsSinkBase
from coordinator_metrics_prometheus.batch_metrics import model_families
from coordinator_metrics_prometheus.config import DEFAULT_BUCKETS, MEMORY_BUCKETS

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

#: Reports queued before the recording thread adds them to the counts.
FOLD_AT = 200  # not 256 like the core collector: their folds fall on different executions


class _Buckets:
    """One histogram series: per-bucket counts (not cumulative), count and sum."""

    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.total = 0.0


class PrometheusSink(MetricsSinkBase):
    """``MetricsSink`` whose counts are exported by ``self.registry``."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS,
                 memory_buckets: Sequence[float] = MEMORY_BUCKETS) -> None:
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self.memory_bounds = tuple(sorted(float(b) for b in memory_buckets))
        self._bucket_of = functools.partial(bisect_left, self.bounds)
        self._memory_bucket_of = functools.partial(bisect_left, self.memory_bounds)
        self._lock = threading.Lock()
        self._pending: deque[ExecutionReport] = deque()
        self.executions: dict[tuple[Any, Any, str, str], int] = {}
        self.fee: dict[tuple[str, str], int] = {}
        self.durations: dict[str, _Buckets] = {}
        self.stages: dict[str, _Buckets] = {}
        self.cpu: dict[str, _Buckets] = {}
        self.memory: dict[str, _Buckets] = {}
        self._registry: CollectorRegistry | None = None
        self._registry_lock = threading.Lock()  # not ``_lock``: a scrape folds under that one
        self._coordinator_collector: CoordinatorCollector | None = None
        self.server: Any = None

    @property
    def registry(self) -> CollectorRegistry:
        """The sink's own ``CollectorRegistry`` (built, and ``prometheus_client`` imported,
        on first read) with this sink's counts and, once attached, the coordinator's gauges."""
        registry = self._registry
        if registry is None:
            with self._registry_lock:
                registry = self._registry
                if registry is None:
                    from prometheus_client import CollectorRegistry

                    registry = CollectorRegistry()
                    registry.register(_SinkCollector(self))
                    if self._coordinator_collector is not None:
                        registry.register(self._coordinator_collector)
                    self._registry = registry
        return registry

    def record(self, report: ExecutionReport) -> None:
        pending = self._pending
        pending.append(report)  # deque.append is atomic: no lock on the execution's path
        if len(pending) >= FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Add the queued reports to the counts (also done before every scrape). Samples
        are grouped per series first, then bucketed by ``bisect`` and counted by
        ``Counter`` (both in C) rather than one Python update per sample."""
        with self._lock:
            pending, take = self._pending, self._pending.popleft
            if not pending:
                return
            executions, fee = self.executions, self.fee
            durations: dict[str, list[float]] = {}
            stages: dict[str, list[float]] = {}
            cpu: dict[str, list[float]] = {}
            memory: dict[str, list[float]] = {}
            for _ in range(len(pending)):  # what is queued now; later appends wait
                report = take()
                result = report.result
                rtype = report.resource_type or ""
                engine = result.engine or ""
                error = result.error
                key = (result.status, error.kind if error is not None else None, engine, rtype)
                executions[key] = executions.get(key, 0) + 1
                if result.fee_used:
                    fee[engine, rtype] = fee.get((engine, rtype), 0) + result.fee_used
                values = durations.get(rtype)
                if values is None:
                    values = durations[rtype] = []
                values.append(result.duration)
                if result.engine is not None:  # reached an engine: its resource use counts
                    values = cpu.get(rtype)
                    if values is None:
                        values = cpu[rtype] = []
                        memory[rtype] = []
                    values.append(result.cpu_seconds)
                    memory[rtype].append(result.memory_bytes)
                for stage, seconds in report.stages:
                    values = stages.get(stage)
                    if values is None:
                        values = stages[stage] = []
                    values.append(seconds)
            latency, size = self._bucket_of, self._memory_bucket_of
            for samples, series_by_label, bucket_of in ((durations, self.durations, latency),
                                                        (stages, self.stages, latency),
                                                        (cpu, self.cpu, latency),
                                                        (memory, self.memory, size)):
                for label, values in samples.items():
                    series = series_by_label.get(label)
                    if series is None:
                        bounds = self.memory_bounds if bucket_of is size else self.bounds
                        series = series_by_label[label] = _Buckets(len(bounds) + 1)
                    counts = series.counts
                    for index, n in Counter(map(bucket_of, values)).items():
                        counts[index] += n
                    series.total += sum(values)

    def families(self) -> list[Metric]:
        """The recorded counts as Prometheus metric families (called at scrape time)."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        executions = CounterMetricFamily(
            "coordinator_executions", "Finished executions by status, error kind, engine and "
            "resource type.", labels=["status", "error_kind", "engine", "resource_type"])
        fee = CounterMetricFamily(
            "coordinator_fee_used", "Execution fee consumed (wasm fuel, onnx cost units).",
            labels=["engine", "resource_type"])
        duration = HistogramMetricFamily(
            "coordinator_execution_duration_seconds", "End-to-end execution latency.",
            labels=["resource_type"])
        stage = HistogramMetricFamily(
            "coordinator_stage_duration_seconds", "Time spent in each pipeline stage.",
            labels=["stage"])
        cpu = HistogramMetricFamily(
            "coordinator_execution_cpu_seconds", "CPU time of each execution's engine call "
            "(its thread, nested executions included, plus a worker process's).",
            labels=["resource_type"])
        memory = HistogramMetricFamily(
            "coordinator_execution_memory_bytes", "Peak memory of each execution as its "
            "engine counts it (wasm linear memory, onnx input and output tensors).",
            labels=["resource_type"])
        self.fold()
        with self._lock:
            for (status, kind, engine, rtype), n in self.executions.items():
                executions.add_metric([status.value, kind.value if kind else "", engine, rtype], n)
            for (engine, rtype), total in self.fee.items():
                fee.add_metric([engine, rtype], total)
            for family, series_by_label, bounds in ((duration, self.durations, self.bounds),
                                                    (stage, self.stages, self.bounds),
                                                    (cpu, self.cpu, self.bounds),
                                                    (memory, self.memory, self.memory_bounds)):
                for label, series in series_by_label.items():
                    family.add_metric([label],
                                      self._cumulative(series, floatToGoString, bounds),
                                      series.total)
        return [executions, fee, duration, stage, cpu, memory]

    def _cumulative(self, series: _Buckets, label: Any,
                    bounds: tuple[float, ...] | None = None) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        seen = 0
        bounds = self.bounds if bounds is None else bounds
        for bound, n in zip((*bounds, float("inf")), series.counts, strict=True):
            seen += n
            out.append((label(bound), seen))
        return out

    # -- lifecycle (driven by the plugin's startup/shutdown hooks) -------------------------
    def attach(self, coordinator: CoordinatorView) -> None:
        """Expose the coordinator's live engine gauges in this registry (registered now if
        the registry exists, else when it is built)."""
        with self._registry_lock:
            if self._coordinator_collector is not None:
                return
            collector = self._coordinator_collector = CoordinatorCollector(coordinator)
            registry = self._registry
        if registry is not None:
            registry.register(collector)

    def stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    def close(self) -> None:
        self.stop_server()

class CoordinatorCollector:
    """Engine utilisation and active executions, read from ``coordinator.metrics()`` at
    scrape time (nothing is kept between scrapes)."""

    def __init__(self, coordinator: CoordinatorView) -> None:
        self._coordinator = coordinator

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snapshot = self._coordinator.metrics()
        inflight = GaugeMetricFamily("coordinator_engine_inflight",
                                     "Executions running on each engine now.", labels=["engine"])
        capacity = GaugeMetricFamily("coordinator_engine_capacity",
                                     "Declared concurrency of each engine (1 if undeclared).",
                                     labels=["engine"])
        busy = CounterMetricFamily("coordinator_engine_busy_seconds",
                                   "Seconds each engine spent executing.", labels=["engine"])
        healthy = GaugeMetricFamily("coordinator_engine_healthy",
                                    "1 if the engine is in rotation, 0 if its health check "
                                    "failed.", labels=["engine"])
        for name, engine in snapshot.get("engines", {}).items():
            inflight.add_metric([name], engine["inflight"])
            capacity.add_metric([name], engine["capacity"])
            busy.add_metric([name], engine["busy_seconds"])
            healthy.add_metric([name], 1.0 if engine["healthy"] else 0.0)
        yield from (inflight, capacity, busy, healthy)
        yield from model_families(snapshot.get("engines", {}))
        yield GaugeMetricFamily("coordinator_active_executions",
                                "Executions queued or running now.",
                                value=snapshot.get("active", 0))


class _SinkCollector:
    """Hands the sink's counts to the registry at scrape time."""

    def __init__(self, sink: PrometheusSink) -> None:
        self._sink = sink

    def collect(self) -> Iterator[Metric]:
        yield from self._sink.families()

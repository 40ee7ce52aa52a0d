"""The metrics sink: every execution report into Prometheus metrics on the sink's own
``CollectorRegistry`` (never the process-global one: several coordinators may share a
process, each with its own sink and endpoint).

Names follow the Prometheus conventions (base units, ``_total`` for counters):

- ``coordinator_executions_total{status, error_kind, engine, resource_type}``
- ``coordinator_fee_used_total{engine, resource_type}``
- ``coordinator_execution_duration_seconds{resource_type}`` (histogram, end to end)
- ``coordinator_stage_duration_seconds{stage}`` (histogram: validation, security, quota,
  selection, execution, commit, audit_sinks)
- read at scrape time from the coordinator: ``coordinator_engine_inflight{engine}``,
  ``coordinator_engine_capacity{engine}``, ``coordinator_engine_busy_seconds_total{engine}``,
  ``coordinator_engine_healthy{engine}``, ``coordinator_active_executions``.

Labelled children are cached in plain dicts: ``record`` runs on the caller's thread after
every execution, and ``labels()`` validates and locks on each call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from coordinator_hookspecs import ExecutionReport
from coordinator_metrics_prometheus.config import DEFAULT_BUCKETS


class PrometheusSink:
    """``MetricsSink`` recording into ``self.registry``."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self._executions = Counter(
            "coordinator_executions_total", "Finished executions by status, error kind, "
            "engine and resource type.", ("status", "error_kind", "engine", "resource_type"),
            registry=reg)
        self._fee = Counter(
            "coordinator_fee_used_total", "Execution fee consumed (wasm fuel, onnx cost units).",
            ("engine", "resource_type"), registry=reg)
        self._duration = Histogram(
            "coordinator_execution_duration_seconds", "End-to-end execution latency.",
            ("resource_type",), buckets=tuple(buckets), registry=reg)
        self._stages = Histogram(
            "coordinator_stage_duration_seconds", "Time spent in each pipeline stage.",
            ("stage",), buckets=tuple(buckets), registry=reg)
        self._children: dict[tuple[str, ...], Any] = {}
        self._coordinator_collector: CoordinatorCollector | None = None
        self.server: Any = None

    def _child(self, metric: Any, key: tuple[str, ...]) -> Any:
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*key[1:])
        return child

    def record(self, report: ExecutionReport) -> None:
        result = report.result
        rtype = report.resource_type or ""
        engine = result.engine or ""
        kind = result.error.kind.value if result.error is not None else ""
        self._child(self._executions, ("x", result.status.value, kind, engine, rtype)).inc()
        if result.fee_used:
            self._child(self._fee, ("f", engine, rtype)).inc(result.fee_used)
        self._child(self._duration, ("d", rtype)).observe(result.duration)
        for stage, seconds in report.stages:
            self._child(self._stages, ("s", stage)).observe(seconds)

    # -- lifecycle (driven by the plugin's startup/shutdown hooks) -------------------------
    def attach(self, coordinator: Any) -> None:
        """Expose the coordinator's live engine gauges in this registry."""
        if self._coordinator_collector is None:
            self._coordinator_collector = CoordinatorCollector(coordinator)
            self.registry.register(self._coordinator_collector)

    def stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    def close(self) -> None:
        self.stop_server()


class CoordinatorCollector:
    """Engine utilisation and active executions, read from ``coordinator.metrics()`` at
    scrape time (nothing is kept between scrapes)."""

    def __init__(self, coordinator: Any) -> None:
        self._coordinator = coordinator

    def collect(self) -> Iterator[Metric]:
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
        yield GaugeMetricFamily("coordinator_active_executions",
                                "Executions queued or running now.",
                                value=snapshot.get("active", 0))

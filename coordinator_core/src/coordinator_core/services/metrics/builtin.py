"""Built-in plugin: the in-process metrics collector behind ``Coordinator.metrics()``."""

from __future__ import annotations

from typing import Any

from coordinator_core.services.metrics.collector import MetricsCollector
from coordinator_hookspecs import MetricsSinkRecord, hookimpl

#: The record name ``Coordinator.metrics()`` reads its snapshot from.
COLLECTOR_NAME = "collector"


@hookimpl
def coordinator_register_metrics_sinks(config: Any) -> list[MetricsSinkRecord]:
    return [MetricsSinkRecord(name=COLLECTOR_NAME, sink=MetricsCollector(), order=0)]

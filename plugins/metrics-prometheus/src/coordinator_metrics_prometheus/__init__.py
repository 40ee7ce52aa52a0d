"""coordinator plugin: Prometheus metrics (a metrics sink, a ``/metrics`` endpoint, and the
``coordinator serve-metrics`` command). Entry point ``prometheus``."""

from coordinator_metrics_prometheus.config import PrometheusSettings
from coordinator_metrics_prometheus.sink import PrometheusSink

__all__ = ["PrometheusSettings", "PrometheusSink"]

"""Hook implementations of the Prometheus plugin (entry point ``prometheus``).

Registers the ``[prometheus]`` config section, the ``prometheus`` metrics sink (one per
coordinator, on its own registry), the ``/metrics`` endpoint while a coordinator is open
(when ``[prometheus] port`` is set), and the ``coordinator serve-metrics`` command.
"""

from __future__ import annotations

from collections.abc import Iterator

from coordinator_hookspecs import (
    CliCommand,
    ConfigSection,
    CoordinatorConfig,
    CoordinatorView,
    MetricsSinkRecord,
    hookimpl,
)
from coordinator_metrics_prometheus.cli import SERVE_METRICS
from coordinator_metrics_prometheus.config import PrometheusSettings
from coordinator_metrics_prometheus.server import MetricsServer
from coordinator_metrics_prometheus.sink import PrometheusSink

SECTION = "prometheus"


def sinks_of(coordinator: CoordinatorView) -> Iterator[PrometheusSink]:
    """This plugin's sinks among the coordinator's (none if disabled by config)."""
    for sink in coordinator.registered("metrics_sinks").values():
        if isinstance(sink, PrometheusSink):
            yield sink


@hookimpl
def coordinator_register_config_sections() -> list[ConfigSection]:
    return [ConfigSection(name=SECTION, type=PrometheusSettings)]


@hookimpl
def coordinator_register_metrics_sinks(config: CoordinatorConfig) -> list[MetricsSinkRecord]:
    settings: PrometheusSettings = config.section(SECTION)
    # Order 50: after the core's collector (0), before sinks that may be slow.
    return [MetricsSinkRecord(name="prometheus", sink=PrometheusSink(settings.buckets),
                              order=50)]


@hookimpl
def coordinator_startup(coordinator: CoordinatorView) -> None:
    settings: PrometheusSettings = coordinator.config.section(SECTION)
    for sink in sinks_of(coordinator):
        sink.attach(coordinator)
        if settings.port:
            sink.server = MetricsServer(sink.registry, settings.addr, settings.port)


@hookimpl
def coordinator_shutdown(coordinator: CoordinatorView) -> None:
    for sink in sinks_of(coordinator):
        sink.stop_server()


@hookimpl
def coordinator_register_cli_commands() -> list[CliCommand]:
    return [SERVE_METRICS]

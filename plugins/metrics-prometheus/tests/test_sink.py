"""The Prometheus sink inside a real coordinator (echo engine, SQLite store): counters,
histograms and engine gauges on a registry of its own; the endpoint's life cycle; the
``serve-metrics`` command over the audit log."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.cli.main import main
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import InvalidRequest
from coordinator_metrics_prometheus import PrometheusSink
from coordinator_metrics_prometheus import plugin as prometheus_plugin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sink_of(coord: Coordinator) -> PrometheusSink:
    (sink,) = prometheus_plugin.sinks_of(coord)
    return sink


def run_mix(coord: Coordinator) -> str:
    rid = coord.deploy(b"code", "echo")
    for data in (b"a", b"bb", b"ccc"):
        assert coord.execute(ExecutionRequest(resource_id=rid, input=data)).ok
    coord.execute(ExecutionRequest(resource_id=rid, entry="fail"))
    coord.execute(ExecutionRequest(resource_id="0" * 64))
    return rid


def test_counts_fee_and_latency(make_coordinator: Any) -> None:
    coord = make_coordinator(EchoPlugin(), prometheus_plugin)
    run_mix(coord)
    value = sink_of(coord).registry.get_sample_value
    assert value("coordinator_executions_total", {
        "status": "succeeded", "error_kind": "", "engine": "echo", "resource_type": "echo"}) == 3
    assert value("coordinator_executions_total", {
        "status": "failed", "error_kind": "engine_error", "engine": "echo",
        "resource_type": "echo"}) == 1
    assert value("coordinator_executions_total", {
        "status": "rejected", "error_kind": "not_found", "engine": "", "resource_type": ""}) == 1
    assert value("coordinator_fee_used_total", {"engine": "echo", "resource_type": "echo"}) == 9
    assert value("coordinator_execution_duration_seconds_count", {"resource_type": "echo"}) == 4
    assert value("coordinator_execution_duration_seconds_bucket",
                 {"resource_type": "echo", "le": "+Inf"}) == 4
    for stage in ("validation", "selection", "execution", "commit"):
        assert value("coordinator_stage_duration_seconds_count", {"stage": stage}) >= 4
    assert value("coordinator_engine_capacity", {"engine": "echo"}) == 1
    assert value("coordinator_engine_busy_seconds_total", {"engine": "echo"}) > 0
    assert value("coordinator_engine_healthy", {"engine": "echo"}) == 1
    assert value("coordinator_active_executions") == 0


def test_cpu_and_memory_histograms_count_executions_that_reached_an_engine(
        make_coordinator: Any) -> None:
    coord = make_coordinator(EchoPlugin(), prometheus_plugin)
    run_mix(coord)  # 4 reached the echo engine; the unknown resource reached none
    snapshot = coord.metrics()["resources"]["by_resource_type"]["echo"]
    value = sink_of(coord).registry.get_sample_value
    labels = {"resource_type": "echo"}
    assert value("coordinator_execution_cpu_seconds_count", labels) == 4
    assert value("coordinator_execution_cpu_seconds_sum", labels) == pytest.approx(
        snapshot["cpu_seconds"], abs=1e-5)
    assert value("coordinator_execution_cpu_seconds_sum", labels) > 0
    # The echo engine reports no memory: every sample is in the lowest bucket (1 KiB).
    assert value("coordinator_execution_memory_bytes_bucket", {**labels, "le": "1024.0"}) == 4
    assert value("coordinator_execution_memory_bytes_sum", labels) == 0
    assert value("coordinator_execution_cpu_seconds_count", {"resource_type": ""}) is None


def test_each_coordinator_has_its_own_registry(make_coordinator: Any) -> None:
    first = make_coordinator(EchoPlugin(), prometheus_plugin)
    second = make_coordinator(EchoPlugin(), prometheus_plugin)
    run_mix(first)
    labels = {"status": "succeeded", "error_kind": "", "engine": "echo", "resource_type": "echo"}
    assert sink_of(first).registry.get_sample_value("coordinator_executions_total", labels) == 3
    assert sink_of(second).registry.get_sample_value("coordinator_executions_total",
                                                     labels) is None


def test_endpoint_lives_while_the_coordinator_is_open(make_coordinator: Any) -> None:
    port = free_port()
    coord = make_coordinator(EchoPlugin(), prometheus_plugin,
                             overrides={"prometheus": {"port": port}})
    run_mix(coord)
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    assert "coordinator_executions_total{" in text
    coord.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


def test_bad_config_is_refused(make_coordinator: Any) -> None:
    with pytest.raises(InvalidRequest, match=r"port must be 0-65535"):
        make_coordinator(prometheus_plugin, overrides={"prometheus": {"port": 70000}})


def test_serve_metrics_once_reads_the_audit_log(make_coordinator: Any, tmp_path: Any,
                                                capsys: Any) -> None:
    data_dir = tmp_path / "shared"
    with Coordinator.open(data_dir=data_dir, plugins=[EchoPlugin()], entry_points=False) as c:
        run_mix(c)
    assert main(["--data-dir", str(data_dir), "serve-metrics", "--once"]) == 0
    text = capsys.readouterr().out
    assert ('coordinator_executions_total{engine="echo",error_kind="",resource_type="echo",'
            'status="succeeded"} 3.0') in text
    assert 'error_kind="not_found"' in text
    assert 'coordinator_fee_used_total{engine="echo",resource_type="echo"} 9.0' in text
    assert 'coordinator_execution_duration_seconds_bucket{le="+Inf",resource_type="echo"} 4.0' \
        in text


def test_reports_are_queued_and_counted_once_when_scraped_or_when_the_queue_fills(
        tmp_path: Any) -> None:
    from coordinator_metrics_prometheus.sink import FOLD_AT

    with Coordinator.open(data_dir=tmp_path, plugins=[EchoPlugin()]) as coord:
        sink = sink_of(coord)
        rid = coord.deploy(b"code", "echo")
        for _ in range(FOLD_AT + 3):
            assert coord.execute(ExecutionRequest(resource_id=rid, input=b"x")).ok
        assert len(sink._pending) == 3  # FOLD_AT were folded by the recording thread
        families = {f.name: f for f in sink.families()}  # a scrape folds the rest
        assert not sink._pending
        (count,) = [s.value for s in families["coordinator_executions"].samples
                    if s.labels["status"] == "succeeded"]
        assert count == FOLD_AT + 3
        stage_counts = {s.labels["stage"]: s.value
                        for s in families["coordinator_stage_duration_seconds"].samples
                        if s.name.endswith("_count")}
        assert stage_counts["execution"] == FOLD_AT + 3

"""`curl localhost:PORT/metrics` after a run (issue 7 acceptance): the Prometheus plugin is
installed in the workspace and found through its entry point, serves on the configured
loopback port while the coordinator is open, and shows execution counters and latency
histograms."""

from __future__ import annotations

import re
import socket
import urllib.request
from typing import Any

from coordinator_core import ExecutionRequest
from coordinator_core.testing import EchoPlugin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_endpoint_after_a_run(make_coordinator: Any) -> None:
    port = free_port()
    coord = make_coordinator(EchoPlugin(), entry_points=True,
                             overrides={"prometheus": {"port": port}})
    loaded = {p["name"]: p for p in coord.plugins()}
    assert loaded["prometheus"]["distribution"] == "coordinator-metrics-prometheus"
    assert loaded["prometheus"]["status"] == "loaded"
    rid = coord.deploy(b"hello", "echo")
    for _ in range(5):
        assert coord.execute(ExecutionRequest(resource_id=rid, input=b"abcd")).ok
    coord.execute(ExecutionRequest(resource_id=rid, entry="sleep", args=(1.0,), timeout=0.05))

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()

    def sample(pattern: str) -> float:
        match = re.search(r"^" + pattern + r" ([0-9.e+-]+)$", text, re.MULTILINE)
        assert match, f"no line matching {pattern!r}"
        return float(match.group(1))

    # prometheus_client writes label names in sorted order
    ok = 'engine="echo",error_kind="",resource_type="echo",status="succeeded"'
    assert sample(r"coordinator_executions_total\{" + ok + r"\}") == 5
    assert sample(r'coordinator_executions_total\{engine="echo",error_kind="timeout",'
                  r'resource_type="echo",status="timed_out"\}') == 1
    assert sample(r'coordinator_fee_used_total\{engine="echo",resource_type="echo"\}') > 25
    assert sample(r'coordinator_execution_duration_seconds_bucket\{le="\+Inf",'
                  r'resource_type="echo"\}') == 6
    assert sample(r'coordinator_execution_duration_seconds_count\{resource_type="echo"\}') == 6
    assert sample(r'coordinator_execution_duration_seconds_bucket\{le="0\.025",'
                  r'resource_type="echo"\}') >= 5
    assert sample(r'coordinator_stage_duration_seconds_count\{stage="execution"\}') == 6
    assert sample(r'coordinator_stage_duration_seconds_bucket\{le="\+Inf",stage="commit"\}') == 6
    assert "# TYPE coordinator_execution_duration_seconds histogram" in text
    assert sample(r'coordinator_engine_healthy\{engine="echo"\}') == 1

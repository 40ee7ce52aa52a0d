"""``prometheus_client`` is imported when the sink's registry is first read, not before.

A coordinator with the plugin opens, runs executions and records them without the client;
the first read of the registry (what a scrape does) imports it, and every execution recorded
before is counted, the coordinator's gauges included. Runs in a fresh interpreter, the only
place where ``prometheus_client`` is not imported yet.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.testing import EchoPlugin
from coordinator_metrics_prometheus import plugin

with Coordinator.open(data_dir=sys.argv[1], plugins=[EchoPlugin(), plugin],
                      entry_points=False) as coord:
    rid = coord.deploy(b"code", "echo")
    for _ in range(3):
        assert coord.execute(ExecutionRequest(resource_id=rid, input=b"ab")).ok
    print("before read:", "prometheus_client" in sys.modules)
    (sink,) = plugin.sinks_of(coord)
    value = sink.registry.get_sample_value
    print("after read:", "prometheus_client" in sys.modules)
    print(value("coordinator_executions_total", {"status": "succeeded", "error_kind": "",
                                                 "engine": "echo", "resource_type": "echo"}))
    print(value("coordinator_engine_capacity", {"engine": "echo"}))
    print(sink.registry is sink.registry)
"""


def test_the_client_is_imported_on_the_first_read_and_counts_everything(
        tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["before read: False", "after read: True", "3", "1",
                                        "True"]

"""The resource use of every execution: CPU time of its engine call and the memory its engine
reports, in the result, the sealed audit record (``detail["cpu_ns"]``,
``detail["memory_bytes"]``), ``metrics()``, Prometheus, ``coordinator exec`` and
``coordinator metrics``.

Real wasmtime and onnxruntime, the real SQLite store, the Prometheus plugin found through its
entry point and scraped over HTTP, the CLI in a subprocess, and real worker processes for
both ``[coordinator] processes`` and ``[dispatch] executor = "processes"``.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_hookspecs import EngineRecord, EngineResult, ErrorKind, Status, hookimpl
from tests.helpers import cli_json, run_cli
from tests.test_hybrid import BUILTINS, EXAMPLES, Bank
from tests.test_prometheus_metrics import free_port

PAGE = 65536

#: ``grow(n)`` grows the memory (1 page at the start) by ``n`` pages; ``burn(n)`` loops ``n``
#: times and returns ``n``: CPU work proportional to its argument.
CONTRACT = """
(module
  (memory (export "memory") 1 100)
  (func (export "grow") (param i32) (result i32)
    (drop (memory.grow (local.get 0)))
    (memory.size))
  (func (export "burn") (param i64) (result i64)
    (local $i i64)
    (loop $l
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $l (i64.lt_u (local.get $i) (local.get 0))))
    (local.get $i)))
"""
BURN = 2_000_000  # iterations of the smaller burn: some milliseconds of CPU
FEE = 1_000_000_000


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory, port: int) -> Iterator[Coordinator]:
    with Coordinator.open(data_dir=tmp_path_factory.mktemp("use"), builtins=BUILTINS,
                          overrides={"prometheus": {"port": port}}) as opened:
        yield opened


@pytest.fixture(scope="module")
def rid(coord: Coordinator) -> str:
    return coord.deploy(CONTRACT, "wasm", source_format="wat")


def call(coord: Coordinator, rid: str, entry: str, *args: int, **kw: Any) -> Any:
    return coord.execute(ExecutionRequest(resource_id=rid, entry=entry, args=args, **kw))


def test_grown_memory_is_reported_in_the_result_and_the_sealed_record(
        coord: Coordinator, rid: str) -> None:
    result = call(coord, rid, "grow", 3)
    assert result.ok and result.output == [4]
    assert result.memory_bytes == 4 * PAGE
    assert result.usage == {"memory_pages": 4, "memory_peak_pages": 4}
    record = coord.store.execution(result.execution_id)
    assert record is not None
    assert record.detail["memory_bytes"] == 4 * PAGE
    assert record.detail["cpu_ns"] > 0
    assert record.detail["cpu_ns"] * 1e-9 == pytest.approx(result.cpu_seconds, abs=1e-12)
    assert coord.store.verify().ok  # the detail is part of the hashed leaf


def test_cpu_time_follows_the_work_and_stays_within_wall_time(
        coord: Coordinator, rid: str) -> None:
    small = call(coord, rid, "burn", BURN, fee_limit=FEE)
    large = call(coord, rid, "burn", 4 * BURN, fee_limit=FEE)
    assert small.ok and large.ok, (small.error, large.error)
    for result in (small, large):
        # A thread's CPU time cannot exceed the wall time it ran for.
        assert 0 < result.cpu_seconds <= result.duration
    # CPU time counts work, not waiting: four times the loop is clearly more (the machine's
    # load changes wall time, hardly CPU time).
    assert large.cpu_seconds > 2 * small.cpu_seconds


def test_a_failed_execution_keeps_its_cpu_time(coord: Coordinator, rid: str) -> None:
    result = call(coord, rid, "burn", 100 * BURN, fee_limit=1_000_000)
    assert result.status is Status.FAILED and result.error.kind is ErrorKind.FEE_EXHAUSTED
    assert result.cpu_seconds > 0 and result.memory_bytes == 0
    record = coord.store.execution(result.execution_id)
    assert record is not None
    assert record.detail["cpu_ns"] * 1e-9 == pytest.approx(result.cpu_seconds, abs=1e-12)


def test_onnx_reports_its_tensor_bytes(coord: Coordinator) -> None:
    model = coord.deploy((EXAMPLES / "risk_model.onnx").read_bytes(), "onnx")
    x = np.zeros((5, 3), np.float32)
    result = coord.execute(ExecutionRequest(resource_id=model, input={"x": x}))
    assert result.ok, result.error
    made = sum(v.nbytes for v in result.output.values())
    assert result.usage == {"input_bytes": x.nbytes, "output_bytes": made}
    assert result.memory_bytes == x.nbytes + made
    assert result.cpu_seconds > 0
    record = coord.store.execution(result.execution_id)
    assert record is not None and record.detail["memory_bytes"] == result.memory_bytes


def test_a_hybrid_parent_counts_its_nested_model_call(coord: Coordinator) -> None:
    bank = Bank(coord)
    parent = bank.transfer("alice", 30, "bob")
    assert parent.ok, parent.error
    (child,) = [r for r in coord.store.audit_records()
                if r.record_kind == "execution" and r.parent_id == parent.execution_id]
    # The model ran on the contract's thread, inside its engine call.
    assert 0 < child.detail["cpu_ns"] * 1e-9 <= parent.cpu_seconds
    assert child.detail["memory_bytes"] > 0  # the model's tensors


def test_metrics_and_prometheus_show_the_resource_use(coord: Coordinator, rid: str,
                                                      port: int) -> None:
    before = coord.metrics()["resources"]["by_resource_type"].get("wasm", {})
    results = [call(coord, rid, "grow", n) for n in (1, 2, 9)]
    assert all(r.ok for r in results)
    wasm = coord.metrics()["resources"]["by_resource_type"]["wasm"]
    assert wasm["executions"] == before.get("executions", 0) + 3
    added = wasm["cpu_seconds"] - before.get("cpu_seconds", 0.0)
    assert added == pytest.approx(sum(r.cpu_seconds for r in results), abs=2e-6)
    assert wasm["memory"]["max_bytes"] >= 10 * PAGE

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()

    def sample(pattern: str) -> float:
        match = re.search(r"^" + pattern + r" ([0-9.e+-]+)$", text, re.MULTILINE)
        assert match, f"no line matching {pattern!r}"
        return float(match.group(1))

    assert "# TYPE coordinator_execution_cpu_seconds histogram" in text
    assert "# TYPE coordinator_execution_memory_bytes histogram" in text
    count = sample(r'coordinator_execution_cpu_seconds_count\{resource_type="wasm"\}')
    assert count == wasm["executions"]
    assert sample(r'coordinator_execution_cpu_seconds_sum\{resource_type="wasm"\}') == \
        pytest.approx(wasm["cpu_seconds"], abs=1e-5)
    assert sample(r'coordinator_execution_memory_bytes_count\{resource_type="wasm"\}') == count
    # 10 pages (640 KiB) fit the 1 MiB bucket, not the 256 KiB one.
    below = sample(r'coordinator_execution_memory_bytes_bucket\{le="262144\.0",'
                   r'resource_type="wasm"\}')
    assert sample(r'coordinator_execution_memory_bytes_bucket\{le="1\.048576e\+06",'
                  r'resource_type="wasm"\}') > below


def test_the_cli_shows_resource_use_from_the_audit_log(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path) as coord:
        rid = coord.deploy(CONTRACT, "wasm", source_format="wat")
        results = [call(coord, rid, "grow", n) for n in (2, 5)]
    assert all(r.ok for r in results)
    code, snapshot = cli_json("metrics", data_dir=tmp_path)
    assert code == 0
    use = snapshot["resources"]
    assert use["executions"] == 2
    assert use["cpu_seconds"] == pytest.approx(sum(r.cpu_seconds for r in results), abs=2e-6)
    assert use["by_resource_type"]["wasm"]["memory"]["max_bytes"] == pytest.approx(
        6 * PAGE, rel=0.13)  # the histogram's bucket resolution
    text = run_cli("metrics", data_dir=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "resource use" in text.stdout and "cpu time" in text.stdout
    assert re.search(r"^wasm +2 ", text.stdout, re.MULTILINE), text.stdout


def test_serve_metrics_folds_the_resource_use_from_the_audit_log(tmp_path: Path) -> None:
    """``coordinator serve-metrics`` (a separate process reading the audit log) exports the
    CPU and memory histograms with the counts and sums of the sealed records; an execution
    refused before any engine ran is not in them."""
    from prometheus_client.parser import text_string_to_metric_families

    with Coordinator.open(data_dir=tmp_path) as coord:
        rid = coord.deploy(CONTRACT, "wasm", source_format="wat")
        results = [call(coord, rid, "grow", n) for n in (1, 4, 9)]
        refused = coord.execute(ExecutionRequest(resource_id="0" * 64))
        records = [coord.store.execution(r.execution_id) for r in results]
    assert all(r.ok for r in results) and refused.error is not None
    done = run_cli("serve-metrics", "--once", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    samples = {(s.name, s.labels.get("le")): s.value
               for family in text_string_to_metric_families(done.stdout)
               for s in family.samples if s.labels.get("resource_type") == "wasm"}
    cpu = sum(r.detail["cpu_ns"] for r in records if r is not None) * 1e-9
    memory = sum(r.detail["memory_bytes"] for r in records if r is not None)
    assert memory == (2 + 5 + 10) * PAGE
    assert samples[("coordinator_execution_cpu_seconds_count", None)] == 3
    assert samples[("coordinator_execution_cpu_seconds_sum", None)] == pytest.approx(cpu)
    assert samples[("coordinator_execution_memory_bytes_count", None)] == 3
    assert samples[("coordinator_execution_memory_bytes_sum", None)] == memory
    # buckets of 1024 * 4**i bytes: 2 pages fit under 256 KiB, 5 and 10 pages under 1 MiB
    assert samples[("coordinator_execution_memory_bytes_bucket", "262144.0")] == 1
    assert samples[("coordinator_execution_memory_bytes_bucket", "1048576.0")] == 3
    assert samples[("coordinator_execution_memory_bytes_bucket", "+Inf")] == 3


def test_cli_exec_prints_the_resource_use(tmp_path: Path, echo_wat: Path) -> None:
    code, deployed = cli_json("deploy", str(echo_wat), "--type", "wasm", data_dir=tmp_path)
    assert code == 0, deployed
    code, data = cli_json("exec", deployed["resource_id"], "--input", "hello",
                          data_dir=tmp_path)
    assert code == 0 and data["status"] == "succeeded", data
    assert data["memory_bytes"] == PAGE  # the echo contract's one page
    assert data["usage"] == {"memory_pages": 1, "memory_peak_pages": 1}
    assert data["cpu_ms"] > 0


def test_measuring_can_be_turned_off(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path,
                          overrides={"coordinator": {"measure_resources": False}}) as coord:
        rid = coord.deploy(CONTRACT, "wasm", source_format="wat")
        result = call(coord, rid, "grow", 1)
        assert result.ok and result.cpu_seconds == 0.0
        record = coord.store.execution(result.execution_id)
        assert record is not None and "cpu_ns" not in record.detail


class _Misreporting:
    """An engine whose result carries a malformed resource figure (``ctx.request.entry``)."""

    def execute(self, ctx: Any) -> EngineResult:
        bad = {"memory": {"memory_bytes": -1}, "usage": {"usage": {"pages": "many"}},
               "cpu": {"cpu_seconds": float("nan")}}[ctx.request.entry]
        return EngineResult(output=b"", fee_used=1, **bad)


class _MisreportingPlugin:
    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        return [EngineRecord(name="misreporting", engine=_Misreporting(),
                             resource_types={"odd"})]


@pytest.mark.parametrize(("entry", "named"), [("memory", "memory_bytes -1"),
                                              ("usage", "usage {'pages': 'many'}"),
                                              ("cpu", "cpu_seconds nan")])
def test_a_malformed_report_is_an_engine_error(make_coordinator: Any, entry: str,
                                               named: str) -> None:
    coord = make_coordinator(_MisreportingPlugin())
    rid = coord.deploy(b"x", "odd")
    result = coord.execute(ExecutionRequest(resource_id=rid, entry=entry))
    assert result.status is Status.FAILED and result.error.kind is ErrorKind.ENGINE_ERROR
    assert named in result.error.message and "misreporting" in result.error.message
    record = coord.store.execution(result.execution_id)
    assert record is not None and record.status == "failed"


@pytest.mark.parametrize("overrides", [
    {"coordinator": {"processes": 1, "workers": 2}},
    {"dispatch": {"executor": "processes", "processes": 1}},
], ids=["coordinator-processes", "engine-processes"])
def test_values_travel_back_from_worker_processes(tmp_path: Path,
                                                  overrides: dict[str, Any]) -> None:
    with Coordinator.open(data_dir=tmp_path, overrides=overrides) as coord:
        rid = coord.deploy(CONTRACT, "wasm", source_format="wat")
        grown = call(coord, rid, "grow", 2)
        burnt = call(coord, rid, "burn", BURN, fee_limit=FEE)
        assert grown.ok and burnt.ok, (grown.error, burnt.error)
        assert grown.memory_bytes == 3 * PAGE
        assert grown.usage == {"memory_pages": 3, "memory_peak_pages": 3}
        # The loop's CPU was spent in a worker process, and it is counted.
        assert 0.0005 < burnt.cpu_seconds <= burnt.duration
        record = coord.store.execution(burnt.execution_id)
        assert record is not None
        assert record.detail["cpu_ns"] * 1e-9 == pytest.approx(burnt.cpu_seconds, abs=1e-12)
        wasm = coord.metrics()["resources"]["by_resource_type"]["wasm"]
        assert wasm["executions"] == 2 and wasm["memory"]["max_bytes"] > 0

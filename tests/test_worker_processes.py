"""``[coordinator] processes``: the whole pipeline in worker processes, one writer.

One coordinator with four worker processes serves the module (real wasmtime and onnxruntime
in each worker, the real SQLite store, spawned processes); routing is ``load`` so that a
stateful contract's executions really run in several processes at once and only the
cross-process state lock keeps their updates. Each guarantee of docs/scaling.md has a test
that fails if it breaks: exact quota across workers, no lost update, one chain, a killed
worker's executions recorded as ``engine_error`` with nothing applied, nested calls inside a
worker, cancel and status reaching any worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_hookspecs import InvalidRequest, Status
from tests.helpers import COUNTER_WAT, ECHO_WAT, run_cli
from tests.test_hybrid import BUILTINS, Bank

SPIN = '(module (func (export "main") (loop $l (br $l))))'
RATE_BURST = 40
FEE_BUDGET = 2_000
QUOTA = {
    "quota-rate": {"callers": {"metered": {"rate": 0.001, "burst": RATE_BURST,
                                           "mode": "reject"}}},
    "quota-fee": {"callers": {"budgeted": {"budget": FEE_BUDGET, "window": 3600.0}}},
}


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    overrides = {"coordinator": {"processes": 4, "workers": 4, "process_routing": "load"},
                 **QUOTA}
    with Coordinator.open(data_dir=tmp_path_factory.mktemp("workers"), builtins=BUILTINS,
                          overrides=overrides) as opened:
        yield opened


def pids(coord: Coordinator) -> list[int]:
    return [p["pid"] for p in coord.metrics()["workers"]["processes"]]


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


def test_execute_submit_and_async_behave_as_in_process(coord: Coordinator) -> None:
    rid = coord.deploy(ECHO_WAT, "wasm", source_format="wat")
    result = coord.execute(ExecutionRequest(resource_id=rid, input=b"hello"))
    assert result.ok and result.output == b"hello" and result.engine == "wasmtime"
    handles = [coord.submit(ExecutionRequest(resource_id=rid, input=str(i).encode()))
               for i in range(200)]
    outputs = [h.result(timeout=60).output for h in handles]
    assert outputs == [str(i).encode() for i in range(200)]
    done = asyncio.run(coord.execute_async(ExecutionRequest(resource_id=rid, input=b"a")))
    assert done.output == b"a"
    assert coord.status(done.execution_id).status is Status.SUCCEEDED
    record = coord.store.execution(result.execution_id)
    assert record is not None and record.status == "succeeded"
    metrics = coord.metrics()  # the worker's reports reach this process's collector
    assert metrics["executions"] >= 202 and metrics["by_engine"]["wasmtime"] >= 202
    assert "execution" in metrics["stages"]
    # Every worker took part (least loaded routing), and there are four of them.
    assert len(set(pids(coord))) == 4


def test_refusals_are_recorded_by_the_coordinator(coord: Coordinator) -> None:
    missing = coord.execute(ExecutionRequest(resource_id="0" * 64))
    assert missing.status is Status.REJECTED and missing.error is not None
    assert missing.error.kind.value == "not_found"
    malformed = coord.execute(ExecutionRequest(resource_id="x", caller=""))
    assert malformed.error is not None and malformed.error.kind.value == "invalid_request"
    for bad in (missing, malformed):
        assert coord.store.execution(bad.execution_id) is not None


def test_no_lost_update_from_four_worker_processes(coord: Coordinator) -> None:
    counter = coord.deploy(COUNTER_WAT, "wasm", source_format="wat", capabilities=["storage"])
    increments = 2_000
    handles = [coord.submit(ExecutionRequest(resource_id=counter, caller=f"c{i % 8}"))
               for i in range(increments)]
    results = [h.result(timeout=120) for h in handles]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    value = coord.state(counter, b"count")
    assert value is not None and int.from_bytes(value, "little") == increments
    # The counter returns the value it wrote: every one of them exactly once.
    seen = sorted(int.from_bytes(r.output, "little") for r in results)
    assert seen == list(range(1, increments + 1))
    assert coord.store.verify().ok


def _producers(coord: Coordinator, rid: str, caller: str, **kw: Any) -> list[Any]:
    """16 threads submitting 20 requests each at once; all results."""
    results: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def produce() -> None:
        start.wait()
        handles = [coord.submit(ExecutionRequest(resource_id=rid, caller=caller, **kw))
                   for _ in range(20)]
        done = [h.result(timeout=60) for h in handles]
        with lock:
            results.extend(done)

    threads = [threading.Thread(target=produce) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_rate_limit_is_exact_across_workers(coord: Coordinator) -> None:
    rid = coord.deploy(ECHO_WAT, "wasm", source_format="wat")
    results = _producers(coord, rid, "metered")
    admitted = [r for r in results if r.ok]
    refused = [r for r in results if not r.ok]
    assert len(admitted) == RATE_BURST, len(admitted)
    assert {r.error.kind.value for r in refused} == {"quota_exceeded"}


def test_fee_budget_is_exact_across_workers(coord: Coordinator) -> None:
    rid = coord.deploy(ECHO_WAT, "wasm", source_format="wat")
    results = _producers(coord, rid, "budgeted", fee_limit=1_000)
    admitted = [r for r in results if r.ok]
    assert admitted and len(admitted) < len(results)
    assert sum(r.fee_used for r in admitted) <= FEE_BUDGET


def test_nested_hybrid_calls_run_inside_a_worker(coord: Coordinator) -> None:
    bank = Bank(coord)
    approved = bank.transfer("alice", 30, "bob")
    assert approved.ok and approved.output == b"approved", approved.error
    assert (bank.balance("alice"), bank.balance("bob")) == (9_970, 10_030)
    nested = [r for r in coord.store.audit_records()
              if r.record_kind == "execution" and r.parent_id == approved.execution_id]
    assert [(r.resource_id, r.status) for r in nested] == [(bank.model, "succeeded")]


def test_cancel_and_status_reach_an_execution_in_a_worker(coord: Coordinator) -> None:
    spin = coord.deploy(SPIN, "wasm", source_format="wat")
    handle = coord.submit(ExecutionRequest(resource_id=spin, fee_limit=10**12, timeout=30))
    wait_for(lambda: coord.status(handle.execution_id).status is Status.RUNNING)
    asked = time.monotonic()
    assert coord.cancel(handle.execution_id) is True
    result = handle.result(timeout=10)
    assert time.monotonic() - asked < 0.5  # typically about a millisecond
    assert result.status is Status.CANCELLED
    assert coord.status(handle.execution_id).status is Status.CANCELLED
    assert coord.cancel(handle.execution_id) is False
    timed = coord.execute(ExecutionRequest(resource_id=spin, fee_limit=10**12, timeout=0.2))
    assert timed.status is Status.TIMED_OUT and timed.duration < 2.0


def test_a_killed_worker_fails_its_executions_and_is_replaced(coord: Coordinator) -> None:
    spin = coord.deploy(SPIN, "wasm", source_format="wat")
    counter = coord.deploy(COUNTER_WAT, "wasm", source_format="wat", capabilities=["storage"])
    before = coord.state(counter, b"count")
    restarts = coord.metrics()["workers"]["restarts"]
    handles = [coord.submit(ExecutionRequest(resource_id=spin, fee_limit=10**12, timeout=30))
               for _ in range(4)]
    wait_for(lambda: all(coord.status(h.execution_id).status is Status.RUNNING
                         for h in handles))
    victim = pids(coord)[0]
    os.kill(victim, signal.SIGKILL)
    # The execution(s) of the killed worker end with engine_error; cancel the others.
    wait_for(lambda: any(h.future.done() for h in handles))
    # While it is being replaced, new work goes to the live workers, never to the dead one.
    echo = coord.deploy(ECHO_WAT, "wasm", source_format="wat")
    meanwhile = [coord.execute(ExecutionRequest(resource_id=echo, input=b"x"))
                 for _ in range(20)]
    assert all(r.ok for r in meanwhile), [r.error for r in meanwhile if not r.ok][:2]
    for h in handles:
        coord.cancel(h.execution_id)
    results = [h.result(timeout=30) for h in handles]
    lost = [r for r in results if r.status is not Status.CANCELLED]
    assert lost and all(r.error is not None and r.error.kind.value == "engine_error"
                        and "exited" in r.error.message for r in lost)
    for r in lost:
        record = coord.store.execution(r.execution_id)
        assert record is not None and record.error_kind == "engine_error"
    wait_for(lambda: coord.metrics()["workers"]["restarts"] == restarts + 1)
    assert victim not in pids(coord)
    assert coord.execute(ExecutionRequest(resource_id=counter)).ok
    assert coord.state(counter, b"count") != before
    assert coord.store.verify().ok


def test_processes_need_a_data_directory_and_exclude_the_engine_pool(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="on-disk data directory"):
        Coordinator.open(data_dir=":memory:", overrides={"coordinator": {"processes": 1}})
    with pytest.raises(InvalidRequest, match="exclude each other"):
        Coordinator.open(data_dir=tmp_path, overrides={
            "coordinator": {"processes": 1}, "dispatch": {"executor": "processes"}})
    with pytest.raises(InvalidRequest, match="processes must be"):
        Coordinator.open(data_dir=tmp_path, overrides={"coordinator": {"processes": "many"}})


def test_other_processes_commit_through_the_writer_socket(tmp_path: Path) -> None:
    """``writer = "serve"`` / ``"connect"``: a CLI beside a running coordinator executes and
    deploys through its writer; one chain holds both processes' records, no update lost."""
    connect = {"COORDINATOR_WRITER": "connect"}
    echo = tmp_path.parent / f"{tmp_path.name}-echo.wat"
    echo.write_text(ECHO_WAT)
    done = run_cli("deploy", str(echo), "--type", "wasm", data_dir=tmp_path, env=connect)
    assert done.returncode != 0 and "no coordinator serves the writer" in done.stderr
    overrides = {"coordinator": {"writer": "serve", "processes": 1}}
    with Coordinator.open(data_dir=tmp_path, overrides=overrides) as served:
        assert (tmp_path / "writer.sock").stat().st_mode & 0o077 == 0
        assert (tmp_path / "writer.key").stat().st_mode & 0o077 == 0
        with pytest.raises(InvalidRequest, match="own the writer"):
            Coordinator.open(data_dir=tmp_path, overrides={
                "coordinator": {"writer": "connect", "processes": 1}})
        counter = served.deploy(COUNTER_WAT, "wasm", source_format="wat",
                                capabilities=["storage"])
        handles = [served.submit(ExecutionRequest(resource_id=counter)) for _ in range(200)]
        clis = [run_cli("exec", counter, "--json", data_dir=tmp_path, env=connect)
                for _ in range(3)]
        assert all(h.result(timeout=60).ok for h in handles)
        for cli in clis:
            assert cli.returncode == 0, cli.stderr
        deployed = run_cli("deploy", str(echo), "--type", "wasm", "--json",
                           data_dir=tmp_path, env=connect)
        assert deployed.returncode == 0, deployed.stderr
        assert len(served.resources()) == 2
        value = served.state(counter, b"count")
        assert value is not None and int.from_bytes(value, "little") == 203
        report = served.store.verify()
        assert report.ok and report.count == 2 + 203
    assert not (tmp_path / "writer.sock").exists()


def test_a_script_without_a_main_guard_gets_told_why_its_workers_died(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from coordinator_core import Coordinator\n"
        f"Coordinator.open(data_dir={str(tmp_path / 'data')!r}, "
        "overrides={'coordinator': {'processes': 1}}).close()\n")
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "if __name__" in done.stderr and "before loading its plugins" in done.stderr


def test_processes_racing_to_make_the_writer_key_agree_on_one(tmp_path: Path) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from coordinator_core.workers.writer import writer_key

    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        keys = list(pool.map(writer_key, [tmp_path] * 8))
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert [p.name for p in tmp_path.iterdir()] == ["writer.key"]
    assert (tmp_path / "writer.key").stat().st_mode & 0o077 == 0


def test_a_batching_model_under_worker_processes(coord: Coordinator) -> None:
    """Each worker process batches its own share of the executions; the results are the
    unbatched ones all the same."""
    from tests.test_onnx_batching import classifier

    batched = coord.deploy(classifier("in workers"), "onnx", options={
        "max_batch_size": 8, "max_queue_delay_us": 2000, "instances": 1})
    alone = coord.deploy(classifier("in workers, unbatched"), "onnx")
    rng = np.random.default_rng(5)
    inputs = [{"x": rng.standard_normal((1 + n % 2, 4)).astype(np.float32)} for n in range(64)]
    handles = [coord.submit(ExecutionRequest(resource_id=batched, input=x, timeout=20.0))
               for x in inputs]
    results = [h.result(timeout=60) for h in handles]
    for result, given in zip(results, inputs, strict=True):
        reference = coord.execute(ExecutionRequest(resource_id=alone, input=given))
        assert result.status is Status.SUCCEEDED, result.error
        assert np.array_equal(result.output["y"], reference.output["y"])
        assert result.fee_used <= reference.fee_used
    # A share of a batch is below the fee alone (1021 for this model at 1-2 rows): the
    # options reached the workers and their batchers merged requests.
    assert min(r.fee_used for r in results) < 1021

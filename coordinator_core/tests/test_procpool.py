"""The process-pool executor: same results as threads, cancel and timeout forwarded to the
worker, a dead or stuck worker replaced, nested executions refused with a clear error.

Worker processes are real (``spawn``), so one pooled coordinator is shared by the module's
tests (starting workers costs about a second); each test measures deltas of its counters.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from coordinator_core import Coordinator, ExecutionRequest, Status
from coordinator_core.engines.processes.engine import install_process_pool
from coordinator_core.engines.processes.spec import spec_from
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import EngineError, ErrorKind, InvalidRequest

HERE = str(Path(__file__).parent)


@pytest.fixture(scope="module")
def tools() -> Iterator[Any]:
    """The ``procpool_plugins`` module, importable by name here and in the workers."""
    sys.path.insert(0, HERE)
    try:
        yield importlib.import_module("procpool_plugins")
    finally:
        sys.path.remove(HERE)


@pytest.fixture(scope="module")
def pooled(tools: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    coord = Coordinator.open(
        data_dir=tmp_path_factory.mktemp("pooled"),
        plugins=[EchoPlugin(), tools.ToolPlugin()],
        entry_points=False,
        overrides={
            "coordinator": {"workers": 2},
            "dispatch": {"executor": "processes", "processes": 2, "process_kill_grace": 0.3},
        },
    )
    with coord:
        yield coord


@pytest.fixture(scope="module")
def threaded(tools: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    coord = Coordinator.open(
        data_dir=tmp_path_factory.mktemp("threaded"),
        plugins=[EchoPlugin(), tools.ToolPlugin()],
        entry_points=False,
    )
    with coord:
        yield coord


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def stats(coord: Coordinator, engine: str = "echo") -> dict[str, Any]:
    workers: dict[str, Any] = coord.metrics()["engines"][engine]["workers"]
    return workers


def outcome(coord: Coordinator, rid: str, **fields: Any) -> tuple[Any, ...]:
    r = coord.execute(ExecutionRequest(resource_id=rid, caller="alice", **fields))
    error = (r.error.kind, r.error.message, r.error.source) if r.error else None
    return (r.status, r.output, r.fee_used, r.effects, error, r.engine)


def test_engines_are_swapped_into_the_pool(pooled: Coordinator) -> None:
    engines = pooled.metrics()["engines"]
    assert {e["executor"] for e in engines.values()} == {"processes"}
    assert engines["echo"]["capacity"] == 2
    assert len(set(stats(pooled)["pids"])) == 2 and os.getpid() not in stats(pooled)["pids"]


def test_results_equal_the_thread_path(pooled: Coordinator, threaded: Coordinator) -> None:
    cases: list[dict[str, Any]] = [
        {"input": b"hello"},
        {"entry": "write", "input": b"v1"},
        {"entry": "write", "input": b"v2"},  # reads v1: committed state through the parent
        {"entry": "fail"},
        {"entry": "nope"},
        {"input": b"too long for the fee", "fee_limit": 3},
        {"entry": "sleep", "args": (0.01,)},
    ]
    rid_p = pooled.deploy(b"same bytes", "echo")
    rid_t = threaded.deploy(b"same bytes", "echo")
    assert rid_p == rid_t
    restarts = stats(pooled)["restarts"]
    for fields in cases:
        assert outcome(pooled, rid_p, **fields) == outcome(threaded, rid_t, **fields), fields
    assert pooled.state(rid_p, b"last") == threaded.state(rid_t, b"last") == b"v2"
    assert stats(pooled)["restarts"] == restarts  # typed failures never cost a worker


def test_affinity_keeps_a_resource_on_one_worker(pooled: Coordinator) -> None:
    rid = pooled.deploy(b"affine", "tool")
    pids = {outcome(pooled, rid, entry="pid")[1] for _ in range(8)}
    assert len(pids) == 1
    assert pooled.dispatcher.engine("tool").engine.holds(rid)


def test_cancel_reaches_the_worker(pooled: Coordinator) -> None:
    rid = pooled.deploy(b"cancel me", "echo")
    restarts = stats(pooled)["restarts"]
    handle = pooled.submit(ExecutionRequest(resource_id=rid, entry="sleep", args=(5.0,)))
    wait_until(lambda: any(stats(pooled)["busy"]))
    time.sleep(0.05)
    assert pooled.cancel(handle.execution_id)
    result = handle.result(timeout=5)
    assert result.status is Status.CANCELLED and result.error is not None
    assert result.error.kind is ErrorKind.CANCELLED
    assert result.duration < 2.0 and result.fee_used >= 40  # the echo engine charges per ms
    assert stats(pooled)["restarts"] == restarts  # the worker stopped by itself


def test_timeout_reaches_the_worker(pooled: Coordinator) -> None:
    rid = pooled.deploy(b"time me out", "echo")
    result = pooled.execute(
        ExecutionRequest(resource_id=rid, entry="sleep", args=(5.0,), timeout=0.2))
    assert result.status is Status.TIMED_OUT and result.duration < 2.0
    assert result.error is not None and result.error.kind is ErrorKind.TIMEOUT


def test_stuck_worker_is_killed_after_the_grace(pooled: Coordinator) -> None:
    rid = pooled.deploy(b"stuck", "tool")
    restarts = stats(pooled, "tool")["restarts"]
    result = pooled.execute(
        ExecutionRequest(resource_id=rid, entry="block", args=(30.0,), timeout=0.2))
    assert result.status is Status.TIMED_OUT and result.duration < 5.0
    assert result.error is not None and "killed and replaced" in result.error.message
    assert stats(pooled, "tool")["restarts"] == restarts + 1
    assert outcome(pooled, rid, entry="pid")[0] is Status.SUCCEEDED


def test_worker_dying_mid_execution_is_engine_error(pooled: Coordinator) -> None:
    rid = pooled.deploy(b"crash", "tool")
    restarts = stats(pooled, "tool")["restarts"]
    status, _, _, _, error, _ = outcome(pooled, rid, entry="crash")
    assert status is Status.FAILED and error is not None
    assert error[0] is ErrorKind.ENGINE_ERROR and "died (exit code 3)" in error[1]
    assert stats(pooled, "tool")["restarts"] == restarts + 1
    for _ in range(3):  # the replacement serves the next executions
        assert outcome(pooled, rid, entry="pid")[0] is Status.SUCCEEDED


def test_worker_killed_from_outside_mid_execution(pooled: Coordinator) -> None:
    rid = pooled.deploy(b"killed", "echo")
    handle = pooled.submit(ExecutionRequest(resource_id=rid, entry="sleep", args=(5.0,)))
    wait_until(lambda: any(stats(pooled)["busy"]))
    snap = stats(pooled)
    victim = snap["pids"][snap["busy"].index(True)]
    os.kill(victim, signal.SIGKILL)
    result = handle.result(timeout=5)
    assert result.status is Status.FAILED and result.error is not None
    assert result.error.kind is ErrorKind.ENGINE_ERROR and str(victim) in result.error.message
    assert victim not in stats(pooled)["pids"]
    assert outcome(pooled, rid, input=b"again")[:2] == (Status.SUCCEEDED, b"again")


def test_nested_execution_is_a_clear_engine_error(
    pooled: Coordinator, threaded: Coordinator
) -> None:
    child_t = threaded.deploy(b"child", "echo")
    parent_t = threaded.deploy(b"parent", "tool")
    assert outcome(threaded, parent_t, entry="nested", input=child_t.encode())[0] is (
        Status.SUCCEEDED)
    child_p = pooled.deploy(b"child", "echo")
    parent_p = pooled.deploy(b"parent", "tool")
    status, _, _, _, error, _ = outcome(pooled, parent_p, entry="nested", input=child_p.encode())
    assert status is Status.FAILED and error is not None and error[0] is ErrorKind.ENGINE_ERROR
    assert "not available" in error[1] and "executor = \"threads\"" in error[1]


def test_unpicklable_inline_plugin_is_refused_at_open(make_coordinator: Any) -> None:
    class Local(EchoPlugin):  # a class local to a test cannot be rebuilt in a worker
        pass

    with pytest.raises(InvalidRequest, match="cannot be sent to a worker process"):
        make_coordinator(Local(), overrides={"dispatch": {"executor": "processes"}})


def test_unknown_process_engine_is_refused(make_coordinator: Any) -> None:
    coord = make_coordinator(EchoPlugin())
    settings = coord.config.section("dispatch")
    with pytest.raises(Exception, match="process_engines names nope, not installed"):
        install_process_pool(coord, attrs.evolve(settings, process_engines=["nope"]))


def test_memory_store_state_reads_go_through_the_parent(tools: Any) -> None:
    """A worker cannot open the parent's in-memory store: reads take the round trip."""
    overrides = {"dispatch": {"executor": "processes", "processes": 1}}
    with Coordinator.open(data_dir=":memory:", plugins=[EchoPlugin()], entry_points=False,
                          overrides=overrides) as coord:
        assert spec_from(coord, ("echo",)).state == ("parent",)
        rid = coord.deploy(b"memory", "echo")
        assert outcome(coord, rid, entry="write", input=b"one")[0] is Status.SUCCEEDED
        assert outcome(coord, rid, entry="write", input=b"two")[1] == b"one"
        assert coord.state(rid, b"last") == b"two"


def test_sqlite_store_state_reads_stay_in_the_worker(pooled: Coordinator) -> None:
    source = spec_from(pooled, ("echo",)).state
    assert source[0] == "sqlite" and source[1].endswith("coordinator.db")


def test_workers_that_cannot_start_fail_open_with_the_reason(
    tools: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROCPOOL_TOOL_BROKEN", "1")
    overrides = {"dispatch": {"executor": "processes", "processes": 1}}
    with pytest.raises(EngineError, match="could not load its engines"):
        Coordinator.open(data_dir=tmp_path, plugins=[tools.ToolPlugin()], entry_points=False,
                         overrides=overrides)
    # nothing was left behind: the same data directory opens on threads
    with Coordinator.open(data_dir=tmp_path, plugins=[tools.ToolPlugin()],
                          entry_points=False) as coord:
        assert coord.metrics()["engines"]["tool"]["executor"] == "threads"


def test_failed_worker_start_takes_the_engine_out_once(pooled: Coordinator) -> None:
    engine = pooled.dispatcher.engine("tool").engine
    engine.pool.start_error = "worker process 1 could not load its engines"
    assert engine.health() is False
    assert engine.health() is True  # the next check (after health_interval) retries

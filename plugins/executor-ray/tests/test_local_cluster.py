"""The Ray executor on one local cluster, started by the module's coordinator (``[ray]``
without an address) and shut down when it closes: real wasmtime and onnxruntime engines in
Ray actors, the real SQLite store and audit chain."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from coordinator_core import Coordinator, ExecutionRequest, Status
from coordinator_hookspecs import InvalidRequest
from tests.test_hybrid import Bank

from .conftest import (
    BUSY,
    COUNTER,
    EXAMPLES,
    LONG,
    actors,
    assert_no_ray_processes_left,
    busy,
    descendants,
    on_ray,
    wait_busy_actor,
)


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    assert not ray.is_initialized()
    before = set(descendants(os.getpid()))
    opened = on_ray(tmp_path_factory.mktemp("ray-local"), num_cpus=4, actors_per_node=2)
    try:
        assert ray.is_initialized()
        yield opened
    finally:
        opened.close()
    assert not ray.is_initialized()  # the cluster it started is gone with it
    assert_no_ray_processes_left(before)


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    with Coordinator.open(data_dir=tmp_path_factory.mktemp("threads")) as opened:
        yield opened


def test_wasm_runs_in_actors_and_effects_are_committed_once(coord: Coordinator) -> None:
    rid = coord.deploy(COUNTER, "wasm", source_format="wat", capabilities=["storage"])
    outputs = [coord.execute(ExecutionRequest(resource_id=rid)).output for _ in range(6)]
    assert outputs == [n.to_bytes(8, "little") for n in range(1, 7)]
    assert coord.state(rid) == {b"count": (6).to_bytes(8, "little")}
    wasm = coord.metrics()["engines"]["wasmtime"]
    assert wasm["executor"] == "ray" and wasm["executions"] == 6
    ran = [a for a in wasm["workers"]["actors"] if a["executions"]]
    assert ran and all(a["pid"] not in (None, os.getpid()) for a in ran)
    assert sum(a["executions"] for a in wasm["workers"]["actors"]) == 6
    assert len(ran) == 1  # affinity: one resource stays on the actor that compiled it
    assert len(wasm["workers"]["actors"]) == 2 and len(wasm["workers"]["nodes"]) == 1
    records = [r for r in coord.store.audit_records()
               if r.record_kind == "execution" and r.resource_id == rid]
    assert len(records) == 6 and coord.store.verify().ok


def test_token_contract_gives_the_same_results_as_threads(coord: Coordinator,
                                                         threaded: Coordinator) -> None:
    calls, token = _procpool_calls()
    pair = (coord, threaded)
    rids = [c.deploy(token, "wasm", source_format="wat",
                     capabilities=["storage", "events"]) for c in pair]
    for fields in calls:
        r, t = (c.execute(ExecutionRequest(resource_id=rids[0], **fields)) for c in pair)
        assert (r.status, r.output, r.effects) == (t.status, t.output, t.effects), fields
        assert (r.error.kind if r.error else None) == (t.error.kind if t.error else None)
    assert coord.state(rids[0]) == threaded.state(rids[0])
    assert [e["payload"] for e in coord.events(rids[0])] == [
        e["payload"] for e in threaded.events(rids[0])]


def test_onnx_runs_in_actors_with_the_same_outputs(coord: Coordinator,
                                                  threaded: Coordinator) -> None:
    model = (EXAMPLES / "risk_model.onnx").read_bytes()
    rid = coord.deploy(model, "onnx")
    assert threaded.deploy(model, "onnx") == rid
    good = {"x": np.array([[0.5, 0.2, 1.0], [3.0, 0.9, 0.0]], dtype=np.float32)}
    bad = {"x": np.array([[0.5]], dtype=np.float32)}
    for inputs in (good, bad):
        r, t = (c.execute(ExecutionRequest(resource_id=rid, input=inputs))
                for c in (coord, threaded))
        assert (r.status, r.fee_used) == (t.status, t.fee_used)
        assert (r.error.kind if r.error else None) == (t.error.kind if t.error else None)
        if r.ok:
            for name, value in t.output.items():
                np.testing.assert_allclose(r.output[name], value)
    onnx = coord.metrics()["engines"]["onnxruntime"]
    assert onnx["executor"] == "ray"
    assert {a["pid"] for a in onnx["workers"]["actors"] if a["executions"]} - {os.getpid()}


def test_timeout_and_cancel_reach_the_actor(coord: Coordinator) -> None:
    rid = coord.deploy(BUSY, "wasm", source_format="wat", capabilities=["storage"])
    restarts = coord.metrics()["engines"]["wasmtime"]["workers"]["restarts"]
    timed = coord.execute(busy(coord, rid, LONG * 100, timeout=0.3))
    assert timed.status is Status.TIMED_OUT, timed.error
    handle = coord.submit(busy(coord, rid, LONG * 100, timeout=60))
    wait_busy_actor(coord)
    handle.cancel()
    cancelled = handle.result(timeout=30)
    assert cancelled.status is Status.CANCELLED, cancelled.error
    assert coord.state(rid) == {}  # neither wrote anything
    # The actor stopped the engine itself (no kill after [ray] kill_grace, no replacement).
    assert coord.metrics()["engines"]["wasmtime"]["workers"]["restarts"] == restarts


def test_an_actor_killed_mid_execution_is_replaced_and_the_execution_runs_once_more(
        coord: Coordinator) -> None:
    rid = coord.deploy(BUSY, "wasm", source_format="wat", capabilities=["storage"])
    workers = coord.metrics()["engines"]["wasmtime"]["workers"]
    handle = coord.submit(busy(coord, rid, LONG, timeout=60))
    victim = wait_busy_actor(coord)
    ray.kill(ray.get_actor(victim["name"], namespace="coordinator"), no_restart=True)
    result = handle.result(timeout=60)
    assert result.status is Status.SUCCEEDED, result.error
    assert coord.state(rid) == {b"done": LONG.to_bytes(8, "little")}  # applied once
    after = coord.metrics()["engines"]["wasmtime"]["workers"]
    assert (after["restarts"], after["retries"]) == (workers["restarts"] + 1,
                                                     workers["retries"] + 1)
    assert victim["name"] not in {a["name"] for a in after["actors"]}
    records = [r for r in coord.store.audit_records()
               if r.record_kind == "execution" and r.execution_id == result.execution_id]
    assert len(records) == 1 and coord.store.verify().ok


def test_without_retry_a_dead_actor_fails_the_execution_and_applies_nothing(
        coord: Coordinator, tmp_path: Path) -> None:
    # Joins the module's cluster; reads state through the coordinator, not the file.
    with on_ray(tmp_path, engines=["wasmtime"], retry_on_worker_death=False,
                local_state_reads=False) as other:
        counter = other.deploy(COUNTER, "wasm", source_format="wat", capabilities=["storage"])
        for n in (1, 2):  # each read of "count" is a round trip to the coordinator
            assert other.execute(ExecutionRequest(resource_id=counter)).output == \
                n.to_bytes(8, "little")
        assert {a["state_reads"] for a in actors(other)} == {"coordinator"}
        rid = other.deploy(BUSY, "wasm", source_format="wat", capabilities=["storage"])
        handle = other.submit(busy(other, rid, LONG, timeout=60))
        victim = wait_busy_actor(other)
        ray.kill(ray.get_actor(victim["name"], namespace="coordinator"), no_restart=True)
        result = handle.result(timeout=60)
        assert result.status is Status.FAILED
        assert result.error is not None and result.error.kind.value == "engine_error"
        assert "died" in result.error.message and "nothing was applied" in result.error.message
        assert other.state(rid) == {}
        (record,) = [r for r in other.store.audit_records()
                     if r.record_kind == "execution" and r.execution_id == result.execution_id]
        assert record.status == "failed" and other.store.verify().ok
        assert other.metrics()["engines"]["wasmtime"]["workers"]["retries"] == 0
        # the replacement serves the next execution
        again = other.execute(busy(other, rid, 1000))
        assert again.ok, again.error
    assert ray.is_initialized()  # a coordinator that joined leaves the cluster running


def test_a_hybrid_execution_from_an_actor_goes_through_the_coordinator(
        coord: Coordinator) -> None:
    bank = Bank(coord)
    approved = bank.transfer("alice", 30, "bob")
    assert approved.status is Status.SUCCEEDED, approved.error
    assert approved.output == b"approved"
    assert (bank.balance("alice"), bank.balance("bob")) == (9_970, 10_030)
    (child,) = [r for r in coord.store.audit_records()
                if r.record_kind == "execution" and r.parent_id == approved.execution_id]
    assert (child.resource_id, child.status) == (bank.model, "succeeded")
    denied = bank.transfer("alice", 9_000, "bob")
    assert denied.output == b"denied"
    assert (bank.balance("alice"), bank.balance("bob")) == (9_970, 10_030)
    assert coord.store.verify().ok


def test_unknown_engines_and_unplaceable_resources_are_refused(coord: Coordinator,
                                                              tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="names nowhere, not installed"):
        on_ray(tmp_path / "a", engines=["nowhere"])
    with pytest.raises(InvalidRequest, match="no node of the Ray cluster has"):
        on_ray(tmp_path / "b", engines=["wasmtime"],
               resources={"wasmtime": {"accelerator_x": 1}})
    assert ray.is_initialized()


def test_the_engines_left_out_stay_on_threads(coord: Coordinator, tmp_path: Path) -> None:
    with on_ray(tmp_path, engines=["onnxruntime"]) as other:
        assert other.metrics()["engines"]["wasmtime"]["executor"] == "threads"
        assert other.metrics()["engines"]["onnxruntime"]["executor"] == "ray"


def _procpool_calls() -> tuple[list[dict[str, Any]], str]:
    """The token contract's calls of the process pool's tests (traps, fee exhaustion and a
    timeout among them), and the contract."""
    path = Path(__file__).resolve().parents[3] / "coordinator_core/tests/test_procpool_wasm.py"
    spec = importlib.util.spec_from_file_location("procpool_wasm_calls", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CALLS, module.TOKEN.read_text()

"""The quota policies inside a real coordinator: every path gives back what it took.

Success, engine failure, timeout, cancel (running, or while waiting for quota), and a refusal
by a later policy all leave the accounting at zero.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from coordinator_core import Coordinator
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import ExecutionRequest, Status


def open_coord(make_coordinator: Callable[..., Coordinator], **sections: Any) -> tuple[
        Coordinator, str]:
    coord = make_coordinator(EchoPlugin(), overrides=sections)
    return coord, coord.deploy(b"echo resource", "echo", owner="olga")


def quota(coord: Coordinator) -> dict[str, Any]:
    return coord.metrics()["quota"]


def assert_zero(coord: Coordinator) -> None:
    snap = quota(coord)
    conc = snap["quota-concurrency"]
    assert conc["overall"]["running"] == 0 and conc["overall"]["queued"] == 0
    assert all(c["running"] == 0 for c in conc["callers"].values())
    assert all(c.get("reserved", 0) == 0 for c in snap["quota-fee"]["callers"].values())
    assert all(c.get("waiting", 0) == 0 for c in snap["quota-rate"]["callers"].values())


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.002)


LIMITS = {"quota-concurrency": {"limit": 1, "mode": "wait", "max_wait": 5.0},
          "quota-fee": {"budget": 50_000_000}}


def sleeper(rid: str, seconds: float, **kw: Any) -> ExecutionRequest:
    return ExecutionRequest(resource_id=rid, caller="alice", entry="sleep", args=(seconds,),
                            fee_limit=100_000, **kw)


def test_success_and_engine_failure_release(make_coordinator: Any) -> None:
    coord, rid = open_coord(make_coordinator, **LIMITS)
    ok = coord.execute(ExecutionRequest(resource_id=rid, caller="alice", input=b"abc",
                                        fee_limit=1000))
    assert ok.ok and ok.fee_used == 4
    failed = coord.execute(ExecutionRequest(resource_id=rid, caller="alice", entry="fail",
                                            fee_limit=1000))
    assert failed.status is Status.FAILED and failed.error is not None
    assert failed.error.kind.value == "engine_error"
    assert_zero(coord)
    fee = quota(coord)["quota-fee"]["callers"]["alice"]
    assert fee["spent"] == 4 and fee["left"] == 50_000_000 - 4


def test_a_cancelled_execution_releases_its_quota(make_coordinator: Any) -> None:
    coord, rid = open_coord(make_coordinator, **LIMITS)
    handle = coord.submit(sleeper(rid, 5.0))
    wait_until(lambda: quota(coord)["quota-concurrency"]["overall"]["running"] == 1
               and coord.status(handle.execution_id).status is Status.RUNNING)
    assert quota(coord)["quota-fee"]["callers"]["alice"]["reserved"] == 100_000
    assert coord.cancel(handle.execution_id)
    result = handle.result(timeout=5)
    assert result.status is Status.CANCELLED
    assert_zero(coord)
    # Charged with what it used before the cancel, never its whole limit.
    assert quota(coord)["quota-fee"]["callers"]["alice"]["spent"] == result.fee_used < 100_000
    assert coord.execute(ExecutionRequest(resource_id=rid, caller="alice")).ok


def test_a_timed_out_execution_releases_its_quota(make_coordinator: Any) -> None:
    coord, rid = open_coord(make_coordinator, **LIMITS)
    result = coord.execute(sleeper(rid, 5.0, timeout=0.15))
    assert result.status is Status.TIMED_OUT
    assert_zero(coord)
    assert coord.execute(ExecutionRequest(resource_id=rid, caller="alice")).ok


def test_cancel_while_waiting_for_a_slot_releases_it(make_coordinator: Any) -> None:
    coord, rid = open_coord(make_coordinator, **LIMITS)
    holder = coord.submit(sleeper(rid, 0.3))
    wait_until(lambda: quota(coord)["quota-concurrency"]["overall"]["running"] == 1)
    waiter = coord.submit(sleeper(rid, 5.0))
    wait_until(lambda: quota(coord)["quota-concurrency"]["overall"]["queued"] == 1)
    coord.cancel(waiter.execution_id)
    assert holder.result(timeout=5).ok
    assert waiter.result(timeout=5).status is Status.CANCELLED
    assert_zero(coord)
    assert quota(coord)["quota-concurrency"]["waited"] == 1


def test_cancel_ends_a_wait_for_a_slot_at_once(make_coordinator: Any) -> None:
    """The queued request stops when cancelled, not when the holder frees the slot."""
    coord, rid = open_coord(make_coordinator, **LIMITS)
    holder = coord.submit(sleeper(rid, 3.0))
    wait_until(lambda: quota(coord)["quota-concurrency"]["overall"]["running"] == 1)
    waiter = coord.submit(sleeper(rid, 0.0))
    wait_until(lambda: quota(coord)["quota-concurrency"]["overall"]["queued"] == 1)
    started = time.monotonic()
    assert coord.cancel(waiter.execution_id)
    result = waiter.result(timeout=5)
    assert time.monotonic() - started < 1.0  # the holder still runs for seconds
    assert result.status is Status.CANCELLED and result.error is not None
    assert "while queued for a concurrency slot" in result.error.message
    assert result.error.source == "quota-concurrency"
    assert not holder.done()
    assert quota(coord)["quota-concurrency"]["overall"]["queued"] == 0
    records = [r for r in coord.store.audit_records() if r.execution_id == result.execution_id]
    assert [r.status for r in records] == ["cancelled"]
    coord.cancel(holder.execution_id)
    holder.result(timeout=5)
    assert_zero(coord)


def test_a_wait_cut_by_the_deadline_is_always_quota_exceeded(make_coordinator: Any) -> None:
    """The watchdog's timeout at the deadline races the wait's own end: either way the
    request was refused by the policy, never reported as a timeout of its own."""
    coord, rid = open_coord(make_coordinator, **LIMITS)
    holder = coord.submit(sleeper(rid, 1.0))
    wait_until(lambda: quota(coord)["quota-concurrency"]["overall"]["running"] == 1)
    outcomes: list[tuple[str, str]] = []

    def wait_briefly() -> None:
        result = coord.execute(sleeper(rid, 0.0, timeout=0.05))
        assert result.error is not None
        outcomes.append((result.status.value, result.error.kind.value))

    threads = [threading.Thread(target=wait_briefly) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcomes == [("rejected", "quota_exceeded")] * 40
    holder.result(timeout=5)
    assert_zero(coord)


def test_cancel_ends_a_wait_for_a_rate_token_and_gives_it_back(make_coordinator: Any) -> None:
    coord, rid = open_coord(make_coordinator, **{
        "quota-rate": {"rate": 0.5, "burst": 1, "mode": "wait", "max_wait": 5.0}})
    assert coord.execute(sleeper(rid, 0.0)).ok  # spends the only token; the next is 2 s away
    waiter = coord.submit(sleeper(rid, 0.0))
    wait_until(lambda: quota(coord)["quota-rate"]["callers"]["alice"]["waiting"] == 1)
    started = time.monotonic()
    assert coord.cancel(waiter.execution_id)
    result = waiter.result(timeout=5)
    assert time.monotonic() - started < 1.0
    assert result.status is Status.CANCELLED and result.error is not None
    assert "while waiting for a rate token" in result.error.message
    alice = quota(coord)["quota-rate"]["callers"]["alice"]
    assert alice["waiting"] == 0
    assert alice["tokens"] > -0.5  # the reservation was returned, not left owed


def test_a_wait_that_runs_out_is_quota_exceeded_with_one_audit_record(
        make_coordinator: Any) -> None:
    coord, rid = open_coord(make_coordinator, **{
        **LIMITS, "quota-concurrency": {"limit": 1, "mode": "wait", "max_wait": 0.05}})
    holder = coord.submit(sleeper(rid, 0.5))
    wait_until(lambda: quota(coord)["quota-concurrency"]["overall"]["running"] == 1)
    refused = coord.execute(sleeper(rid, 0.0))
    assert refused.status is Status.REJECTED and refused.error is not None
    assert refused.error.kind.value == "quota_exceeded"
    assert refused.error.source == "quota-concurrency"
    assert "'alice'" in refused.error.message
    holder.result(timeout=5)
    records = [r for r in coord.store.audit_records()
               if r.execution_id == refused.execution_id]
    assert len(records) == 1 and records[0].error_kind == "quota_exceeded"
    assert_zero(coord)


def test_refusal_by_a_later_policy_gives_back_the_earlier_ones(make_coordinator: Any) -> None:
    coord, rid = open_coord(make_coordinator, **{
        "quota-fee": {"budget": 1000}, "quota-rate": {"rate": 1, "burst": 1}})
    request = ExecutionRequest(resource_id=rid, caller="alice", fee_limit=400)
    assert coord.execute(request).ok
    refused = coord.execute(request)
    assert refused.error is not None and refused.error.source == "quota-rate"
    fee = quota(coord)["quota-fee"]["callers"]["alice"]
    assert fee["reserved"] == 0 and fee["spent"] == 1  # the fee reservation came back
    assert_zero(coord)


def test_fee_budget_refuses_before_running(make_coordinator: Any) -> None:
    coord, rid = open_coord(make_coordinator, **{"quota-fee": {"budget": 500}})
    engine_calls = coord.engine_for("echo").calls
    refused = coord.execute(ExecutionRequest(resource_id=rid, caller="bob", fee_limit=600))
    assert refused.error is not None and refused.error.source == "quota-fee"
    assert coord.engine_for("echo").calls == engine_calls  # never reached the engine
    # A request without a fee limit is charged the configured default (10_000_000).
    assert coord.execute(ExecutionRequest(resource_id=rid, caller="bob")).error is not None


def test_metrics_show_quota_rejections_and_waits(make_coordinator: Any) -> None:
    coord, rid = open_coord(make_coordinator, **{
        "quota-rate": {"rate": 20, "burst": 1, "mode": "wait", "max_wait": 0.5}})
    for _ in range(3):
        assert coord.execute(ExecutionRequest(resource_id=rid, caller="alice")).ok
    snap = quota(coord)["quota-rate"]
    assert snap["waited"] == 2 and snap["wait_seconds"] > 0
    metrics = coord.metrics()
    assert metrics["by_status"].get("succeeded") == 3

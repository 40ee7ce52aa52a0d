"""Queries and simulations against the quota policies: nothing consumed, refusals predicted.

A query is neither checked nor charged; a simulation runs each policy's ``check``, which
answers like ``acquire`` without taking a token, a slot or a reservation. A third-party policy
without ``check`` admits every dry run and is never acquired by one. Also the pipeline's
backstop for engines that ignore ``ExecutionContext.read_only`` (the echo engine does).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from coordinator_core import Coordinator
from coordinator_core.services.quota.concurrency import ConcurrencyConfig, ConcurrencyPolicy
from coordinator_core.services.quota.fee import FeeBudgetPolicy, FeeConfig
from coordinator_core.services.quota.rate import RateConfig, TokenBucketPolicy
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import (
    ErrorKind,
    ExecutionRequest,
    QuotaExceeded,
    QuotaPolicyRecord,
    ResourceInfo,
    Status,
    hookimpl,
)

LIMITS = {"quota-rate": {"rate": 0.001, "burst": 2},
          "quota-concurrency": {"limit": 1},
          "quota-fee": {"budget": 10_000, "window": 3600}}
RESOURCE = ResourceInfo(id="r" * 64, type="echo")


def request(rid: str, **kw: Any) -> ExecutionRequest:
    return ExecutionRequest(resource_id=rid, caller="alice", input=b"abc",
                            **{"fee_limit": 1000, **kw})


def usage(coord: Coordinator) -> dict[str, Any]:
    """What the policies hold for alice, without their counters of admissions."""
    quota = coord.metrics()["quota"]
    rate = quota["quota-rate"]["callers"].get("alice", {})
    return {"tokens": round(rate.get("tokens", 2.0), 2),
            "running": quota["quota-concurrency"]["overall"]["running"],
            "fee": {k: v for k, v in quota["quota-fee"]["callers"].get("alice", {}).items()
                    if k != "window_ends_in"}}


def test_queries_and_simulations_consume_no_quota(make_coordinator: Any) -> None:
    coord = make_coordinator(EchoPlugin(), overrides=LIMITS)
    rid = coord.deploy(b"echo resource", "echo", owner="olga")
    assert coord.execute(request(rid)).ok  # alice: one token of two left, 4 fee spent
    before = usage(coord)
    assert before["tokens"] == 1.0 and before["fee"]["spent"] == 4
    for _ in range(20):
        assert coord.query(request(rid)).ok
        assert coord.simulate(request(rid)).ok
    assert usage(coord) == before
    assert coord.execute(request(rid)).ok  # the last token is still there
    rate = coord.metrics()["quota"]["quota-rate"]
    assert rate["admitted"] == 2 and rate["rejected"] == 0


def test_simulate_predicts_each_refusal(make_coordinator: Any) -> None:
    coord = make_coordinator(EchoPlugin(), overrides=LIMITS)
    rid = coord.deploy(b"echo resource", "echo", owner="olga")
    over_budget = coord.simulate(request(rid, fee_limit=20_000))
    assert over_budget.status is Status.REJECTED and over_budget.error is not None
    assert over_budget.error.kind is ErrorKind.QUOTA_EXCEEDED
    assert over_budget.error.source == "quota-fee"
    assert coord.execute(request(rid, fee_limit=20_000)).error == over_budget.error
    for _ in range(2):
        assert coord.execute(request(rid)).ok  # both rate tokens spent
    out_of_tokens = coord.simulate(request(rid))
    assert out_of_tokens.error is not None and out_of_tokens.error.source == "quota-rate"
    assert coord.query(request(rid)).ok  # a query is not rate limited
    real = coord.execute(request(rid))
    assert real.error is not None and real.error.message == out_of_tokens.error.message


def test_simulate_predicts_a_full_concurrency_slot(make_coordinator: Any) -> None:
    coord = make_coordinator(EchoPlugin(),
                             overrides={"quota-concurrency": {"limit": 1, "mode": "reject"}})
    rid = coord.deploy(b"echo resource", "echo", owner="olga")
    holder = coord.submit(request(rid, entry="sleep", args=(5.0,), fee_limit=100_000))
    try:
        while coord.metrics()["quota"]["quota-concurrency"]["overall"]["running"] != 1:
            threading.Event().wait(0.002)
        refused = coord.simulate(request(rid))
        assert refused.error is not None and refused.error.source == "quota-concurrency"
        assert coord.query(request(rid)).ok  # takes no slot
        assert coord.metrics()["quota"]["quota-concurrency"]["overall"]["running"] == 1
    finally:
        coord.cancel(holder.execution_id)
        holder.result(timeout=5)
    assert coord.simulate(request(rid)).ok


def test_each_policy_check_changes_nothing() -> None:
    alice = ExecutionRequest(resource_id=RESOURCE.id, caller="alice", fee_limit=600)
    rate = TokenBucketPolicy(RateConfig(rate=0.001, burst=1))
    rate.check(alice, RESOURCE)
    rate.acquire(alice, RESOURCE, deadline=1e18)
    with pytest.raises(QuotaExceeded, match="over its rate"):
        rate.check(alice, RESOURCE)
    assert (rate.admitted, rate.rejected) == (1, 0)
    waiting = TokenBucketPolicy(RateConfig(rate=1, burst=1, mode="wait", max_wait=5))
    waiting.acquire(alice, RESOURCE, deadline=1e18)
    waiting.check(alice, RESOURCE)  # acquire would wait for the token: admitted
    fee = FeeBudgetPolicy(FeeConfig(budget=1000))
    fee.check(alice, RESOURCE)
    lease = fee.acquire(alice, RESOURCE, deadline=1e18)
    with pytest.raises(QuotaExceeded, match="fee budget of 1000"):
        fee.check(alice, RESOURCE)  # 600 reserved, 600 more would not fit
    fee.release(lease, 100)
    fee.check(alice, RESOURCE)
    assert fee.snapshot("alice")["callers"]["alice"]["left"] == 900
    slots = ConcurrencyPolicy(ConcurrencyConfig(limit=1, mode="reject"))
    held = slots.acquire(alice, RESOURCE, deadline=1e18)
    with pytest.raises(QuotaExceeded, match="already runs 1"):
        slots.check(alice, RESOURCE)
    slots.release(held, 0)
    slots.check(alice, RESOURCE)
    assert slots.snapshot()["overall"]["running"] == 0


class CountingPolicy:
    """A third-party policy written before ``check`` existed: only acquire and release."""

    def __init__(self) -> None:
        self.acquired = 0

    def acquire(self, request: ExecutionRequest, resource: ResourceInfo,
                deadline: float) -> None:
        self.acquired += 1

    def release(self, lease: Any, fee_used: int) -> None:
        pass


class CountingPlugin:
    def __init__(self) -> None:
        self.policy = CountingPolicy()

    @hookimpl
    def coordinator_register_quota_policies(self, config: Any) -> list[QuotaPolicyRecord]:
        return [QuotaPolicyRecord(name="counting", policy=self.policy)]


def test_a_policy_without_check_admits_dry_runs(make_coordinator: Any) -> None:
    plugin = CountingPlugin()
    coord = make_coordinator(EchoPlugin(), plugin)
    rid = coord.deploy(b"echo resource", "echo", owner="olga")
    assert coord.simulate(request(rid)).ok and coord.query(request(rid)).ok
    assert plugin.policy.acquired == 0
    assert coord.execute(request(rid)).ok and plugin.policy.acquired == 1


def test_an_engine_returning_effects_to_a_query_is_refused(make_coordinator: Any) -> None:
    coord = make_coordinator(EchoPlugin())
    rid = coord.deploy(b"echo resource", "echo", owner="olga")
    result = coord.query(request(rid, entry="write"))
    assert result.status is Status.FAILED and result.error is not None
    assert result.error.kind is ErrorKind.TRAP
    assert "a query is read-only" in result.error.message
    assert "state.set" in result.error.message and "event" in result.error.message
    assert result.effects == () and result.fee_used == 4
    assert coord.state(rid) == {} and coord.events(rid) == []
    simulated = coord.simulate(request(rid, entry="write"))
    assert simulated.ok and len(simulated.effects) == 2 and len(simulated.events) == 1
    assert coord.state(rid) == {}


def test_bad_dry_run_config_and_requests_are_typed_errors(make_coordinator: Any) -> None:
    from coordinator_hookspecs import InvalidRequest

    for key, value in (("query_audit_sample", 1.5), ("query_fee_limit", 0)):
        with pytest.raises(InvalidRequest, match=key):
            make_coordinator(EchoPlugin(), overrides={"coordinator": {key: value}})
    coord = make_coordinator(EchoPlugin())
    with pytest.raises(InvalidRequest, match="expected an ExecutionRequest"):
        coord.query("not a request")  # type: ignore[arg-type]
    bad = coord.simulate(ExecutionRequest(resource_id="x", caller=""))
    assert bad.error is not None and bad.error.kind is ErrorKind.INVALID_REQUEST

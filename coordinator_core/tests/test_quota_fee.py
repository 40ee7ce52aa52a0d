"""The ``quota-fee`` policy: fee budget per caller per window, reserved then charged."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from coordinator_core.services.quota.fee import FeeBudgetPolicy, FeeConfig, FeeOverride
from coordinator_hookspecs import (
    ErrorKind,
    ExecutionRequest,
    InvalidRequest,
    QuotaExceeded,
    ResourceInfo,
)

RES = ResourceInfo(id="33" * 32, type="wasm")
FAR = float("inf")


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def req(caller: str = "alice", fee: int | None = 60, **kw: Any) -> ExecutionRequest:
    return ExecutionRequest(resource_id=RES.id, caller=caller, fee_limit=fee, **kw)


def test_unlimited_by_default() -> None:
    policy = FeeBudgetPolicy()
    assert policy.acquire(req(fee=10**12), RES, FAR) is None
    assert policy.snapshot()["default"] == {"unlimited": True}


def test_fee_limit_over_the_remaining_budget_is_refused_before_running() -> None:
    policy = FeeBudgetPolicy(FeeConfig(budget=100), clock=FakeClock())
    lease = policy.acquire(req(fee=60), RES, FAR)
    with pytest.raises(QuotaExceeded) as info:
        policy.acquire(req(fee=60), RES, FAR)  # 60 reserved, 40 left
    err = info.value
    assert err.kind is ErrorKind.QUOTA_EXCEEDED and err.source == "quota-fee"
    assert "'alice'" in err.message and "40" in err.message and "60" in err.message
    policy.release(lease, 10)  # charged with what it used, not its limit
    snap = policy.snapshot("alice")["callers"]["alice"]
    assert snap["spent"] == 10 and snap["reserved"] == 0 and snap["left"] == 90
    policy.acquire(req(fee=90), RES, FAR)


def test_missing_fee_limit_takes_the_configured_default() -> None:
    policy = FeeBudgetPolicy(FeeConfig(budget=100), default_fee=150, clock=FakeClock())
    with pytest.raises(QuotaExceeded, match="150"):
        policy.acquire(req(fee=None), RES, FAR)
    policy = FeeBudgetPolicy(FeeConfig(budget=100), default_fee=50, clock=FakeClock())
    policy.acquire(req(fee=None), RES, FAR)
    assert policy.snapshot()["callers"]["alice"]["reserved"] == 50


def test_budget_comes_back_when_the_window_ends() -> None:
    clock = FakeClock()
    policy = FeeBudgetPolicy(FeeConfig(budget=100, window=60), clock=clock)
    policy.release(policy.acquire(req(fee=100), RES, FAR), 100)
    with pytest.raises(QuotaExceeded):
        policy.acquire(req(fee=1), RES, FAR)
    clock.now += 59.9
    with pytest.raises(QuotaExceeded):
        policy.acquire(req(fee=1), RES, FAR)
    clock.now += 0.1
    policy.acquire(req(fee=100), RES, FAR)


def test_per_caller_overrides_and_separate_accounts() -> None:
    cfg = FeeConfig(budget=100, callers={"big": FeeOverride(budget=1000),
                                         "free": FeeOverride(budget=0)})
    policy = FeeBudgetPolicy(cfg, clock=FakeClock())
    policy.acquire(req("big", fee=900), RES, FAR)
    policy.acquire(req("bob", fee=100), RES, FAR)
    assert policy.acquire(req("free", fee=10**9), RES, FAR) is None
    with pytest.raises(QuotaExceeded):
        policy.acquire(req("bob", fee=1), RES, FAR)


def test_release_is_idempotent_and_never_goes_negative() -> None:
    policy = FeeBudgetPolicy(FeeConfig(budget=100), clock=FakeClock())
    lease = policy.acquire(req(fee=50), RES, FAR)
    policy.release(lease, -5)
    policy.release(lease, 50)
    policy.release(None, 0)
    snap = policy.snapshot()["callers"]["alice"]
    assert snap["reserved"] == 0 and snap["spent"] == 0


def test_nested_executions_pass_through() -> None:
    policy = FeeBudgetPolicy(FeeConfig(budget=10), clock=FakeClock())
    assert policy.acquire(req(fee=10**6, parent_id="e1", depth=1), RES, FAR) is None


@pytest.mark.parametrize(("cfg", "key"), [
    (FeeConfig(budget=-1), "budget"),
    (FeeConfig(budget=10, window=0), "window"),
    (FeeConfig(callers={"x": FeeOverride(budget=5, window=-1)}), "callers.x.window"),
])
def test_bad_config_names_the_key(cfg: FeeConfig, key: str) -> None:
    with pytest.raises(InvalidRequest, match=rf"\[quota-fee\]\.{key}"):
        FeeBudgetPolicy(cfg)


def test_concurrent_executions_never_overspend() -> None:
    budget = 10_000
    policy = FeeBudgetPolicy(FeeConfig(budget=budget, window=3600))
    lock = threading.Lock()
    used = [0]

    def worker() -> None:
        for _ in range(200):
            try:
                lease = policy.acquire(req(fee=70), RES, FAR)
            except QuotaExceeded:
                continue
            policy.release(lease, 70)
            with lock:
                used[0] += 70

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    snap = policy.snapshot()["callers"]["alice"]
    assert snap["spent"] == used[0] <= budget and snap["reserved"] == 0
    assert used[0] > budget - 70  # everything that fit was admitted


def test_fee_is_charged_to_the_window_it_was_admitted_in() -> None:
    clock = FakeClock()
    policy = FeeBudgetPolicy(FeeConfig(budget=100, window=60), clock=clock)
    straddler = policy.acquire(req(fee=50), RES, FAR)
    clock.now += 61
    fresh = policy.acquire(req(fee=50), RES, FAR)  # rolls the window; 50 still reserved
    with pytest.raises(QuotaExceeded):
        policy.acquire(req(fee=1), RES, FAR)
    policy.release(straddler, 40)  # its window is over: the charge does not spill over
    policy.release(fresh, 30)
    snap = policy.snapshot()["callers"]["alice"]
    assert snap["spent"] == 30 and snap["reserved"] == 0 and snap["left"] == 70
    assert policy.snapshot()["charged"] == 70


def test_table_of_accounts_stays_bounded() -> None:
    clock = FakeClock()
    policy = FeeBudgetPolicy(FeeConfig(budget=100, window=1), clock=clock)
    for i in range(25_000):
        policy.release(policy.acquire(req(f"u{i}", fee=1), RES, FAR), 1)
        clock.now += 0.001
    assert len(policy._accounts) < 20_000

"""The ``quota-concurrency`` policy: slots per caller and overall, fair waiting."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from coordinator_core.services.quota.concurrency import (
    ConcurrencyConfig,
    ConcurrencyOverride,
    ConcurrencyPolicy,
)
from coordinator_hookspecs import (
    ErrorKind,
    ExecutionRequest,
    InvalidRequest,
    QuotaExceeded,
    ResourceInfo,
)

RES = ResourceInfo(id="22" * 32, type="wasm")
FAR = float("inf")


def req(caller: str = "alice", **kw: Any) -> ExecutionRequest:
    return ExecutionRequest(resource_id=RES.id, caller=caller, **kw)


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.001)


def queued(policy: ConcurrencyPolicy) -> int:
    return int(policy.snapshot()["overall"]["queued"])


def test_unlimited_still_counts_and_returns_to_zero() -> None:
    policy = ConcurrencyPolicy()
    leases = [policy.acquire(req(c), RES, FAR) for c in ("a", "b", "a")]
    snap = policy.snapshot()
    assert snap["overall"]["running"] == 3 and snap["callers"]["a"]["running"] == 2
    for lease in leases:
        policy.release(lease, 0)
    assert policy.snapshot()["overall"]["running"] == 0 and policy._running == {}


def test_per_caller_limit_in_reject_mode() -> None:
    policy = ConcurrencyPolicy(ConcurrencyConfig(limit=2, mode="reject"))
    first = policy.acquire(req(), RES, FAR)
    policy.acquire(req(), RES, FAR)
    with pytest.raises(QuotaExceeded) as info:
        policy.acquire(req(), RES, FAR)
    assert info.value.kind is ErrorKind.QUOTA_EXCEEDED
    assert info.value.source == "quota-concurrency" and "'alice'" in info.value.message
    policy.acquire(req("bob"), RES, FAR)
    policy.release(first, 0)
    policy.acquire(req(), RES, FAR)


def test_overall_limit_in_reject_mode() -> None:
    policy = ConcurrencyPolicy(ConcurrencyConfig(overall=2, mode="reject"))
    policy.acquire(req("a"), RES, FAR)
    policy.acquire(req("b"), RES, FAR)
    with pytest.raises(QuotaExceeded, match="overall limit"):
        policy.acquire(req("c"), RES, FAR)


def test_double_release_and_none_are_harmless() -> None:
    policy = ConcurrencyPolicy(ConcurrencyConfig(limit=1))
    lease = policy.acquire(req(), RES, FAR)
    policy.release(lease, 0)
    policy.release(lease, 0)
    policy.release(None, 0)
    assert policy.snapshot()["overall"]["running"] == 0
    policy.release(policy.acquire(req(), RES, FAR), 0)


def test_nested_executions_take_no_slot() -> None:
    policy = ConcurrencyPolicy(ConcurrencyConfig(limit=1, mode="reject"))
    policy.acquire(req(), RES, FAR)
    assert policy.acquire(req(parent_id="e1", depth=1), RES, FAR) is None


def test_waiters_are_served_first_come_first_served() -> None:
    policy = ConcurrencyPolicy(ConcurrencyConfig(limit=1, mode="wait", max_wait=5))
    holder = policy.acquire(req(), RES, FAR)
    order: list[int] = []

    def worker(i: int) -> None:
        lease = policy.acquire(req(), RES, soon())
        order.append(i)
        policy.release(lease, 0)

    threads = []
    for i in range(6):
        threads.append(threading.Thread(target=worker, args=(i,)))
        threads[-1].start()
        wait_for(lambda n=i + 1: queued(policy) == n)
    policy.release(holder, 0)
    for thread in threads:
        thread.join(5)
    assert order == list(range(6))
    snap = policy.snapshot()
    assert snap["overall"]["running"] == 0 and snap["overall"]["queued"] == 0
    assert snap["waited"] == 6 and snap["admitted"] == 7


def test_a_waiter_blocked_by_its_own_limit_does_not_block_others() -> None:
    policy = ConcurrencyPolicy(ConcurrencyConfig(limit=1, overall=3, mode="wait", max_wait=5))
    held = policy.acquire(req("alice"), RES, FAR)
    got: list[str] = []
    alice = threading.Thread(target=lambda: got.append(
        str(policy.acquire(req("alice"), RES, soon())[0])))  # type: ignore[index]
    alice.start()
    wait_for(lambda: queued(policy) == 1)
    bob = policy.acquire(req("bob"), RES, soon(0.5))  # admitted at once, alice still queued
    assert bob is not None and queued(policy) == 1
    policy.release(held, 0)
    alice.join(5)
    assert got == ["alice"] and queued(policy) == 0


def test_freed_overall_slot_goes_to_the_oldest_waiter() -> None:
    policy = ConcurrencyPolicy(ConcurrencyConfig(overall=1, mode="wait", max_wait=5))
    held = policy.acquire(req("alice"), RES, FAR)
    order: list[str] = []

    def worker(caller: str) -> None:
        lease = policy.acquire(req(caller), RES, soon())
        order.append(caller)
        policy.release(lease, 0)

    threads = []
    for n, caller in enumerate(("bob", "carol", "bob", "dave")):
        threads.append(threading.Thread(target=worker, args=(caller,)))
        threads[-1].start()
        wait_for(lambda n=n: queued(policy) == n + 1)
    policy.release(held, 0)
    for thread in threads:
        thread.join(5)
    assert order == ["bob", "carol", "bob", "dave"]


def test_wait_gives_up_at_max_wait_and_leaves_the_queue() -> None:
    policy = ConcurrencyPolicy(ConcurrencyConfig(limit=1, mode="wait", max_wait=0.05))
    policy.acquire(req(), RES, FAR)
    start = time.monotonic()
    with pytest.raises(QuotaExceeded, match="no slot freed up"):
        policy.acquire(req(), RES, FAR)
    assert 0.04 <= time.monotonic() - start < 2
    assert queued(policy) == 0 and policy.snapshot()["rejected"] == 1


def test_wait_is_bounded_by_the_deadline() -> None:
    policy = ConcurrencyPolicy(ConcurrencyConfig(limit=1, mode="wait", max_wait=60))
    policy.acquire(req(), RES, FAR)
    with pytest.raises(QuotaExceeded):
        policy.acquire(req(), RES, time.monotonic() - 1)
    start = time.monotonic()
    with pytest.raises(QuotaExceeded):
        policy.acquire(req(), RES, soon(0.05))
    assert time.monotonic() - start < 2


def test_full_queue_refuses_newcomers() -> None:
    policy = ConcurrencyPolicy(ConcurrencyConfig(limit=1, mode="wait", max_wait=5,
                                                 max_waiters=1))
    held = policy.acquire(req(), RES, FAR)
    waiter = threading.Thread(target=lambda: policy.release(
        policy.acquire(req(), RES, soon()), 0))
    waiter.start()
    wait_for(lambda: queued(policy) == 1)
    with pytest.raises(QuotaExceeded, match="queue is full"):
        policy.acquire(req(), RES, soon())
    policy.release(held, 0)
    waiter.join(5)


def test_per_caller_override() -> None:
    cfg = ConcurrencyConfig(limit=5, mode="wait",
                            callers={"batch": ConcurrencyOverride(limit=1, mode="reject")})
    policy = ConcurrencyPolicy(cfg)
    policy.acquire(req("batch"), RES, FAR)
    with pytest.raises(QuotaExceeded):
        policy.acquire(req("batch"), RES, FAR)
    for _ in range(5):
        policy.acquire(req("alice"), RES, FAR)


@pytest.mark.parametrize(("cfg", "key"), [
    (ConcurrencyConfig(limit=-1), "limit"),
    (ConcurrencyConfig(overall=-1), "overall"),
    (ConcurrencyConfig(max_waiters=0), "max_waiters"),
    (ConcurrencyConfig(mode="later"), "mode"),  # type: ignore[arg-type]
    (ConcurrencyConfig(callers={"x": ConcurrencyOverride(max_wait=-1)}), "callers.x.max_wait"),
])
def test_bad_config_names_the_key(cfg: ConcurrencyConfig, key: str) -> None:
    with pytest.raises(InvalidRequest, match=rf"\[quota-concurrency\]\.{key}"):
        ConcurrencyPolicy(cfg)


def test_limits_hold_under_concurrent_acquire_and_release() -> None:
    policy = ConcurrencyPolicy(ConcurrencyConfig(limit=2, overall=5, mode="wait", max_wait=0.02))
    lock = threading.Lock()
    running: dict[str, int] = {}
    worst = {"total": 0, "caller": 0}
    outcomes = {"ok": 0, "refused": 0}

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(60):
            caller = rnd.choice("abcd")
            try:
                lease = policy.acquire(req(caller), RES, soon(1))
            except QuotaExceeded:
                with lock:
                    outcomes["refused"] += 1
                continue
            with lock:
                running[caller] = running.get(caller, 0) + 1
                worst["caller"] = max(worst["caller"], running[caller])
                worst["total"] = max(worst["total"], sum(running.values()))
                outcomes["ok"] += 1
            time.sleep(rnd.random() * 0.002)
            with lock:
                running[caller] -= 1
            policy.release(lease, 0)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert worst["total"] <= 5 and worst["caller"] <= 2
    assert outcomes["ok"] + outcomes["refused"] == 16 * 60
    snap = policy.snapshot()
    assert snap["overall"]["running"] == 0 and snap["overall"]["queued"] == 0
    assert snap["admitted"] == outcomes["ok"] and snap["rejected"] == outcomes["refused"]
    assert snap["overall"]["peak"] <= 5

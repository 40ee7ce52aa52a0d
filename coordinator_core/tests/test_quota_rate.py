"""The ``quota-rate`` policy: per-caller token buckets, reject and wait modes."""

from __future__ import annotations

import threading
import time

import pytest

from coordinator_core.services.quota.rate import RateConfig, RateOverride, TokenBucketPolicy
from coordinator_hookspecs import (
    ErrorKind,
    ExecutionRequest,
    InvalidRequest,
    QuotaExceeded,
    ResourceInfo,
)

RES = ResourceInfo(id="11" * 32, type="wasm")
FAR = float("inf")


class FakeClock:
    """A clock tests advance by hand; ``sleep`` advances it and records the delay."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))


def req(caller: str = "alice", **kw: object) -> ExecutionRequest:
    return ExecutionRequest(resource_id=RES.id, caller=caller, **kw)


def test_unlimited_by_default_keeps_no_state() -> None:
    policy = TokenBucketPolicy()
    for _ in range(1000):
        assert policy.acquire(req(), RES, FAR) is None
    assert policy._buckets == {} and policy.snapshot()["default"] == {"unlimited": True}


def test_burst_then_refill_in_reject_mode() -> None:
    clock = FakeClock()
    policy = TokenBucketPolicy(RateConfig(rate=10, burst=3), clock=clock)
    for _ in range(3):
        policy.acquire(req(), RES, FAR)
    with pytest.raises(QuotaExceeded) as info:
        policy.acquire(req(), RES, FAR)
    assert info.value.kind is ErrorKind.QUOTA_EXCEEDED and info.value.source == "quota-rate"
    assert "'alice'" in info.value.message and "10/s" in info.value.message
    policy.acquire(req("bob"), RES, FAR)  # buckets are per caller
    clock.now += 0.1
    policy.acquire(req(), RES, FAR)
    with pytest.raises(QuotaExceeded):
        policy.acquire(req(), RES, FAR)
    snap = policy.snapshot("alice")
    assert snap["admitted"] == 5 and snap["rejected"] == 2
    assert snap["callers"]["alice"]["tokens"] == 0


def test_per_caller_overrides() -> None:
    clock = FakeClock()
    cfg = RateConfig(callers={"alice": RateOverride(rate=1), "bob": RateOverride(burst=2)})
    with pytest.raises(InvalidRequest, match=r"callers\.bob\.burst"):
        TokenBucketPolicy(RateConfig(rate=5, callers={"bob": RateOverride(burst=0.5)}))
    policy = TokenBucketPolicy(cfg, clock=clock)
    policy.acquire(req("alice"), RES, FAR)
    with pytest.raises(QuotaExceeded):
        policy.acquire(req("alice"), RES, FAR)
    for _ in range(100):  # bob has no rate: unlimited
        policy.acquire(req("bob"), RES, FAR)


def test_wait_mode_reserves_tokens_in_arrival_order() -> None:
    clock = FakeClock()
    policy = TokenBucketPolicy(RateConfig(rate=10, burst=1, mode="wait", max_wait=0.35),
                               clock=clock, sleep=clock.sleep)
    for _ in range(4):
        policy.acquire(req(), RES, FAR)
    assert clock.sleeps == [0.1, 0.2, 0.3]  # each waiter queues behind the previous one
    with pytest.raises(QuotaExceeded, match="past the allowed wait"):
        policy.acquire(req(), RES, FAR)  # would need 0.4 s > max_wait
    with pytest.raises(QuotaExceeded):
        policy.acquire(req(), RES, clock.now + 0.05)  # the deadline comes before the token
    snap = policy.snapshot()
    assert snap["waited"] == 3 and snap["rejected"] == 2 and snap["admitted"] == 4
    assert snap["callers"]["alice"]["waiting"] == 0


def test_deadline_bounds_the_wait() -> None:
    clock = FakeClock()
    policy = TokenBucketPolicy(RateConfig(rate=1, mode="wait", max_wait=10), clock=clock,
                               sleep=clock.sleep)
    policy.acquire(req(), RES, FAR)
    with pytest.raises(QuotaExceeded):
        policy.acquire(req(), RES, clock.now + 0.5)  # next token in 1 s
    policy.acquire(req(), RES, clock.now + 1.5)
    assert clock.sleeps == [1.0]


def test_nested_executions_pass_through() -> None:
    policy = TokenBucketPolicy(RateConfig(rate=1, burst=1), clock=FakeClock())
    policy.acquire(req(), RES, FAR)
    for _ in range(5):
        assert policy.acquire(req(parent_id="e1", depth=1), RES, FAR) is None


@pytest.mark.parametrize(("cfg", "key"), [
    (RateConfig(rate=-1), "rate"),
    (RateConfig(rate=float("nan")), "rate"),
    (RateConfig(rate=5, burst=0.5), "burst"),
    (RateConfig(rate=5, mode="sometimes"), "mode"),  # type: ignore[arg-type]
    (RateConfig(rate=5, max_wait=-1), "max_wait"),
    (RateConfig(callers={"al": RateOverride(rate=-2)}), "callers.al.rate"),
])
def test_bad_config_names_the_key(cfg: RateConfig, key: str) -> None:
    with pytest.raises(InvalidRequest, match=rf"\[quota-rate\]\.{key}"):
        TokenBucketPolicy(cfg)


def test_table_of_buckets_stays_bounded() -> None:
    clock = FakeClock()
    policy = TokenBucketPolicy(RateConfig(rate=1000, burst=1), clock=clock)
    for i in range(25_000):
        policy.acquire(req(f"u{i}"), RES, FAR)
        clock.now += 0.0001
    assert len(policy._buckets) < 20_000


def test_real_threads_wait_fairly_and_hold_the_rate() -> None:
    rate = 40.0
    policy = TokenBucketPolicy(RateConfig(rate=rate, burst=1, mode="wait", max_wait=5))
    policy.acquire(req(), RES, FAR)  # empty the bucket
    order: list[int] = []
    starts: list[float] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        policy.acquire(req(), RES, time.monotonic() + 5)
        with lock:
            order.append(i)
            starts.append(time.monotonic())

    threads = []
    for i in range(8):
        thread = threading.Thread(target=worker, args=(i,))
        thread.start()
        threads.append(thread)
        # wait for each arrival (waiting, or already through), so arrival order is known
        while policy.snapshot()["callers"]["alice"]["waiting"] + len(order) < i + 1:
            time.sleep(0.001)
    for thread in threads:
        thread.join(5)
    assert order == list(range(8))
    # Eight tokens at 40/s after an empty bucket take at least 7/40 s between first and last.
    assert starts[-1] - starts[0] >= 7 / rate - 0.01
    assert policy.snapshot()["callers"]["alice"]["waiting"] == 0


def test_may_wait_follows_the_configured_modes() -> None:
    from coordinator_core.services.quota.concurrency import ConcurrencyConfig, ConcurrencyPolicy
    from coordinator_core.services.quota.fee import FeeBudgetPolicy, FeeConfig

    assert not TokenBucketPolicy(RateConfig()).may_wait()  # unlimited
    assert not TokenBucketPolicy(RateConfig(rate=5)).may_wait()  # reject is the default
    assert TokenBucketPolicy(RateConfig(rate=5, mode="wait")).may_wait()
    assert TokenBucketPolicy(RateConfig(
        callers={"batch": RateOverride(rate=1, mode="wait")})).may_wait()
    assert not ConcurrencyPolicy(ConcurrencyConfig()).may_wait()  # unlimited
    assert ConcurrencyPolicy(ConcurrencyConfig(limit=2)).may_wait()  # wait is the default
    assert not ConcurrencyPolicy(ConcurrencyConfig(overall=4, mode="reject")).may_wait()
    assert not FeeBudgetPolicy(FeeConfig(budget=100)).may_wait()

"""The pipeline end to end with the echo engine and the real SQLite store."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from coordinator_core import Coordinator, ExecutionRequest, Status
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import (
    EngineRecord,
    EngineResult,
    ErrorKind,
    QuotaExceeded,
    QuotaPolicyRecord,
    ValidatorRecord,
    Verdict,
    hookimpl,
)

Make = Callable[..., Coordinator]


def _records(coord: Coordinator, execution_id: str) -> list[Any]:
    return [r for r in coord.store.audit_records() if r.execution_id == execution_id]


def test_success_commits_effects_with_one_audit_record(echo_coordinator: Coordinator) -> None:
    rid = echo_coordinator.deploy(b"code", "echo", owner="alice")
    result = echo_coordinator.execute(
        ExecutionRequest(resource_id=rid, caller="bob", entry="write", input=b"v1")
    )
    assert result.status is Status.SUCCEEDED and result.error is None
    assert result.fee_used == 3 and result.engine == "echo"
    assert echo_coordinator.state(rid, b"last") == b"v1"
    assert [e["payload"] for e in echo_coordinator.events(rid)] == [b"v1"]
    (record,) = _records(echo_coordinator, result.execution_id)
    assert record.status == "succeeded" and record.effect_digest and record.caller == "bob"


def test_engine_bug_is_engine_error_and_writes_nothing(echo_coordinator: Coordinator) -> None:
    rid = echo_coordinator.deploy(b"code", "echo")
    result = echo_coordinator.execute(ExecutionRequest(resource_id=rid, entry="fail"))
    assert result.status is Status.FAILED
    assert result.error is not None and result.error.kind is ErrorKind.ENGINE_ERROR
    assert "ValueError" in result.error.message and result.effects == ()
    assert echo_coordinator.state(rid) == {}
    assert [r.status for r in _records(echo_coordinator, result.execution_id)] == ["failed"]


@pytest.mark.parametrize(
    ("request_fields", "kind", "needle"),
    [
        ({"resource_id": "0" * 64}, ErrorKind.NOT_FOUND, "no resource"),
        ({"fee_limit": -5}, ErrorKind.INVALID_REQUEST, "fee_limit"),
        ({"fee_limit": 1.5}, ErrorKind.INVALID_REQUEST, "fee_limit"),
        ({"timeout": 0}, ErrorKind.INVALID_REQUEST, "timeout"),
        ({"caller": ""}, ErrorKind.INVALID_REQUEST, "caller"),
        ({"entry": 7}, ErrorKind.INVALID_REQUEST, "entry"),
        ({"parent_id": "ex-forged"}, ErrorKind.INVALID_REQUEST, "nested executions only"),
        ({"depth": 1}, ErrorKind.INVALID_REQUEST, "nested executions only"),
    ],
)
def test_bad_requests_are_rejected_and_audited(
    echo_coordinator: Coordinator, request_fields: dict[str, Any], kind: ErrorKind, needle: str
) -> None:
    rid = echo_coordinator.deploy(b"code", "echo")
    result = echo_coordinator.execute(ExecutionRequest(**{"resource_id": rid, **request_fields}))
    assert result.status is Status.REJECTED
    assert result.error is not None and result.error.kind is kind
    assert needle in result.error.message
    assert len(_records(echo_coordinator, result.execution_id)) == 1


def test_fee_exhausted_reports_fee_used(echo_coordinator: Coordinator) -> None:
    rid = echo_coordinator.deploy(b"code", "echo")
    result = echo_coordinator.execute(
        ExecutionRequest(resource_id=rid, entry="write", input=b"x" * 50, fee_limit=10)
    )
    assert result.status is Status.FAILED and result.error is not None
    assert result.error.kind is ErrorKind.FEE_EXHAUSTED and result.fee_used == 10
    assert echo_coordinator.state(rid) == {}


def test_timeout_through_the_watchdog(echo_coordinator: Coordinator) -> None:
    rid = echo_coordinator.deploy(b"code", "echo")
    started = time.monotonic()
    result = echo_coordinator.execute(
        ExecutionRequest(resource_id=rid, entry="sleep", args=(5,), timeout=0.2)
    )
    assert result.status is Status.TIMED_OUT
    assert result.error is not None and result.error.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 0.5
    assert result.fee_used >= 150  # charged for the time it ran


def test_timeout_is_capped_by_max_execution_timeout(make_coordinator: Make) -> None:
    coord = make_coordinator(
        EchoPlugin(), overrides={"coordinator": {"max_execution_timeout": 0.1}}
    )
    rid = coord.deploy(b"code", "echo")
    result = coord.execute(ExecutionRequest(resource_id=rid, entry="sleep", args=(5,), timeout=60))
    assert result.status is Status.TIMED_OUT and result.duration < 0.5


def test_cancel_running_and_status_through_its_life(echo_coordinator: Coordinator) -> None:
    rid = echo_coordinator.deploy(b"code", "echo")
    handle = echo_coordinator.submit(ExecutionRequest(resource_id=rid, entry="sleep", args=(5,)))
    _wait_for(lambda: echo_coordinator.status(handle.execution_id).status is Status.RUNNING)
    started = time.monotonic()
    assert echo_coordinator.cancel(handle.execution_id)
    result = handle.result(timeout=2)
    assert time.monotonic() - started < 0.1
    assert result.status is Status.CANCELLED and result.error is not None
    assert result.error.kind is ErrorKind.CANCELLED
    assert echo_coordinator.status(handle.execution_id).status is Status.CANCELLED
    assert not echo_coordinator.cancel(handle.execution_id)  # already finished


def test_cancel_queued_never_runs(make_coordinator: Make) -> None:
    plugin = EchoPlugin()
    coord = make_coordinator(plugin, overrides={"coordinator": {"workers": 1}})
    rid = coord.deploy(b"code", "echo")
    blocker = coord.submit(ExecutionRequest(resource_id=rid, entry="sleep", args=(0.3,)))
    queued = coord.submit(ExecutionRequest(resource_id=rid, input=b"never"))
    assert coord.status(queued.execution_id).status is Status.QUEUED
    assert coord.cancel(queued.execution_id)
    assert queued.result(timeout=1).status is Status.CANCELLED
    assert blocker.result(timeout=2).status is Status.SUCCEEDED
    assert plugin.engine.calls == 1  # only the blocker ran
    assert [r.status for r in _records(coord, queued.execution_id)] == ["cancelled"]


def test_status_after_retention_comes_from_the_log(make_coordinator: Make) -> None:
    coord = make_coordinator(EchoPlugin(), overrides={"coordinator": {"ledger_retention": 1}})
    rid = coord.deploy(b"code", "echo")
    first = coord.execute(ExecutionRequest(resource_id=rid, input=b"a"))
    coord.execute(ExecutionRequest(resource_id=rid, input=b"b"))
    status = coord.status(first.execution_id)
    assert status.source == "log" and status.status is Status.SUCCEEDED and status.fee_used == 2


def test_status_within_retention_comes_from_the_ledger_s_outcome(
        echo_coordinator: Coordinator) -> None:
    """A finished execution's status comes from the ledger, which keeps its outcome only:
    not the request, token and output of every one of the last ``retention`` executions."""
    coord = echo_coordinator
    rid = coord.deploy(b"code", "echo")
    ok = coord.execute(ExecutionRequest(resource_id=rid, input=b"abc"))
    failed = coord.execute(ExecutionRequest(resource_id=rid, entry="fail"))
    status = coord.status(ok.execution_id)
    assert (status.source, status.status, status.resource_id, status.caller, status.fee_used,
            status.duration, status.error_kind) == ("ledger", Status.SUCCEEDED, rid,
                                                    ok.caller, ok.fee_used, ok.duration, None)
    status = coord.status(failed.execution_id)
    assert failed.error is not None
    assert (status.status, status.error_kind, status.message) == (
        Status.FAILED, failed.error.kind.value, failed.error.message)
    assert not coord.cancel(ok.execution_id)  # finished: nothing to cancel
    assert all(type(kept) is tuple for kept in coord.ledger.finished.values())
    assert not coord.ledger.active


def test_status_of_an_execution_closing_right_now_is_found(echo_coordinator: Coordinator,
                                                          monkeypatch: Any) -> None:
    """``close`` sets the result, adds the outcome to ``finished``, then drops the entry
    from ``active``; ``status`` asked at any point in between finds it in the ledger."""
    coord = echo_coordinator
    rid = coord.deploy(b"code", "echo")
    seen: list[Any] = []
    ledger = coord.ledger
    close = type(ledger).close

    def observed_close(self: Any, entry: Any, result: Any) -> None:
        entry.result = result  # the first step of close, the rest not yet done
        seen.append(coord.status(entry.execution_id))
        close(self, entry, result)

    monkeypatch.setattr(type(ledger), "close", observed_close)
    result = coord.execute(ExecutionRequest(resource_id=rid, input=b"x"))
    assert [(s.source, s.status) for s in seen] == [("ledger", Status.SUCCEEDED)]
    assert seen[0].fee_used == result.fee_used


def test_execute_async(echo_coordinator: Coordinator) -> None:
    rid = echo_coordinator.deploy(b"code", "echo")

    async def run() -> list[Any]:
        requests = [ExecutionRequest(resource_id=rid, input=bytes([i])) for i in range(20)]
        return await asyncio.gather(*(echo_coordinator.execute_async(r) for r in requests))

    results = asyncio.run(run())
    assert [r.output for r in results] == [bytes([i]) for i in range(20)]


class _Gate:
    """A validator rejecting one caller; cacheable, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def validate_execution(self, request: Any, resource: Any) -> Verdict | None:
        self.calls += 1
        return Verdict.reject("mallory is blocked") if request.caller == "mallory" else None


def test_security_rejection_names_the_validator_and_caches(make_coordinator: Make) -> None:
    gate = _Gate()

    class Plugin:
        @hookimpl
        def coordinator_register_validators(self, config: Any) -> list[ValidatorRecord]:
            return [ValidatorRecord(name="gate", validator=gate, cacheable=True)]

    coord = make_coordinator(EchoPlugin(), Plugin())
    rid = coord.deploy(b"code", "echo")
    for _ in range(3):
        bad = coord.execute(ExecutionRequest(resource_id=rid, caller="mallory", entry="write"))
        good = coord.execute(ExecutionRequest(resource_id=rid, caller="alice"))
    assert bad.status is Status.REJECTED and bad.error is not None
    assert bad.error.kind is ErrorKind.SECURITY_REJECTED and bad.error.source == "gate"
    assert good.ok and gate.calls == 2  # once per (resource, caller)
    (record,) = _records(coord, bad.execution_id)
    assert record.error_kind == "security_rejected" and record.detail["source"] == "gate"
    assert coord.state(rid) == {}


def test_risk_scores_are_weighted(make_coordinator: Make) -> None:
    class Risky:
        def validate_execution(self, request: Any, resource: Any) -> Verdict:
            return Verdict(score=0.4)

    class Plugin:
        @hookimpl
        def coordinator_register_validators(self, config: Any) -> list[ValidatorRecord]:
            return [
                ValidatorRecord(name="risk-a", validator=Risky(), weight=1.0),
                ValidatorRecord(name="risk-b", validator=Risky(), weight=1.5),
            ]

    coord = make_coordinator(EchoPlugin(), Plugin())
    rid = coord.deploy(b"code", "echo")
    result = coord.execute(ExecutionRequest(resource_id=rid))
    assert result.error is not None and "risk score 1.00" in result.error.message
    lenient = make_coordinator(
        EchoPlugin(), Plugin(), overrides={"coordinator": {"risk_threshold": 2.0}}
    )
    rid = lenient.deploy(b"code", "echo")
    assert lenient.execute(ExecutionRequest(resource_id=rid)).ok


class _Counting:
    """A quota policy admitting up to ``limit`` at once, counting acquire/release."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self.held = 0
        self.acquired = 0
        self.released: list[int] = []
        self.lock = threading.Lock()

    def acquire(self, request: Any, resource: Any, deadline: float) -> str:
        with self.lock:
            if self.held >= self.limit:
                raise QuotaExceeded(f"more than {self.limit} at once")
            self.held += 1
            self.acquired += 1
        return "lease"

    def release(self, lease: str, fee_used: int) -> None:
        with self.lock:
            self.held -= 1
            self.released.append(fee_used)


def _quota_plugin(policy: _Counting) -> Any:
    class Plugin:
        @hookimpl
        def coordinator_register_quota_policies(self, config: Any) -> list[QuotaPolicyRecord]:
            return [QuotaPolicyRecord(name="counting", policy=policy)]

    return Plugin()


def test_quota_released_on_every_path(make_coordinator: Make) -> None:
    policy = _Counting()
    coord = make_coordinator(EchoPlugin(), _quota_plugin(policy))
    rid = coord.deploy(b"code", "echo")
    coord.execute(ExecutionRequest(resource_id=rid, input=b"ok"))
    coord.execute(ExecutionRequest(resource_id=rid, entry="fail"))
    coord.execute(ExecutionRequest(resource_id=rid, entry="sleep", args=(5,), timeout=0.05))
    coord.execute(ExecutionRequest(resource_id=rid, input=b"x" * 20, fee_limit=3))
    handle = coord.submit(ExecutionRequest(resource_id=rid, entry="sleep", args=(5,)))
    _wait_for(lambda: policy.acquired == 5)
    coord.cancel(handle.execution_id)
    handle.result(timeout=2)
    assert policy.held == 0 and policy.acquired == len(policy.released) == 5
    assert policy.released[0] == 3  # charged with the fee used


def test_quota_rejection(make_coordinator: Make) -> None:
    coord = make_coordinator(EchoPlugin(), _quota_plugin(_Counting(limit=0)))
    rid = coord.deploy(b"code", "echo")
    result = coord.execute(ExecutionRequest(resource_id=rid))
    assert result.status is Status.REJECTED and result.error is not None
    assert result.error.kind is ErrorKind.QUOTA_EXCEEDED and result.error.source == "counting"


def test_failing_sinks_never_change_the_result(make_coordinator: Make, caplog: Any) -> None:
    from loguru import logger

    from coordinator_hookspecs import AuditSinkRecord, MetricsSinkRecord

    class Broken:
        def record(self, report: Any) -> None:
            raise RuntimeError("metrics backend down")

        def emit(self, record: Any) -> None:
            raise RuntimeError("audit backend down")

    class Plugin:
        @hookimpl
        def coordinator_register_metrics_sinks(self, config: Any) -> list[MetricsSinkRecord]:
            return [MetricsSinkRecord(name="broken-metrics", sink=Broken())]

        @hookimpl
        def coordinator_register_audit_sinks(self, config: Any) -> list[AuditSinkRecord]:
            return [AuditSinkRecord(name="broken-audit", sink=Broken())]

    messages: list[str] = []
    handler = logger.add(messages.append, level="WARNING", format="{message}")
    try:
        coord = make_coordinator(EchoPlugin(), Plugin())
        rid = coord.deploy(b"code", "echo")
        results = [coord.execute(ExecutionRequest(resource_id=rid, input=b"hi")) for _ in range(3)]
    finally:
        logger.remove(handler)
    assert all(r.ok and r.output == b"hi" for r in results)
    assert all(len(_records(coord, r.execution_id)) == 1 for r in results)
    assert sum("broken-metrics" in m for m in messages) == 1
    assert sum("broken-audit" in m for m in messages) == 1


def test_metrics_snapshot(echo_coordinator: Coordinator) -> None:
    rid = echo_coordinator.deploy(b"code", "echo")
    for i in range(10):
        echo_coordinator.execute(ExecutionRequest(resource_id=rid, input=b"x" * i))
    echo_coordinator.execute(ExecutionRequest(resource_id=rid, entry="fail"))
    snapshot = echo_coordinator.metrics()
    assert snapshot["executions"] == 11
    assert snapshot["by_status"] == {"succeeded": 10, "failed": 1}
    assert snapshot["by_error_kind"] == {"engine_error": 1}
    assert snapshot["engines"]["echo"]["executions"] == 11
    assert snapshot["fee_used"] == sum(range(1, 11))
    assert {"validation", "selection", "execution", "commit"} <= set(snapshot["stages"])
    assert snapshot["latency"]["p99_ms"] >= snapshot["latency"]["p50_ms"] > 0


class _Caller:
    """An engine whose entry calls another resource through ``ctx.invoke``."""

    def execute(self, ctx: Any) -> EngineResult:
        target = ctx.request.input.decode()
        if ctx.invoke is None:
            return EngineResult(output=b"depth limit", fee_used=1)
        child = ctx.invoke(
            ExecutionRequest(
                resource_id=target, caller=ctx.request.caller, entry="write", input=b"nested"
            )
        )
        return EngineResult(output=child.output, fee_used=1 + child.fee_used, effects=child.effects)


def test_nested_execution_links_parent_and_shares_fate(make_coordinator: Make) -> None:
    class Plugin:
        @hookimpl
        def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
            return [EngineRecord(name="caller", engine=_Caller(), resource_types={"caller"})]

    coord = make_coordinator(EchoPlugin(), Plugin(), overrides={"coordinator": {"max_depth": 1}})
    echo = coord.deploy(b"echo", "echo")
    caller = coord.deploy(echo.encode(), "caller")
    parent = coord.execute(ExecutionRequest(resource_id=caller, caller="bob", input=echo.encode()))
    assert parent.ok and parent.fee_used == 1 + 7
    assert coord.state(echo, b"last") == b"nested"  # committed with the parent
    children = [r for r in coord.store.audit_records() if r.parent_id == parent.execution_id]
    assert len(children) == 1 and children[0].status == "succeeded"
    # at the depth limit, invoke is not offered
    deeper = coord.execute(ExecutionRequest(resource_id=caller, input=caller.encode()))
    assert deeper.output == b"depth limit"


def _wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)

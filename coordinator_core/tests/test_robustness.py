"""Misbehaving plugins and racing callers: every execution still ends with one result and one
audit record, and the coordinator keeps working. (Cases found in review.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from coordinator_core import Coordinator, ExecutionRequest, Status
from coordinator_core.services.security.integrator import SecurityIntegrator
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import (
    AccessPolicy,
    Effect,
    EngineError,
    EngineRecord,
    EngineResult,
    ErrorKind,
    InvalidRequest,
    ResourceInfo,
    Timeout,
    ValidatorRecord,
    hookimpl,
)

Make = Callable[..., Coordinator]


class Rogue:
    """An engine whose entries misbehave on purpose."""

    def execute(self, ctx: Any) -> Any:
        entry = ctx.request.entry
        if entry == "bad-effect":
            return EngineResult(effects=(Effect("state.set", ctx.resource.id, "k", b"v"),))  # type: ignore[arg-type]
        if entry == "bad-fee":
            return EngineResult(fee_used=None)  # type: ignore[arg-type]
        if entry == "not-a-result":
            return {"output": 1}
        if entry == "raising-callback":
            def boom(_reason: ErrorKind) -> None:
                raise RuntimeError("callback bug")

            ctx.token.on_cancel(boom)
            while ctx.token.reason is None:
                time.sleep(0.002)
            raise Timeout("stopped", fee_used=1)
        if entry == "deaf":  # ignores cancel and deadline for a while, then succeeds
            time.sleep(0.3)
            return EngineResult(output=b"done", fee_used=1,
                                effects=(Effect("state.set", ctx.resource.id, b"k", b"v"),))
        return EngineResult(output=b"ok", fee_used=1)

    def inspect(self, deploy: Any) -> dict[str, Any]:
        if deploy.code == b"explode":
            raise ValueError("inspect bug")
        return {}


class RoguePlugin:
    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        return [EngineRecord(name="rogue", engine=Rogue(), resource_types={"rogue"})]


def _finals(coord: Coordinator, execution_id: str) -> list[Any]:
    return [r for r in coord.store.audit_records()
            if r.execution_id == execution_id and r.record_kind == "execution"]


@pytest.mark.parametrize("entry", ["bad-effect", "bad-fee", "not-a-result"])
def test_malformed_engine_results_are_engine_errors(make_coordinator: Make, entry: str) -> None:
    coord = make_coordinator(RoguePlugin())
    rid = coord.deploy(b"x", "rogue")
    handle = coord.submit(ExecutionRequest(resource_id=rid, entry=entry))
    result = handle.result(timeout=5)
    assert result.status is Status.FAILED and result.error is not None
    assert result.error.kind is ErrorKind.ENGINE_ERROR and "rogue" in result.error.message
    assert len(_finals(coord, result.execution_id)) == 1
    assert coord.state(rid) == {} and not coord.ledger.active


def test_a_raising_cancel_callback_does_not_stop_the_watchdog(make_coordinator: Make) -> None:
    coord = make_coordinator(RoguePlugin(), EchoPlugin())
    rogue = coord.deploy(b"x", "rogue")
    first = coord.execute(ExecutionRequest(resource_id=rogue, entry="raising-callback",
                                           timeout=0.1))
    assert first.status is Status.TIMED_OUT
    echo = coord.deploy(b"y", "echo")
    started = time.monotonic()
    second = coord.execute(ExecutionRequest(resource_id=echo, entry="sleep", args=(5,),
                                            timeout=0.2))
    assert second.status is Status.TIMED_OUT and time.monotonic() - started < 1.0


def test_cancel_wins_over_an_engine_that_ignores_it(make_coordinator: Make) -> None:
    coord = make_coordinator(RoguePlugin())
    rid = coord.deploy(b"x", "rogue")
    handle = coord.submit(ExecutionRequest(resource_id=rid, entry="deaf"))
    time.sleep(0.1)
    assert coord.cancel(handle.execution_id)
    result = handle.result(timeout=5)
    assert result.status is Status.CANCELLED and result.effects == ()
    assert coord.state(rid) == {}


def test_a_queued_execution_times_out_without_waiting_for_a_worker(make_coordinator: Make) -> None:
    coord = make_coordinator(EchoPlugin(), overrides={"coordinator": {"workers": 1}})
    rid = coord.deploy(b"x", "echo")
    blocker = coord.submit(ExecutionRequest(resource_id=rid, entry="sleep", args=(1.5,)))
    started = time.monotonic()
    queued = coord.submit(ExecutionRequest(resource_id=rid, timeout=0.2))
    result = queued.result(timeout=5)
    assert result.status is Status.TIMED_OUT and time.monotonic() - started < 1.0
    assert blocker.result(timeout=5).ok


def test_a_failing_inspect_is_a_typed_audited_deploy_error(make_coordinator: Make) -> None:
    coord = make_coordinator(RoguePlugin())
    with pytest.raises(EngineError, match="inspect bug"):
        coord.deploy(b"explode", "rogue")
    (record,) = [r for r in coord.store.audit_records() if r.record_kind == "deploy"]
    assert record.status == "rejected" and record.error_kind == "engine_error"


def test_a_hook_returning_a_bare_record_drops_only_its_plugin(make_coordinator: Make) -> None:
    class Sloppy:
        __name__ = "sloppy"

        @hookimpl
        def coordinator_register_validators(self, config: Any) -> Any:
            return ValidatorRecord(name="sloppy", validator=object())  # not in a list

    coord = make_coordinator(EchoPlugin(), Sloppy())
    assert {p["name"]: p["status"] for p in coord.plugins()}["sloppy"] == "failed"
    rid = coord.deploy(b"x", "echo")
    assert coord.execute(ExecutionRequest(resource_id=rid)).ok


def test_something_that_is_no_request_is_refused_at_once(echo_coordinator: Coordinator) -> None:
    with pytest.raises(InvalidRequest, match="expected an ExecutionRequest"):
        echo_coordinator.execute(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="expected an ExecutionRequest"):
        echo_coordinator.submit({"resource_id": "x"})  # type: ignore[arg-type]


def test_cached_verdicts_belong_to_the_policy_they_were_made_under() -> None:
    calls: list[str] = []

    class Gate:
        def validate_execution(self, request: Any, resource: Any) -> None:
            calls.append(request.caller)

    integrator = SecurityIntegrator([ValidatorRecord(name="gate", validator=Gate(),
                                                     cacheable=True)])
    old = ResourceInfo(id="r" * 64, type="echo")
    request = ExecutionRequest(resource_id=old.id, caller="mallory")
    integrator.check_execution(request, old)
    integrator.check_execution(request, old)
    assert calls == ["mallory"]  # cached
    new = attrs.evolve(old, policy=AccessPolicy(public=False))
    integrator.check_execution(request, new)
    assert calls == ["mallory", "mallory"]  # a verdict made under the old policy is not reused


def test_cancelling_the_awaiting_task_cancels_the_execution(
    echo_coordinator: Coordinator,
) -> None:
    import asyncio

    rid = echo_coordinator.deploy(b"x", "echo")

    async def run() -> None:
        task = asyncio.ensure_future(echo_coordinator.execute_async(
            ExecutionRequest(resource_id=rid, entry="sleep", args=(5,))))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(run())
    while echo_coordinator.ledger.active and time.monotonic() - started < 2:
        time.sleep(0.01)
    finals = [r for r in echo_coordinator.store.audit_records() if r.record_kind == "execution"]
    assert [r.status for r in finals] == ["cancelled"]
    assert time.monotonic() - started < 2  # not the 5 s the engine was asked to sleep


def test_close_cancels_executions_still_running_on_other_threads(make_coordinator: Make) -> None:
    import threading

    coord = make_coordinator(EchoPlugin())
    rid = coord.deploy(b"x", "echo")
    results: list[Any] = []
    caller = threading.Thread(target=lambda: results.append(coord.execute(
        ExecutionRequest(resource_id=rid, entry="sleep", args=(10,)))))
    caller.start()
    time.sleep(0.1)
    started = time.monotonic()
    coord.close()
    caller.join(5)
    assert time.monotonic() - started < 2
    assert results and results[0].status is Status.CANCELLED

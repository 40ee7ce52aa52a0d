"""submit() back-pressure: past ``[coordinator] max_queued`` waiting executions a new one is
refused at once, recorded like any refusal, instead of growing the queue without bound."""

from __future__ import annotations

import time
from collections.abc import Callable

from coordinator_core import Coordinator, ExecutionRequest, Status
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import ErrorKind


def test_a_full_queue_refuses_at_once_and_records_it(make_coordinator: Callable[..., Coordinator]
                                                      ) -> None:
    coord = make_coordinator(EchoPlugin(), overrides={
        "coordinator": {"workers": 1, "max_queued": 2}})
    rid = coord.deploy(b"echo resource", "echo")

    def sleeper(seconds: float) -> ExecutionRequest:
        return ExecutionRequest(resource_id=rid, caller="c", entry="sleep", args=(seconds,))

    running = coord.submit(sleeper(0.4))
    deadline = time.monotonic() + 5
    while coord.status(running.execution_id).status is not Status.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    queued = [coord.submit(sleeper(0.0)) for _ in range(2)]
    started = time.monotonic()
    refused = coord.submit(sleeper(0.0))
    result = refused.result(timeout=0.2)  # already decided: no worker was involved
    assert time.monotonic() - started < 0.2
    assert result.status is Status.REJECTED and result.error is not None
    assert result.error.kind is ErrorKind.QUOTA_EXCEEDED
    assert "max_queued" in result.error.message and result.error.source == "coordinator"
    records = [r for r in coord.store.audit_records() if r.execution_id == refused.execution_id]
    assert [(r.status, r.error_kind) for r in records] == [("rejected", "quota_exceeded")]
    # Nothing was lost: the queued ones run, and once the queue drains submit accepts again.
    assert running.result(timeout=5).ok
    assert all(handle.result(timeout=5).ok for handle in queued)
    assert coord.submit(sleeper(0.0)).result(timeout=5).ok

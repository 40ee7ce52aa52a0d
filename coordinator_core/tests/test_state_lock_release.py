"""When a resource's state lock is released: at the commit of an execution that writes, at
once for one that writes nothing (its reads are done, so waiting for its audit record's
commit would only serialise executions that cannot conflict)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from coordinator_core import Coordinator, ExecutionRequest, Status


def _hold_first_commit(coord: Coordinator) -> tuple[threading.Event, threading.Event]:
    """Make the next ``store.finish`` wait until released; returns (entered, release)."""
    entered, release = threading.Event(), threading.Event()
    finish = coord.store.finish
    calls = []

    def held(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            assert release.wait(10)
        return finish(*args, **kwargs)

    coord.store.finish = held  # type: ignore[method-assign]
    return entered, release


@pytest.mark.parametrize("first_entry", ["echo", "write"])
def test_lock_held_until_commit_only_for_executions_that_write(
    echo_coordinator: Coordinator, first_entry: str
) -> None:
    coord = echo_coordinator
    rid = coord.deploy(b"code", "echo", capabilities=["storage"])
    entered, release = _hold_first_commit(coord)
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(coord.execute(
        ExecutionRequest(resource_id=rid, entry=first_entry, input=b"a"))))
    first.start()
    try:
        assert entered.wait(10)  # the first execution is inside its commit
        second = coord.execute(ExecutionRequest(resource_id=rid, entry="write", input=b"b",
                                                timeout=0.3))
    finally:
        release.set()
        first.join(10)
    assert results[0].status is Status.SUCCEEDED
    if first_entry == "echo":
        # Nothing to write: the lock was free while its record committed.
        assert second.status is Status.SUCCEEDED
        assert coord.state(rid, b"last") == b"b"
    else:
        # Its write was not committed yet: the next execution waited for it, here past
        # its deadline, and read nothing stale.
        assert second.status is Status.TIMED_OUT
        assert "waiting for resource" in second.error.message
        assert coord.state(rid, b"last") == b"a"

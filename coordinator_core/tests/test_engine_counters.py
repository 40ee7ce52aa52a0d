"""``BoundEngine.run``: the dispatcher's counters of an engine, kept by the engine's binding
itself (in flight while it runs, executions and busy time after, also when it raises)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from coordinator_core.engines.dispatcher import Dispatcher
from coordinator_hookspecs import EngineRecord, EngineResult


class Sleeper:
    def __init__(self) -> None:
        self.bound: Any = None
        self.inflight_seen: list[int] = []

    def execute(self, ctx: Any) -> EngineResult:
        self.inflight_seen.append(self.bound.inflight)
        time.sleep(0.02)
        if ctx == "boom":
            raise RuntimeError("engine bug")
        return EngineResult(output=ctx, fee_used=1)


def test_run_counts_executions_in_flight_and_busy_time_also_when_the_engine_raises() -> None:
    engine = Sleeper()
    dispatcher = Dispatcher([EngineRecord(name="s", engine=engine, resource_types={"x"})])
    bound = engine.bound = dispatcher.engine("s")
    assert bound.run("ok").output == "ok"
    with pytest.raises(RuntimeError, match="engine bug"):
        bound.run("boom")
    assert engine.inflight_seen == [1, 1]
    assert bound.inflight == 0 and bound.executions == 2
    assert 0.04 <= bound.busy_seconds < 1.0
    assert dispatcher.utilisation()["s"]["executions"] == 2

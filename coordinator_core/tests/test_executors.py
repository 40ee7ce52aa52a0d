"""Executors are records of the hook ``coordinator_register_executors``: ``threads`` and
``processes`` are built in, a plugin adds its own, and an unknown name is refused at open
naming the installed ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import ExecutorRecord, InvalidRequest, hookimpl


class _Counting:
    """Stands in for the echo engine: counts the executions it forwards."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def execute(self, ctx: Any) -> Any:
        self.calls += 1
        return self.inner.execute(ctx)


class _Plugin:
    def __init__(self) -> None:
        self.stand_in: _Counting | None = None

    @hookimpl
    def coordinator_register_executors(self, config: Any) -> list[ExecutorRecord]:
        return [ExecutorRecord(name="counting", install=self.install)]

    def install(self, coordinator: Any) -> tuple[str, ...]:
        dispatcher = coordinator.dispatcher
        self.stand_in = _Counting(dispatcher.engine("echo").engine)
        dispatcher.replace_engine("echo", self.stand_in, executor="counting")
        return ("echo",)


def test_unknown_executor_is_refused_naming_the_installed_ones(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as caught:
        Coordinator.open(data_dir=tmp_path, overrides={"dispatch": {"executor": "nowhere"}})
    message = caught.value.message
    assert "'nowhere' is not installed" in message
    assert "threads" in message and "processes" in message


def test_a_plugin_executor_is_installed_and_runs_the_engine(tmp_path: Path) -> None:
    plugin = _Plugin()
    with Coordinator.open(data_dir=tmp_path, plugins=[EchoPlugin(), plugin], entry_points=False,
                          overrides={"dispatch": {"executor": "counting"}}) as coord:
        rid = coord.deploy(b"echo", "echo")
        result = coord.execute(ExecutionRequest(resource_id=rid, input=b"hi"))
        assert result.ok, result.error
        assert plugin.stand_in is not None and plugin.stand_in.calls == 1
        assert coord.metrics()["engines"]["echo"]["executor"] == "counting"
        executors = {r.name for r in coord.registry.executors}
        assert {"threads", "processes", "counting"} <= executors

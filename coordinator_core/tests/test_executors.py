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


class _RecipeBackend:
    """A ``RemoteEngines`` that runs the engines it rebuilt from the coordinator's pickled
    recipe, the way a cluster worker would (here on the calling thread)."""

    def __init__(self, recipe: Any) -> None:
        import pickle

        self.recipe = pickle.loads(pickle.dumps(recipe))
        self.engines, _registry = self.recipe.load_engines()
        self.reader = self.recipe.open_state_reader()
        self.closed = False
        self.start_error: object | None = None
        self.runs = 0

    def run(self, engine: str, ctx: Any) -> Any:
        self.runs += 1
        return self.engines[engine].execute(ctx)

    def holds(self, resource_id: str) -> bool:
        return False

    def stats(self) -> dict[str, Any]:
        return {"runs": self.runs}

    def close(self) -> None:
        self.closed = True
        if self.reader is not None:
            self.reader.close()
        for engine in self.engines.values():
            getattr(engine, "close", lambda: None)()


class _RecipePlugin:
    def __init__(self) -> None:
        self.backend: _RecipeBackend | None = None

    @hookimpl
    def coordinator_register_executors(self, config: Any) -> list[ExecutorRecord]:
        return [ExecutorRecord(name="recipe", install=self.install)]

    def install(self, coordinator: Any) -> tuple[str, ...]:
        from coordinator_hookspecs import EngineRecipe, RemoteEngines

        recipe = coordinator.engine_recipe(("wasmtime",))
        assert isinstance(recipe, EngineRecipe) and recipe.engines == ("wasmtime",)
        self.backend = _RecipeBackend(recipe)
        assert isinstance(self.backend, RemoteEngines)
        coordinator.run_engines_on(("wasmtime",), self.backend, capacity=3, executor="recipe")
        return ("wasmtime",)


def test_an_executor_runs_engines_rebuilt_from_the_recipe(tmp_path: Path) -> None:
    """The contract an executor plugin uses (``coordinator_hookspecs.executors``): engines
    rebuilt from the pickled ``engine_recipe`` run the coordinator's executions once
    ``run_engines_on`` put the backend behind them; deploy stays on the coordinator's own
    engine, and state and effects go through the coordinator as on threads."""
    from tests.helpers import COUNTER_WAT as COUNTER

    plugin = _RecipePlugin()
    with Coordinator.open(data_dir=tmp_path, plugins=[plugin],
                          overrides={"dispatch": {"executor": "recipe"}}) as coord:
        rid = coord.deploy(COUNTER, "wasm", capabilities=["storage"], source_format="wat")
        for expected in (1, 2, 3):
            result = coord.execute(ExecutionRequest(resource_id=rid))
            assert result.ok, result.error
            assert int.from_bytes(result.output, "little") == expected
        backend = plugin.backend
        assert backend is not None and backend.runs == 3
        engines = coord.metrics()["engines"]["wasmtime"]
        assert engines["executor"] == "recipe" and engines["capacity"] == 3
    assert backend.closed

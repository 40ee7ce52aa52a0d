"""``coordinator serve`` warms every engine before it reports ready, so the first request
does not pay for importing a runtime; a failing warm-up is logged, not fatal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coordinator_core import Coordinator
from coordinator_hookspecs import EngineBase
from coordinator_server.serve import warm_up


class Broken(EngineBase):
    def execute(self, ctx: Any) -> Any:
        raise AssertionError("never run")

    def warm_up(self) -> None:
        raise RuntimeError("no runtime here")


class Registered:
    def __init__(self, engines: dict[str, Any]) -> None:
        self.engines = engines

    def registered(self, kind: str) -> dict[str, Any]:
        assert kind == "engines"
        return self.engines


def test_warm_up_builds_the_lazy_engines(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path) as coordinator:
        engines = coordinator.registered("engines")
        assert not engines["wasmtime"].built
        warm_up(coordinator)
        assert engines["wasmtime"].built


def test_a_failing_warm_up_does_not_stop_the_others(tmp_path: Path) -> None:
    with Coordinator.open(data_dir=tmp_path) as coordinator:
        wasm = coordinator.registered("engines")["wasmtime"]
        warm_up(Registered({"broken": Broken(), "wasmtime": wasm}))
        assert wasm.built

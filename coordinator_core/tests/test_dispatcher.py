"""Engine selection through a real coordinator: several engines serve resource type
``echo``; capability match, strategies, affinity, health, pins and per-engine counts."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from typing import Any

import pytest

from coordinator_core import Coordinator, ExecutionRequest, Status
from coordinator_core.engines.dispatcher import STRATEGIES
from coordinator_hookspecs import (
    DeployRequest,
    EngineError,
    EngineRecord,
    EngineResult,
    ErrorKind,
    ExecutionContext,
    hookimpl,
)


class Engine:
    """An echo engine that says who ran it, remembers what it ran (``holds``), can be made
    unhealthy, and can block until released (to hold load on it)."""

    def __init__(self, name: str, warm_tracking: bool = True) -> None:
        self.name = name
        self.ran: set[str] = set()
        self.sick: Exception | bool | None = None
        self.gate: threading.Event | None = None
        if not warm_tracking:
            self.holds = None  # type: ignore[assignment]

    def inspect(self, deploy: DeployRequest) -> dict[str, Any]:
        prefix, _, _ = deploy.code.partition(b":")
        return {"required_features": [prefix.decode()]} if prefix in (b"gpu", b"fuel") else {}

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        self.ran.add(ctx.resource.id)
        if ctx.request.entry == "hold" and self.gate is not None:
            self.gate.wait(5)
        return EngineResult(output=self.name, fee_used=1)

    def holds(self, resource_id: str) -> bool:
        return resource_id in self.ran

    def health(self) -> bool:
        if isinstance(self.sick, Exception):
            raise self.sick
        return not self.sick


class Engines:
    """Inline plugin: one ``Engine`` per (name, features)."""

    def __init__(self, *specs: tuple[str, set[str]], warm_tracking: bool = True) -> None:
        self.specs = specs
        self.engines = {name: Engine(name, warm_tracking) for name, _ in specs}

    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        return [EngineRecord(name=name, engine=self.engines[name], resource_types={"echo"},
                             features=features) for name, features in self.specs]


THREE: tuple[tuple[str, set[str]], ...] = (("a", {"fuel"}), ("b", set()), ("c", {"fuel", "gpu"}))


def open_three(make: Any, plugin: Engines | None = None, **dispatch: Any) -> Coordinator:
    coord: Coordinator = make(plugin or Engines(*THREE), overrides={"dispatch": dispatch})
    return coord


def run(coord: Coordinator, rid: str, n: int = 1, **fields: Any) -> list[str]:
    out = []
    for _ in range(n):
        result = coord.execute(ExecutionRequest(resource_id=rid, **fields))
        assert result.ok, result.error
        out.append(result.engine or "")
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_never_picks_an_engine_lacking_a_needed_feature(make_coordinator: Any,
                                                        strategy: str) -> None:
    coord = open_three(make_coordinator, strategy=strategy, required_features={"echo": ["fuel"]})
    rid = coord.deploy(b"plain", "echo")
    assert set(run(coord, rid, 30)) <= {"a", "c"}
    # A resource whose inspect() asked for "gpu" narrows the match further, to c alone.
    gpu = coord.deploy(b"gpu:model", "echo")
    assert coord.resource(gpu).meta == {"required_features": ["gpu"]}
    assert set(run(coord, gpu, 10)) == {"c"}
    resource = coord.resource(gpu)
    assert {coord.dispatcher.select(resource).name for _ in range(200)} == {"c"}


def test_no_capable_engine_names_what_was_asked_and_installed(make_coordinator: Any) -> None:
    coord = open_three(make_coordinator, required_features={"echo": ["fuel"]})
    with pytest.raises(EngineError) as info:
        coord.deploy(b"x", "wasm")
    assert "resource type 'wasm'" in info.value.message
    assert "a (echo; features fuel)" in info.value.message
    assert "b (echo; features none)" in info.value.message
    plugin = Engines(("a", {"fuel"}), ("b", set()))
    coord = make_coordinator(plugin, overrides={"dispatch": {"required_features": {
        "echo": ["fuel"]}}})
    gpu = coord.deploy(b"gpu:model", "echo")
    result = coord.execute(ExecutionRequest(resource_id=gpu))
    assert result.status is Status.FAILED and result.error is not None
    assert result.error.kind is ErrorKind.ENGINE_ERROR and result.error.source == "dispatcher"
    assert "with features fuel/gpu" in result.error.message
    assert "installed engines: a (echo; features fuel)" in result.error.message


@pytest.mark.parametrize("warm_tracking", [True, False])
def test_affinity_sends_repeats_of_a_resource_to_the_same_engine(make_coordinator: Any,
                                                                 warm_tracking: bool) -> None:
    plugin = Engines(*THREE, warm_tracking=warm_tracking)
    coord = open_three(make_coordinator, plugin, strategy="affinity")
    rids = [coord.deploy(f"resource {i}".encode(), "echo") for i in range(12)]
    homes: dict[str, str] = {}
    for _round in range(4):
        for rid in rids:
            (engine,) = run(coord, rid)
            assert homes.setdefault(rid, engine) == engine
    # Different resources are spread over the engines rather than piled on one.
    assert len(set(homes.values())) >= 2


def test_affinity_prefers_the_engine_holding_the_resource_warm(make_coordinator: Any) -> None:
    plugin = Engines(*THREE)
    coord = open_three(make_coordinator, plugin, strategy="affinity")
    rid = coord.deploy(b"warm", "echo")
    home = run(coord, rid)[0]
    other = next(n for n in "abc" if n != home)
    for name, engine in plugin.engines.items():  # pretend only `other` has it cached now
        engine.ran = {rid} if name == other else set()
    assert set(run(coord, rid, 5)) == {other}


def test_unhealthy_engine_leaves_rotation_and_returns(make_coordinator: Any) -> None:
    plugin = Engines(*THREE)
    coord = open_three(make_coordinator, plugin, strategy="round_robin", health_interval=0.05)
    rid = coord.deploy(b"x", "echo")
    assert set(run(coord, rid, 6)) == {"a", "b", "c"}
    plugin.engines["b"].sick = RuntimeError("lost its device")
    time.sleep(0.06)
    assert set(run(coord, rid, 12)) == {"a", "c"}
    assert coord.metrics()["engines"]["b"]["healthy"] is False
    plugin.engines["b"].sick = None
    time.sleep(0.06)
    assert "b" in run(coord, rid, 6)
    assert coord.metrics()["engines"]["b"]["healthy"] is True


def test_no_healthy_engine_is_engine_error(make_coordinator: Any) -> None:
    plugin = Engines(*THREE)
    coord = open_three(make_coordinator, plugin, health_interval=60)
    rid = coord.deploy(b"x", "echo")
    for engine in plugin.engines.values():
        engine.sick = True
    result = coord.execute(ExecutionRequest(resource_id=rid))
    assert result.error is not None and result.error.kind is ErrorKind.ENGINE_ERROR
    assert "no healthy engine" in result.error.message and "b (unhealthy)" in result.error.message


def test_least_loaded_avoids_the_busy_engine(make_coordinator: Any) -> None:
    plugin = Engines(("a", set()), ("b", set()))
    coord = open_three(make_coordinator, plugin)
    rid = coord.deploy(b"x", "echo")
    gate = threading.Event()
    for engine in plugin.engines.values():
        engine.gate = gate
    handle = coord.submit(ExecutionRequest(resource_id=rid, entry="hold"))
    bound = {b.name: b for b in coord.dispatcher.engines}
    deadline = time.monotonic() + 5
    while not any(b.inflight for b in bound.values()):
        assert time.monotonic() < deadline
        time.sleep(0.002)
    busy = next(name for name, b in bound.items() if b.inflight)
    idle = "b" if busy == "a" else "a"
    assert set(run(coord, rid, 5)) == {idle}
    gate.set()
    assert handle.result(timeout=5).engine == busy


@pytest.mark.parametrize(("strategy", "expect"), [("round_robin", {"a": 10, "b": 10, "c": 10}),
                                                  ("power_of_two", None)])
def test_spreading_strategies(make_coordinator: Any, strategy: str,
                              expect: dict[str, int] | None) -> None:
    coord = open_three(make_coordinator, strategy=strategy)
    rid = coord.deploy(b"x", "echo")
    counts = Counter(run(coord, rid, 30))
    if expect is not None:
        assert counts == expect
    else:
        assert len(counts) >= 2


def test_pins_by_type_and_by_resource(make_coordinator: Any) -> None:
    coord = make_coordinator(Engines(*THREE), overrides={"dispatch": {"pin_types": {
        "echo": "b"}}})
    rid = coord.deploy(b"x", "echo")
    assert set(run(coord, rid, 5)) == {"b"}
    other = hashlib.sha256(b"y").hexdigest()
    coord2 = make_coordinator(Engines(*THREE), overrides={"dispatch": {
        "pin_types": {"echo": "b"}, "pin_resources": {other: "c"}}})
    coord2.deploy(b"y", "echo")
    assert set(run(coord2, other, 5)) == {"c"}


@pytest.mark.parametrize(("pin", "needle"), [("zz", "'zz', which is not installed"),
                                             ("b", "which cannot run it")])
def test_bad_resource_pin_is_engine_error(make_coordinator: Any, pin: str, needle: str) -> None:
    rid = hashlib.sha256(b"gpu:model").hexdigest()  # resource ids are content addresses
    coord = make_coordinator(Engines(*THREE), overrides={"dispatch": {"pin_resources": {
        rid: pin}}})
    coord.deploy(b"gpu:model", "echo")
    result = coord.execute(ExecutionRequest(resource_id=rid))
    assert result.error is not None and result.error.kind is ErrorKind.ENGINE_ERROR
    assert needle in result.error.message


def test_per_engine_counts_add_up_to_the_total(make_coordinator: Any) -> None:
    coord = make_coordinator(Engines(*THREE), overrides={"coordinator": {"workers": 3},
                                                         "dispatch": {"strategy": "power_of_two"}})
    rids = [coord.deploy(f"r{i}".encode(), "echo") for i in range(5)]
    handles = [coord.submit(ExecutionRequest(resource_id=rids[i % 5])) for i in range(90)]
    results = [h.result(timeout=10) for h in handles]
    rejected = coord.execute(ExecutionRequest(resource_id="f" * 64))  # never reaches an engine
    assert rejected.error is not None and rejected.error.kind is ErrorKind.NOT_FOUND
    metrics = coord.metrics()
    engines = metrics["engines"]
    assert sum(e["executions"] for e in engines.values()) == 90
    assert {n: e["executions"] for n, e in engines.items() if e["executions"]} == (
        metrics["by_engine"]) == dict(Counter(r.engine for r in results))
    assert metrics["executions"] == 91
    assert abs(sum(e["share"] for e in engines.values()) - 1.0) < 1e-5
    assert all(e["inflight"] == 0 and e["executor"] == "threads" for e in engines.values())

"""EngineManager, EngineSelector and LoadBalancer of SPEC.md, in one small dispatcher.

Capability matching is precomputed per resource type at start-up (SPEC: "capability
precomputation"): ``select`` looks up a tuple of candidate engines and, when there is one
healthy candidate, returns it at once. A resource may narrow the match further with
``meta["required_features"]`` (set by an engine's ``inspect``); those filtered tuples are
cached too. With several candidates the configured strategy picks:

- ``least_loaded`` (default): lowest in-flight over capacity, then fewest executions;
- ``round_robin``: the next candidate in turn;
- ``power_of_two``: two random candidates, the less loaded wins (no herd on one engine);
- ``affinity``: an engine that already holds the resource warm (``engine.holds(rid)``), else
  the resource's "home" engine by rendezvous hashing, as long as it has spare capacity, so
  repeats of one resource land on the same engine and warm its caches (SPEC: "affinity
  scheduling").

``[dispatch] pin_types`` / ``pin_resources`` pin a resource type or one resource to an engine.
An engine whose ``health()`` returns false or raises leaves rotation and is asked again after
``health_interval`` seconds. ``EngineRecord.concurrency`` is the capacity used for load ratios:
a soft limit (an engine with spare capacity is preferred; nothing blocks here). A hard limit
on concurrent executions is the job of the ``quota-concurrency`` policy.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from coordinator_core.log import logger
from coordinator_hookspecs import (
    DeployRequest,
    EngineBase,
    EngineError,
    EngineRecord,
    HostFunctionRecord,
    ResourceInfo,
    method_or_default,
    optional,
)

STRATEGIES = ("least_loaded", "round_robin", "power_of_two", "affinity")

#: ``ResourceInfo.meta`` key listing engine features one resource needs beyond its type's.
META_FEATURES = "required_features"

_clock = time.perf_counter


@attrs.define(eq=False)
class BoundEngine:
    """An engine record, its optional methods bound once, and its live counters (updated
    under the GIL, read by metrics).

    ``holds``, ``health`` and ``pool_stats`` are None when the engine has none of its own
    (``EngineBase``'s defaults count as none), so selection skips them; the other optional
    methods are always callable, the engine's own or ``EngineBase``'s default."""

    name: str
    engine: Any
    resource_types: frozenset[str]
    features: frozenset[str]
    capacity: int
    holds: Callable[[str], bool] | None
    health: Callable[[], bool] | None
    pool_stats: Callable[[], Any] | None
    model_stats: Callable[[], Any] | None
    close: Callable[[], None]
    canonical_code: Callable[[Any, str], Any]
    inspect: Callable[[DeployRequest], Any]
    bind_host_functions: Callable[[Sequence[HostFunctionRecord]], None]
    decode_cli_input: Callable[[str | bytes, str | None], Any]
    encode_output: Callable[[Any], Any]
    inflight: int = 0
    executions: int = 0
    busy_seconds: float = 0.0
    healthy: bool = True
    next_check: float = 0.0
    executor: str = "threads"

    def run(self, ctx: Any) -> Any:
        """``engine.execute(ctx)``, counted: in flight while it runs, then one execution more
        and its wall time added to ``busy_seconds`` (what ``utilisation`` reports)."""
        self.inflight += 1
        started = _clock()
        try:
            return self.engine.execute(ctx)
        finally:
            self.inflight -= 1
            self.executions += 1
            self.busy_seconds += _clock() - started


def bind_engine(record: EngineRecord) -> BoundEngine:
    """An engine record with every optional method of its engine bound once."""
    engine = record.engine
    return BoundEngine(
        name=record.name,
        engine=engine,
        resource_types=record.resource_types,
        features=record.features,
        capacity=max(1, record.concurrency),
        holds=optional(engine, "holds", EngineBase),
        health=optional(engine, "health", EngineBase),
        pool_stats=optional(engine, "pool_stats", EngineBase),
        model_stats=optional(engine, "model_stats", EngineBase),
        close=method_or_default(engine, "close", EngineBase),
        canonical_code=method_or_default(engine, "canonical_code", EngineBase),
        inspect=method_or_default(engine, "inspect", EngineBase),
        bind_host_functions=method_or_default(engine, "bind_host_functions", EngineBase),
        decode_cli_input=method_or_default(engine, "decode_cli_input", EngineBase),
        encode_output=method_or_default(engine, "encode_output", EngineBase),
    )


def _load_key(b: BoundEngine) -> tuple[float, int]:
    return (b.inflight / b.capacity, b.executions)


class Dispatcher:
    """Chooses the engine for each execution."""

    def __init__(
        self,
        records: Sequence[EngineRecord],
        *,
        strategy: str = "least_loaded",
        pin_types: Mapping[str, str] | None = None,
        pin_resources: Mapping[str, str] | None = None,
        required_features: Mapping[str, Sequence[str]] | None = None,
        health_interval: float = 5.0,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        self.strategy = strategy
        self.health_interval = health_interval
        self.started = time.monotonic()
        self.engines = tuple(bind_engine(r) for r in records)
        self._by_name = {b.name: b for b in self.engines}
        self._needs = {t: frozenset(f) for t, f in (required_features or {}).items()}
        self._pin_types = dict(pin_types or {})
        self._candidates: dict[str, tuple[BoundEngine, ...]] = {}
        for rtype in {t for b in self.engines for t in b.resource_types}:
            pinned = self._pin_types.get(rtype)
            self._candidates[rtype] = tuple(
                b
                for b in self.engines
                if rtype in b.resource_types
                and self._needs.get(rtype, frozenset()) <= b.features
                and (pinned is None or b.name == pinned)
            )
        self._pin_resources = dict(pin_resources or {})
        self._narrowed: dict[tuple[str, frozenset[str]], tuple[BoundEngine, ...]] = {}
        self._turn = itertools.count()
        self._watched = any(b.health is not None for b in self.engines)

    # -- lookup ----------------------------------------------------------------------------
    def engine(self, name: str) -> BoundEngine:
        """The bound engine called ``name`` (``KeyError`` if none is installed)."""
        return self._by_name[name]

    def engines_for(self, resource_type: str) -> tuple[BoundEngine, ...]:
        """Every engine able to run ``resource_type`` (capability-matched, pins applied)."""
        found = self._candidates.get(resource_type)
        if not found:
            raise EngineError(self._none_message(resource_type), source="dispatcher")
        return found

    def _candidates_for(self, resource: ResourceInfo) -> tuple[BoundEngine, ...]:
        found = self._candidates.get(resource.type)
        needs = resource.meta.get(META_FEATURES) if resource.meta else None
        if needs and found:
            key = (resource.type, frozenset(needs))
            narrowed = self._narrowed.get(key)
            if narrowed is None:
                narrowed = self._narrowed[key] = tuple(b for b in found if key[1] <= b.features)
            found = narrowed
        if not found:
            raise EngineError(
                self._none_message(resource.type, frozenset(needs or ())), source="dispatcher"
            )
        return found

    # -- selection (the hot path) ----------------------------------------------------------
    def select(self, resource: ResourceInfo) -> BoundEngine:
        """The engine to run ``resource`` now."""
        if self._pin_resources and resource.id in self._pin_resources:
            return self._pinned(resource)
        candidates = self._candidates_for(resource)
        if self._watched is False:  # no engine has a health check: skip the clock and filter
            live: Sequence[BoundEngine] = candidates
            if len(live) == 1:
                return live[0]
            return self._pick(live, resource)
        now = time.monotonic()
        live = [b for b in candidates if self._is_healthy(b, now)]
        if not live:
            raise EngineError(
                f"no healthy engine for resource type {resource.type!r}: "
                + ", ".join(f"{b.name} (unhealthy)" for b in candidates),
                source="dispatcher",
            )
        if len(live) == 1:
            return live[0]
        return self._pick(live, resource)

    def _pinned(self, resource: ResourceInfo) -> BoundEngine:
        name = self._pin_resources[resource.id]
        bound = self._by_name.get(name)
        if bound is None:
            raise EngineError(
                f"resource {resource.id[:12]} is pinned to engine {name!r}, which is not "
                f"installed; installed engines: {', '.join(self._by_name) or 'none'}",
                source="dispatcher",
            )
        needs = self._needs.get(resource.type, frozenset()) | frozenset(
            (resource.meta or {}).get(META_FEATURES) or ()
        )
        if resource.type not in bound.resource_types or not needs <= bound.features:
            # A resource pin is more specific than a type pin, so only fitness is checked.
            raise EngineError(
                f"resource {resource.id[:12]} (type {resource.type!r}) is pinned to engine "
                f"{name!r}, which cannot run it: {self._describe(bound)}",
                source="dispatcher",
            )
        if not self._is_healthy(bound, time.monotonic()):
            raise EngineError(
                f"resource {resource.id[:12]} is pinned to engine {name!r}, which is unhealthy",
                source="dispatcher",
            )
        return bound

    def _pick(self, live: Sequence[BoundEngine], resource: ResourceInfo) -> BoundEngine:
        strategy = self.strategy
        if strategy == "least_loaded":
            return min(live, key=_load_key)
        if strategy == "round_robin":
            return live[next(self._turn) % len(live)]
        if strategy == "power_of_two":
            n = len(live)  # two distinct random candidates without random.sample's cost
            i = int(random.random() * n)
            j = int(random.random() * (n - 1))
            a, b = live[i], live[j + (j >= i)]
            return a if a.inflight / a.capacity <= b.inflight / b.capacity else b
        return self._affinity(live, resource.id)

    def _affinity(self, live: Sequence[BoundEngine], resource_id: str) -> BoundEngine:
        warm = [b for b in live if b.holds is not None and _holds(b, resource_id)]
        pool = warm or live
        # Rendezvous hashing: each (engine, resource) pair gets a stable rank, so a resource
        # keeps its home engine while engines join or leave rotation (only its own moves).
        home = max(pool, key=lambda b: hash((b.name, resource_id)))
        if home.inflight < home.capacity:
            return home
        spare = [b for b in pool if b.inflight < b.capacity]
        return min(spare or live, key=_load_key)

    def _is_healthy(self, bound: BoundEngine, now: float) -> bool:
        if bound.health is None or now < bound.next_check:
            return bound.healthy
        bound.next_check = now + self.health_interval
        try:
            ok = bool(bound.health())
            why = "reported unhealthy"
        except Exception as exc:
            ok, why = False, f"health check raised {type(exc).__name__}: {exc}"
        if ok != bound.healthy:
            if ok:
                logger.info("engine {} is healthy again; back in rotation", bound.name)
            else:
                logger.warning(
                    "engine {} {}; out of rotation for {} s", bound.name, why,
                    self.health_interval,
                )
        bound.healthy = ok
        return ok

    # -- engine management -----------------------------------------------------------------
    def replace_engine(
        self, name: str, engine: Any, *, capacity: int | None = None, executor: str = "threads"
    ) -> None:
        """Swap the implementation behind engine ``name`` (the process pool wraps engines
        this way at start-up); counters, pins and candidate tuples stay as they are, and so
        do the deploy-time methods (``canonical_code``, ``inspect``, the CLI helpers): they
        keep running on the engine first registered."""
        bound = self._by_name[name]
        bound.engine = engine
        bound.holds = optional(engine, "holds", EngineBase)
        bound.health = optional(engine, "health", EngineBase)
        bound.pool_stats = optional(engine, "pool_stats", EngineBase)
        bound.close = method_or_default(engine, "close", EngineBase)
        bound.next_check = 0.0
        bound.executor = executor
        self._watched = any(b.health is not None for b in self.engines)
        if capacity is not None:
            bound.capacity = max(1, capacity)

    # -- messages and metrics --------------------------------------------------------------
    @staticmethod
    def _describe(b: BoundEngine) -> str:
        return (
            f"{b.name} ({'/'.join(sorted(b.resource_types))}; features "
            f"{'/'.join(sorted(b.features)) or 'none'})"
        )

    def _none_message(self, resource_type: str, extra: frozenset[str] = frozenset()) -> str:
        installed = ", ".join(self._describe(b) for b in self.engines) or "none"
        needs = self._needs.get(resource_type, frozenset()) | extra
        asked = f"resource type {resource_type!r}" + (
            f" with features {'/'.join(sorted(needs))}" if needs else ""
        )
        pinned = self._pin_types.get(resource_type)
        if pinned is not None:
            asked += f" pinned to engine {pinned!r}"
        return f"no engine can run {asked}; installed engines: {installed}"

    def utilisation(self) -> dict[str, dict[str, Any]]:
        """Per-engine counters for ``metrics()``: executions (their sum is the number of
        executions that reached an engine), in flight, capacity, share of all executions,
        busy fraction of capacity since start, health and executor."""
        total = sum(b.executions for b in self.engines)
        uptime = max(time.monotonic() - self.started, 1e-9)
        out: dict[str, dict[str, Any]] = {}
        for b in self.engines:
            entry: dict[str, Any] = {
                "executions": b.executions,
                "inflight": b.inflight,
                "capacity": b.capacity,
                "share": round(b.executions / total, 6) if total else 0.0,
                "busy_seconds": round(b.busy_seconds, 6),
                "utilisation": round(b.busy_seconds / (uptime * b.capacity), 6),
                "healthy": b.healthy,
                "executor": b.executor,
            }
            if b.pool_stats is not None:
                entry["workers"] = b.pool_stats()
            if b.model_stats is not None:
                models = b.model_stats()
                if models:
                    entry["models"] = models
            out[b.name] = entry
        return out


def _holds(bound: BoundEngine, resource_id: str) -> bool:
    try:
        return bool(bound.holds(resource_id)) if bound.holds else False
    except Exception:
        return False

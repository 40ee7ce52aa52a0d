"""EngineManager, EngineSelector and LoadBalancer of SPEC.md, in one small dispatcher.

Capability matching is precomputed per resource type at start-up: ``select`` looks up a
tuple of candidate engines and, when there is one, returns it at once. With several, the
configured strategy picks: ``least_loaded`` (default; in-flight over capacity),
``round_robin``, ``power_of_two`` (two random candidates, the less loaded wins) or
``affinity`` (an engine that already holds the resource warm, else least loaded). Config can
pin a resource type or one resource to an engine. An engine whose ``health()`` fails or
raises leaves rotation and is asked again after ``health_interval`` seconds.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from loguru import logger

from coordinator_hookspecs import EngineError, EngineRecord, ResourceInfo

STRATEGIES = ("least_loaded", "round_robin", "power_of_two", "affinity")


@attrs.define(eq=False)
class BoundEngine:
    """An engine record plus its live counters (updated under the GIL, read by metrics)."""

    name: str
    engine: Any
    resource_types: frozenset[str]
    features: frozenset[str]
    capacity: int
    holds: Callable[[str], bool] | None
    health: Callable[[], bool] | None
    inflight: int = 0
    executions: int = 0
    busy_seconds: float = 0.0
    healthy: bool = True
    next_check: float = 0.0


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
        self.engines = tuple(
            BoundEngine(
                name=r.name,
                engine=r.engine,
                resource_types=r.resource_types,
                features=r.features,
                capacity=r.concurrency or 1,
                holds=getattr(r.engine, "holds", None),
                health=getattr(r.engine, "health", None),
            )
            for r in records
        )
        by_name = {b.name: b for b in self.engines}
        needs = {t: frozenset(f) for t, f in (required_features or {}).items()}
        types = {t for b in self.engines for t in b.resource_types}
        self._candidates: dict[str, tuple[BoundEngine, ...]] = {}
        for rtype in types:
            pinned = (pin_types or {}).get(rtype)
            self._candidates[rtype] = tuple(
                b
                for b in self.engines
                if rtype in b.resource_types
                and needs.get(rtype, frozenset()) <= b.features
                and (pinned is None or b.name == pinned)
            )
        self._pins = {
            rid: by_name[name] for rid, name in (pin_resources or {}).items() if name in by_name
        }
        self._unknown_pins = {
            rid: name for rid, name in (pin_resources or {}).items() if name not in by_name
        }
        self._needs = needs
        self._turn = itertools.count()

    def engines_for(self, resource_type: str) -> tuple[BoundEngine, ...]:
        """Every engine able to run ``resource_type`` (capability-matched, pins applied)."""
        found = self._candidates.get(resource_type)
        if not found:
            raise EngineError(self._none_message(resource_type), source="dispatcher")
        return found

    def select(self, resource: ResourceInfo) -> BoundEngine:
        """The engine to run ``resource`` now."""
        pinned = self._pins.get(resource.id)
        if pinned is not None:
            return pinned
        if resource.id in self._unknown_pins:
            raise EngineError(
                f"resource {resource.id[:12]} is pinned to engine "
                f"{self._unknown_pins[resource.id]!r}, which is not installed",
                source="dispatcher",
            )
        candidates = self._candidates.get(resource.type)
        if not candidates:
            raise EngineError(self._none_message(resource.type), source="dispatcher")
        if len(candidates) == 1 and not candidates[0].health:
            return candidates[0]
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

    def _pick(self, live: list[BoundEngine], resource: ResourceInfo) -> BoundEngine:
        if self.strategy == "round_robin":
            return live[next(self._turn) % len(live)]
        if self.strategy == "power_of_two":
            a, b = random.sample(live, 2)
            return a if a.inflight / a.capacity <= b.inflight / b.capacity else b
        if self.strategy == "affinity":
            warm = [b for b in live if b.holds is not None and _holds(b, resource.id)]
            if warm:
                live = warm
        return min(live, key=lambda b: (b.inflight / b.capacity, b.executions))

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
                logger.warning("engine {} {}; out of rotation", bound.name, why)
        bound.healthy = ok
        return ok

    def _none_message(self, resource_type: str) -> str:
        installed = (
            ", ".join(
                f"{b.name} ({'/'.join(sorted(b.resource_types))}; features "
                f"{'/'.join(sorted(b.features)) or 'none'})"
                for b in self.engines
            )
            or "none"
        )
        needs = self._needs.get(resource_type)
        asked = f"resource type {resource_type!r}" + (
            f" with features {'/'.join(sorted(needs))}" if needs else ""
        )
        return f"no engine can run {asked}; installed engines: {installed}"

    def utilisation(self) -> dict[str, dict[str, Any]]:
        """Per-engine counters for ``metrics()``."""
        return {
            b.name: {
                "executions": b.executions,
                "inflight": b.inflight,
                "busy_seconds": round(b.busy_seconds, 6),
                "healthy": b.healthy,
            }
            for b in self.engines
        }


def _holds(bound: BoundEngine, resource_id: str) -> bool:
    try:
        return bool(bound.holds(resource_id)) if bound.holds else False
    except Exception:
        return False

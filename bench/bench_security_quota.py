"""Security + quota stages: the built-ins' cost per execution vs an empty pipeline.

Issue 6's target: with the built-in validators and quota policies enabled and caches warm,
the security and quota stages add at most 5 us per execution (p50). Measured by calling the
core's own ``SecurityIntegrator.check_execution`` and ``QuotaManager.acquire`` /
``release`` exactly as the pipeline does, taken from real coordinators, side by side with
an integrator and a manager that hold no records (the empty pipeline). Variants run
interleaved in one process so machine noise hits them alike; read the differences.

Variants:
- ``empty``: no validators, no quota policies (the floor: two calls and a list).
- ``built-ins, defaults``: a fresh install (validators on; quota limits unlimited, the
  concurrency policy still counts running executions).
- ``built-ins, limits on``: every built-in doing real work: a private resource with an allow
  list, a blocklist, a rate (never reached), per-caller and overall concurrency limits, and a
  fee budget (reserve at acquire, charge at release); also split into its security stage and
  its quota stage.

Alone: ``.venv/bin/python -m bench.bench_security_quota`` from the repository root.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import Table, interleaved, percentiles
from coordinator_core import Coordinator
from coordinator_core.services.quota.manager import Held, QuotaManager
from coordinator_core.services.security.integrator import SecurityIntegrator
from coordinator_hookspecs import (
    AccessPolicy,
    CancelToken,
    EngineRecord,
    EngineResult,
    ExecutionContext,
    ExecutionRequest,
    ResourceInfo,
    hookimpl,
)

SECTION = "security+quota"
SAMPLES = 30_000
TARGET_US = 5.0

LIMITS_ON: dict[str, Any] = {
    "security-blocklist": {"hashes": [hashlib.sha256(str(i).encode()).hexdigest()
                                      for i in range(100)]},
    "quota-rate": {"rate": 1e9, "burst": 1e9},
    "quota-concurrency": {"limit": 1000, "overall": 10_000},
    "quota-fee": {"budget": 10**18, "window": 3600.0},
}


class _NullEngine:
    """Resource type ``bench``: the stages under test never reach an engine."""

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        return EngineResult()

    @hookimpl
    def coordinator_register_engines(self, config: Any) -> list[EngineRecord]:
        return [EngineRecord(name="bench-null", engine=self, resource_types={"bench"})]


def _stages(security: SecurityIntegrator, quota: QuotaManager, request: ExecutionRequest,
            resource: ResourceInfo) -> Callable[[], None]:
    """One execution's security and quota stages, as ``Pipeline.run`` calls them."""
    check = security.check_execution
    acquire = quota.acquire
    release = quota.release
    token = CancelToken(time.monotonic() + 3600.0)

    def stages() -> None:
        check(request, resource)
        held: Held = []
        acquire(request, resource, token, held)
        release(held, 5)

    return stages


def _security_only(security: SecurityIntegrator, request: ExecutionRequest,
                   resource: ResourceInfo) -> Callable[[], None]:
    check = security.check_execution

    def stage() -> None:
        check(request, resource)

    return stage


def _quota_only(quota: QuotaManager, request: ExecutionRequest,
                resource: ResourceInfo) -> Callable[[], None]:
    return _stages(SecurityIntegrator(()), quota, request, resource)


def _variant(tmp: Path, name: str, overrides: dict[str, Any] | None,
             policy: AccessPolicy) -> tuple[Coordinator, dict[str, Callable[[], None]]]:
    coord = Coordinator.open(data_dir=tmp / name, plugins=[_NullEngine()], entry_points=False,
                             overrides=overrides)
    rid = coord.deploy(b"bench resource", "bench", owner="olga", policy=policy)
    request = ExecutionRequest(resource_id=rid, caller="alice", entry="run", input=b"x" * 64,
                               fee_limit=1000, timeout=2.0)
    resource = coord.resource(rid)
    stages = _stages(coord.security, coord.quota, request, resource)
    stages()  # fail loudly here if the variant refuses, and warm the verdict cache
    return coord, {name: stages,
                   f"{name}/security": _security_only(coord.security, request, resource),
                   f"{name}/quota": _quota_only(coord.quota, request, resource)}


def run(table: Table) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        defaults, default_fns = _variant(Path(tmp), "defaults", None, AccessPolicy())
        limited, limited_fns = _variant(
            Path(tmp), "limits", LIMITS_ON,
            AccessPolicy(public=False, allow=frozenset({"alice", "bob"}),
                         deny=frozenset({"mallory"})))
        try:
            request = ExecutionRequest(resource_id="0" * 64, caller="alice")
            empty = _stages(SecurityIntegrator(()), QuotaManager(()), request,
                            ResourceInfo(id="0" * 64, type="bench"))
            samples = interleaved({"empty": empty, "defaults": default_fns["defaults"],
                                   **limited_fns}, SAMPLES)
        finally:
            defaults.close()
            limited.close()
    p50 = {name: percentiles(s)[0] * 1e6 for name, s in samples.items()}
    p99 = {name: percentiles(s)[1] * 1e6 for name, s in samples.items()}
    table.add(SECTION, "empty pipeline (no validators, no policies) p50", p50["empty"], "us",
              note=f"p99 {p99['empty']:.2f} us")
    for key, label in (("defaults", "built-ins, default config"),
                       ("limits", "built-ins, every limit on")):
        added = p50[key] - p50["empty"]
        table.add(SECTION, f"{label} p50", p50[key], "us", note=f"p99 {p99[key]:.2f} us")
        table.add(SECTION, f"{label}: added per execution (p50)", added, "us",
                  target=f"<= {TARGET_US:g} us", ok=added <= TARGET_US)
    for stage in ("security", "quota"):
        table.add(SECTION, f"every limit on: {stage} stage alone, added (p50)",
                  p50[f"limits/{stage}"] - p50["empty"], "us",
                  note="the two stages, each against the empty pipeline")


if __name__ == "__main__":
    out = Table()
    run(out)
    for row in out.rows:
        print(f"{row.name:<55} {row.value:8.2f} {row.unit:<3} {row.target:<10} {row.verdict} "
              f"{row.note}")

"""Metrics for the CLI: rebuilt from the durable audit log, printed as a readable table.

A CLI process has run no executions itself, so ``coordinator metrics`` aggregates the final
execution records of the audit log (status, error kind, engine, fee, duration, and the CPU
time and memory kept in each record's detail); per-stage latencies exist only in a live
coordinator's ``metrics()`` (and the Prometheus sink).
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from coordinator_core.services.metrics.collector import Histogram
from coordinator_core.services.metrics.resources import ResourceStats
from coordinator_core.store.base import Store


def log_metrics(store: Store, last: int = 0) -> dict[str, Any]:
    """A ``metrics()``-shaped snapshot of the execution records in the audit log."""
    records: Any = (r for r in store.audit_records() if r.record_kind == "execution")
    if last > 0:
        records = deque(records, maxlen=last)
    statuses: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    engines: Counter[str] = Counter()
    latency = Histogram()
    use = ResourceStats()
    types = _Types(store)
    fee = 0
    first = end = None
    for record in records:
        statuses[record.status or "unknown"] += 1
        if record.error_kind:
            kinds[record.error_kind] += 1
        detail = record.detail or {}
        engine = detail.get("engine")
        if engine:
            engines[engine] += 1
        if "cpu_ns" in detail:  # measured (``[coordinator] measure_resources``)
            use.add(types.of(record.resource_id), detail["cpu_ns"] * 1e-9,
                    detail.get("memory_bytes", 0))
        fee += record.fee_used
        latency.add(record.duration)
        start = record.timestamp - record.duration
        first = start if first is None else min(first, start)
        end = record.timestamp if end is None else max(end, record.timestamp)
    total = sum(statuses.values())
    elapsed = (end - first) if first is not None and end is not None else 0.0
    return {
        "source": "audit log",
        "executions": total,
        "by_status": dict(statuses),
        "by_error_kind": dict(kinds),
        "by_engine": dict(engines),
        "success_rate": round(statuses.get("succeeded", 0) / total, 6) if total else None,
        "throughput_per_s": round(total / elapsed, 2) if elapsed > 0 else None,
        "fee_used": fee,
        "latency": latency.snapshot(),
        "resources": use.snapshot(),
    }


class _Types:
    """Resource id -> resource type, read from the store once per resource."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._known: dict[str | None, str | None] = {None: None}

    def of(self, resource_id: str | None) -> str | None:
        if resource_id not in self._known:
            info = self._store.get_resource(resource_id) if resource_id else None
            self._known[resource_id] = info.type if info is not None else None
        return self._known[resource_id]


def print_metrics(snapshot: dict[str, Any]) -> None:
    """A readable table of a metrics snapshot (from the log or a live coordinator)."""
    print(f"executions     {snapshot.get('executions', 0)}")
    rate = snapshot.get("success_rate")
    print(f"success rate   {'-' if rate is None else f'{rate * 100:.2f} %'}")
    tput = snapshot.get("throughput_per_s")
    print(f"throughput     {'-' if tput is None else f'{tput:,.1f} /s'}")
    print(f"fee used       {snapshot.get('fee_used', 0):,}")
    resources = snapshot.get("resources") or {}
    if resources.get("executions"):
        print(f"cpu time       {resources['cpu_seconds']:.6f} s")
    for title, key in (
        ("status", "by_status"),
        ("error kind", "by_error_kind"),
        ("engine", "by_engine"),
    ):
        counts = snapshot.get(key) or {}
        if counts:
            print(f"\n{title:<18} {'count':>8}")
            for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
                print(f"{name:<18} {n:>8}")
    rows = [("end to end", snapshot.get("latency") or {})]
    rows += list((snapshot.get("stages") or {}).items())
    print(f"\n{'latency (ms)':<18} {'count':>8} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}")
    for name, h in rows:
        if h.get("count"):
            print(
                f"{name:<18} {h['count']:>8} {h['p50_ms']:>9.3f} {h['p90_ms']:>9.3f} "
                f"{h['p99_ms']:>9.3f} {h['max_ms']:>9.3f}"
            )
    if resources.get("executions"):
        _print_resources(resources)


def _print_resources(resources: dict[str, Any]) -> None:
    """The CPU time (ms) and peak memory (KiB) of executions that reached an engine."""
    rows = [("all", resources), *sorted((resources.get("by_resource_type") or {}).items())]
    print(f"\n{'resource use':<18} {'count':>8} {'cpu p50':>9} {'cpu p99':>9} {'cpu max':>9} "
          f"{'mem p50':>9} {'mem max':>9}")
    for name, use in rows:
        cpu, memory = use["cpu"], use["memory"]
        print(f"{name:<18} {use['executions']:>8} {cpu['p50_ms']:>9.3f} {cpu['p99_ms']:>9.3f} "
              f"{cpu['max_ms']:>9.3f} {memory['p50_bytes'] / 1024:>9.1f} "
              f"{memory['max_bytes'] / 1024:>9.1f}")
    print("(cpu in ms, memory in KiB)")

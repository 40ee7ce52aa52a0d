"""The demo's summary: latencies against SPEC.md's targets, balances, events, self-checks.

A helper of ``coordinator demo`` (``cli/demo.py``). Stage latencies come from a metrics sink
the demo registers inline (:class:`StageRecorder`), which keeps every sample, so p50/p99 are
exact rather than read from histogram buckets.
"""

from __future__ import annotations

import struct
import threading
from collections import Counter
from typing import Any

from coordinator_core.cli.demo_workload import FRIENDS, Tally, World
from coordinator_hookspecs import ExecutionReport, MetricsSinkRecord, hookimpl

#: SPEC.md's performance table, each row measured as a sum of pipeline stages (ms targets).
#: "coordination" is the rest of what the coordinator adds to an execution: end to end minus
#: the engine's execution and minus result processing (its own row).
SPEC_ROWS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("execution coordination", ("overhead",), 5.0),
    ("security validation", ("security",), 2.0),
    ("engine selection", ("selection",), 3.0),
    ("request dispatch", ("validation", "quota"), 1.0),
    ("result processing", ("commit", "audit_sinks"), 10.0),
)
_HOW = {"overhead": "end to end - execution - commit - audit_sinks"}
_NOT_OVERHEAD = ("execution", "commit", "audit_sinks")


def _overhead(stages: dict[str, float], duration: float) -> float:
    return max(0.0, duration - sum(stages.get(name, 0.0) for name in _NOT_OVERHEAD))


class StageRecorder:
    """A metrics sink keeping each execution's stage times (seconds) and nesting."""

    def __init__(self) -> None:
        self.samples: list[tuple[dict[str, float], float, bool]] = []
        self.nested: Counter[str] = Counter()  # statuses of nested executions
        self._lock = threading.Lock()

    def record(self, report: ExecutionReport) -> None:
        stages = dict(report.stages)
        result = report.result
        nested = result.parent_id is not None
        with self._lock:
            self.samples.append((stages, result.duration, nested))
            if nested:
                self.nested[result.status.value] += 1

    @hookimpl
    def coordinator_register_metrics_sinks(self, config: Any) -> list[MetricsSinkRecord]:
        return [MetricsSinkRecord(name="demo-stages", sink=self, order=90)]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def latency(recorder: StageRecorder) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-stage p50/p99 (ms) and SPEC.md's rows with their targets."""
    series: dict[str, list[float]] = {}
    for stages, duration, _nested in list(recorder.samples):
        for name, seconds in stages.items():
            series.setdefault(name, []).append(seconds)
        series.setdefault("overhead", []).append(_overhead(stages, duration))
    table = {name: {"count": len(v), "p50_ms": round(_pct(v, 0.5) * 1e3, 4),
                    "p99_ms": round(_pct(v, 0.99) * 1e3, 4)} for name, v in series.items()}
    rows = []
    for operation, parts, target in SPEC_ROWS:
        sums = _summed(recorder, parts)
        p50, p99 = _pct(sums, 0.5) * 1e3, _pct(sums, 0.99) * 1e3
        rows.append({"operation": operation, "measured_as": _HOW.get(parts[0], " + ".join(parts)),
                     "p50_ms": round(p50, 4), "p99_ms": round(p99, 4), "target_ms": target,
                     "met": bool(sums) and p99 < target})
    return table, rows


def _summed(recorder: StageRecorder, parts: tuple[str, ...]) -> list[float]:
    out = []
    for stages, duration, _nested in list(recorder.samples):
        if parts == ("overhead",):
            out.append(_overhead(stages, duration))
        elif any(p in stages for p in parts):
            out.append(sum(stages.get(p, 0.0) for p in parts))
    return out


def balances(coord: Any, rid: str, names: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for name in names:
        value = coord.state(rid, b"bal:" + name.encode())
        out[name] = struct.unpack("<Q", value)[0] if value else 0
    return out


def ledger_check(coord: Any, rid: str) -> tuple[int, int]:
    """(sum of every balance, recorded supply) of a token contract."""
    total = supply = 0
    for key, value in coord.state(rid).items():
        if key.startswith(b"bal:"):
            total += struct.unpack("<Q", value)[0]
        elif key == b"supply":
            supply = struct.unpack("<Q", value)[0]
    return total, supply


def decode_event(payload: bytes) -> dict[str, Any]:
    """An example contract's event: kind | amount:u64 | from_len:u8 | from | to."""
    kinds = {b"M": "mint", b"T": "transfer", b"D": "denied"}
    if len(payload) < 10:
        return {"raw": payload.hex()}
    amount = struct.unpack_from("<Q", payload, 1)[0]
    n = payload[9]
    return {"kind": kinds.get(payload[:1], payload[:1].decode("ascii", "replace")),
            "amount": amount, "from": payload[10:10 + n].decode("utf-8", "replace"),
            "to": payload[10 + n:].decode("utf-8", "replace")}


def build(coord: Any, world: World, tally: Tally, recorder: StageRecorder,
          data_dir: str, examples: str) -> dict[str, Any]:
    """The whole summary as JSON-compatible data, ``ok`` saying whether every check held."""
    stages, rows = latency(recorder)
    verify = coord.store.verify()
    total, supply = ledger_check(coord, world.token)
    outcomes: Counter[str] = Counter()
    for counts in tally.scenarios.values():
        outcomes.update(counts)
    nested_total = sum(recorder.nested.values())
    checks = [
        ("audit log verifies", verify.ok, f"{verify.count} records, head {verify.head[:16]}"),
        ("every outcome was an expected one", not tally.unexpected,
         {k: dict(v) for k, v in tally.unexpected.items()} or "none unexpected"),
        ("a contract importing model_infer without `models` was refused at deploy",
         world.refused_without_models is not None, world.refused_without_models or "accepted"),
        ("transfers succeeded", outcomes["succeeded"] > 0, outcomes["succeeded"]),
        ("hybrid transfers approved by the model", outcomes["approved"] > 0,
         outcomes["approved"]),
        ("hybrid transfers denied by the model", outcomes["denied by model"] > 0,
         outcomes["denied by model"]),
        ("rejected by security", outcomes["security_rejected"] > 0, outcomes["security_rejected"]),
        ("rejected by quota", outcomes["quota_exceeded"] > 0, outcomes["quota_exceeded"]),
        ("exhausted their fee", outcomes["fee_exhausted"] > 0, outcomes["fee_exhausted"]),
        ("one execution cancelled", outcomes["cancelled"] == 1, outcomes["cancelled"]),
        ("nested executions ran with their own records", nested_total > 0, nested_total),
        ("token balances add up to the supply", total == supply == world.minted,
         f"balances {total}, supply {supply}, minted {world.minted}"),
    ]
    engines = coord.metrics().get("engines", {})
    return {
        "ok": all(ok for _name, ok, _detail in checks),
        "data_dir": data_dir,
        "examples": examples,
        "resources": {"token": world.token, "hybrid": world.hybrid, "model": world.model},
        "executions": tally.executions,
        "seconds": round(tally.seconds, 3),
        "throughput_per_s": round(tally.executions / tally.seconds, 1) if tally.seconds else None,
        "by_status": dict(tally.statuses),
        "by_error_kind": dict(tally.error_kinds),
        "nested": {"executions": nested_total, "by_status": dict(recorder.nested)},
        "scenarios": {name: dict(counts) for name, counts in sorted(tally.scenarios.items())},
        "stages": stages,
        "spec_targets": rows,
        "fee_used": tally.fee_used,
        "engines": {name: {k: e.get(k) for k in ("executions", "share", "busy_seconds",
                                                 "utilisation")}
                    for name, e in engines.items()},
        "balances": {"token": balances(coord, world.token, (*FRIENDS, "dave")),
                     "hybrid": balances(coord, world.hybrid, FRIENDS)},
        "events": {"token": [decode_event(e["payload"]) for e in coord.events(world.token, 3)],
                   "hybrid": [decode_event(e["payload"]) for e in coord.events(world.hybrid, 3)]},
        "audit_verify": {"ok": verify.ok, "count": verify.count,
                         "first_bad_seq": verify.first_bad_seq, "reason": verify.reason,
                         "head": verify.head},
        "checks": [{"check": name, "ok": ok, "detail": detail} for name, ok, detail in checks],
    }

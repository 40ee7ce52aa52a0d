"""Audit sinks: the built-in JSON lines sink mirrors the durable log; failing audit and
metrics sinks change nothing but a log line (issue 5 acceptance)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import (
    AuditRecord,
    AuditSinkRecord,
    ExecutionReport,
    ExecutionRequest,
    MetricsSinkRecord,
    hookimpl,
)


def test_jsonl_sink_mirrors_the_log(tmp_path: Path, make_coordinator: Callable[..., Any]) -> None:
    coord = make_coordinator(EchoPlugin(), data_dir=tmp_path / "d",
                             overrides={"audit_jsonl": {"path": "audit.jsonl"}})
    rid = coord.deploy(b"jsonl", "echo")
    for i in range(3):
        coord.execute(ExecutionRequest(resource_id=rid, entry="write", input=bytes([65 + i])))
    coord.execute(ExecutionRequest(resource_id=rid, entry="fail"))
    stored = list(coord.store.audit_records())
    head = coord.store.verify().head
    coord.close()
    lines = [json.loads(line) for line in (tmp_path / "d" / "audit.jsonl").read_text().splitlines()]
    executions = [r for r in stored if r.record_kind == "execution"]
    mirrored = [r for r in lines if r["record_kind"] == "execution"]
    assert [(r["seq"], r["chain_hash"], r["status"]) for r in mirrored] == [
        (r.seq, r.chain_hash, r.status) for r in executions]
    assert lines[-1]["chain_hash"] == head  # an independent copy of the chain head


def test_jsonl_sink_is_off_by_default(make_coordinator: Callable[..., Any]) -> None:
    coord = make_coordinator(EchoPlugin())
    assert "audit-jsonl" not in [r.name for r in coord.registry.audit_sinks]


class BrokenAudit:
    def emit(self, record: AuditRecord) -> None:
        raise OSError("audit disk full")


class BrokenMetrics:
    def record(self, report: ExecutionReport) -> None:
        raise ValueError("metrics backend down")


class BrokenSinks:
    @hookimpl
    def coordinator_register_audit_sinks(self, config: Any) -> list[AuditSinkRecord]:
        return [AuditSinkRecord(name="broken-audit", sink=BrokenAudit())]

    @hookimpl
    def coordinator_register_metrics_sinks(self, config: Any) -> list[MetricsSinkRecord]:
        return [MetricsSinkRecord(name="broken-metrics", sink=BrokenMetrics())]


def test_failing_sinks_change_nothing(make_coordinator: Callable[..., Any]) -> None:
    healthy = make_coordinator(EchoPlugin())
    broken = make_coordinator(EchoPlugin(), BrokenSinks())
    messages: list[str] = []
    handler = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        outcomes = []
        for coord in (healthy, broken):
            rid = coord.deploy(b"sinks", "echo")
            results = [coord.execute(ExecutionRequest(resource_id=rid, entry="write",
                                                      input=b"x")) for _ in range(3)]
            outcomes.append([(r.status, r.output, r.fee_used, r.effects) for r in results])
            for result in results:
                assert coord.store.execution(result.execution_id).status == "succeeded"
            assert coord.store.state_get(rid, b"last") == b"x"
            assert coord.store.verify().ok
    finally:
        logger.remove(handler)
    assert outcomes[0] == outcomes[1]
    for name in ("broken-audit", "broken-metrics"):
        assert sum(name in m for m in messages) == 1, messages

"""The composite metrics and audit sinks: fail open and log once, close on one deadline, and
carry every sink call of the coordinator (executions, deploys, close)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from loguru import logger

from coordinator_core import Coordinator, ExecutionRequest
from coordinator_core.services.audit.sinks import AuditSinks
from coordinator_core.services.metrics.sinks import MetricsSinks
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import AuditSinkRecord, MetricsSinkRecord, hookimpl


@pytest.fixture
def logged() -> Iterator[list[tuple[str, str]]]:
    """(level, text) of every log message, tracebacks included, while the test runs."""
    lines: list[tuple[str, str]] = []
    handler = logger.add(lambda m: lines.append((m.record["level"].name, str(m))),
                         level="DEBUG", format="{message}\n{exception}")
    yield lines
    logger.remove(handler)


class Keeps:
    """A sink keeping what it is given, closed at most once."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.closed = 0

    def record(self, report: Any) -> None:
        self.seen.append(report)

    def emit(self, record: Any) -> None:
        self.seen.append(record)

    def close(self) -> None:
        self.closed += 1


class Raises:
    def record(self, report: Any) -> None:
        raise ConnectionError("backend down")

    def emit(self, record: Any) -> None:
        raise ConnectionError("backend down")


def test_a_failing_metrics_sink_is_logged_once_and_the_others_still_get_every_report(
        logged: list[tuple[str, str]]) -> None:
    before, after = Keeps(), Keeps()
    sinks = MetricsSinks([("before", before), ("down", Raises()), ("after", after)])
    for report in range(3):
        sinks.record(report)  # type: ignore[arg-type]
    assert before.seen == after.seen == [0, 1, 2]
    warnings = [text for level, text in logged if level == "WARNING"]
    assert len(warnings) == 1
    assert "metrics sink down failed: ConnectionError: backend down" in warnings[0]
    assert "Traceback" not in warnings[0]  # the one-line reason only
    (traceback,) = [text for level, text in logged if level == "DEBUG"]
    assert "Traceback" in traceback
    assert 'raise ConnectionError("backend down")' in traceback


def test_a_failing_audit_sink_is_logged_once_across_single_and_batched_records(
        logged: list[tuple[str, str]]) -> None:
    kept = Keeps()
    sinks = AuditSinks([("down", Raises()), ("kept", kept)])
    sinks.emit("r1")  # type: ignore[arg-type]
    sinks.emit_all(["r2", "r3"])  # type: ignore[list-item]
    assert kept.seen == ["r1", "r2", "r3"]
    assert sum("audit sink down failed" in text for _, text in logged) == 2  # warning + debug
    assert [level for level, text in logged if "audit sink down" in text] == ["WARNING", "DEBUG"]
    assert len(sinks) == 2 and sinks.names == ("down", "kept")


def test_close_shares_one_deadline_and_a_hanging_or_raising_close_stops_no_other(
        logged: list[tuple[str, str]]) -> None:
    release = threading.Event()

    class Hangs(Keeps):
        def close(self) -> None:
            release.wait(30)

    class CloseRaises(Keeps):
        def close(self) -> None:
            raise OSError("disk gone")

    first, last = Keeps(), Keeps()
    sinks = MetricsSinks([("first", first), ("hangs", Hangs()), ("raises", CloseRaises()),
                          ("hangs-too", Hangs()), ("last", last)])
    started = time.monotonic()
    try:
        sinks.close(timeout=0.3)
        waited = time.monotonic() - started
    finally:
        release.set()
    # Two hanging closes, yet one wait of the shared deadline, not one per sink.
    assert 0.25 <= waited < 0.55
    assert first.closed == last.closed == 1
    warnings = [text for level, text in logged if level == "WARNING"]
    assert sorted(w.split(" ")[2] for w in warnings if "did not close" in w) == [
        "hangs", "hangs-too"]
    assert any("closing metrics sink raises failed: OSError: disk gone" in w for w in warnings)
    assert any(level == "DEBUG" and "Traceback" in text and "disk gone" in text
               for level, text in logged)
    sinks.close(timeout=0.3)  # a second close does nothing
    assert first.closed == last.closed == 1


def test_closing_sinks_without_close_methods_starts_nothing() -> None:
    sinks = AuditSinks([("plain", Raises())])
    threads = threading.active_count()
    sinks.close(timeout=0.0)
    assert threading.active_count() == threads


class Sinks:
    """One audit and one metrics sink for a coordinator, both failing and both kept."""

    def __init__(self) -> None:
        self.audit, self.metrics = Keeps(), Keeps()

    @hookimpl
    def coordinator_register_audit_sinks(self, config: Any) -> list[AuditSinkRecord]:
        return [AuditSinkRecord(name="flaky-audit", sink=Raises()),
                AuditSinkRecord(name="kept-audit", sink=self.audit)]

    @hookimpl
    def coordinator_register_metrics_sinks(self, config: Any) -> list[MetricsSinkRecord]:
        return [MetricsSinkRecord(name="kept-metrics", sink=self.metrics)]


def test_deploys_and_executions_share_the_audit_composite_and_close_closes_each_sink(
        make_coordinator: Callable[..., Coordinator], logged: list[tuple[str, str]]) -> None:
    plugin = Sinks()
    coord = make_coordinator(EchoPlugin(), plugin)
    rid = coord.deploy(b"code", "echo")
    result = coord.execute(ExecutionRequest(resource_id=rid, input=b"x"))
    assert result.ok
    kinds = [(r.record_kind, r.execution_id) for r in plugin.audit.seen]
    assert kinds == [("deploy", None), ("execution", result.execution_id)]
    assert [r.result.execution_id for r in plugin.metrics.seen] == [result.execution_id]
    # The deploy's failure was logged; the execution's, through the same composite, was not.
    assert sum(level == "WARNING" and "flaky-audit" in text for level, text in logged) == 1
    coord.close()
    assert plugin.audit.closed == plugin.metrics.closed == 1
    coord.close()
    assert plugin.audit.closed == 1

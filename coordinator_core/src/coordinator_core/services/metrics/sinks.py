"""The composite metrics sink: every registered metrics sink behind one ``record`` call.

The pipeline hands each execution's ``ExecutionReport`` to it once; it calls each sink in
registry order. A sink that raises is logged once and never changes the result (metrics fail
open); ``close`` closes them all within one deadline (see ``services/fanout.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coordinator_core.services.fanout import SinkFanout
from coordinator_hookspecs import ExecutionReport, MetricsSinkBase


class MetricsSinks(SinkFanout):
    """A metrics sink made of ``sinks``, given as (record name, sink) pairs."""

    kind = "metrics sink"
    base = MetricsSinkBase

    def __init__(self, sinks: Sequence[tuple[str, Any]]) -> None:
        super().__init__(sinks)
        self._records = tuple((name, sink.record) for name, sink in sinks)

    def record(self, report: ExecutionReport) -> None:
        """Hand ``report`` to every sink."""
        for name, record in self._records:
            try:
                record(report)
            except Exception as exc:
                self.failed(name, exc)

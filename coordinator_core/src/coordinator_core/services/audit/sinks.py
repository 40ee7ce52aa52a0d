"""The composite audit sink: every registered audit sink behind one call, fed each record
once it is committed to the durable log (by an execution or a deploy).

A sink that raises is logged once and never changes the result (audit sinks fail open: the
hash-chained log in the store is the record of truth); ``close`` closes them all within one
deadline (see ``services/fanout.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coordinator_core.services.fanout import SinkFanout
from coordinator_hookspecs import AuditRecord, AuditSinkBase


class AuditSinks(SinkFanout):
    """An audit sink made of ``sinks``, given as (record name, sink) pairs."""

    kind = "audit sink"
    base = AuditSinkBase

    def __init__(self, sinks: Sequence[tuple[str, Any]]) -> None:
        super().__init__(sinks)
        self._emits = tuple((name, sink.emit) for name, sink in sinks)

    def emit(self, record: AuditRecord) -> None:
        """Hand one committed record to every sink."""
        for name, emit in self._emits:
            try:
                emit(record)
            except Exception as exc:
                self.failed(name, exc)

    def emit_all(self, records: Sequence[AuditRecord]) -> None:
        """Hand the records one commit wrote (an execution's and its nested ones') to every
        sink, in commit order."""
        for name, emit in self._emits:
            for record in records:
                try:
                    emit(record)
                except Exception as exc:
                    self.failed(name, exc)

"""Routing one execution's effects to effect processors and running their prepare phase.

Shared by both stores so a veto behaves the same in memory and on disk. Each effect goes to
every processor whose ``kinds`` contain its kind (in the processors' order); an effect kind no
processor handles is a veto, because silently dropping a requested side effect would report
success for work that never happened.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import attrs

from coordinator_core.log import logger
from coordinator_core.store.base import BoundProcessor
from coordinator_hookspecs import (
    AuditRecord,
    CoordinatorError,
    Effect,
    ErrorInfo,
    ErrorKind,
    InvalidRequest,
)

Routed = list[tuple[BoundProcessor, list[Effect]]]


@attrs.define(slots=True)
class Prepared:
    """Outcome of the prepare phase of one execution."""

    processors: list[BoundProcessor]
    error: ErrorInfo | None = None


class Router:
    """Routes effects by kind; the kind -> processors table is built once per processor tuple
    (the core hands the store the same frozen tuple on every call)."""

    def __init__(self) -> None:
        self._cached: tuple[Sequence[BoundProcessor], dict[str, tuple[int, ...]]] | None = None

    def _table(self, processors: Sequence[BoundProcessor]) -> dict[str, tuple[int, ...]]:
        cached = self._cached
        if cached is not None and cached[0] is processors:
            return cached[1]
        table: dict[str, list[int]] = {}
        for index, bound in enumerate(processors):
            for kind in bound.kinds:
                table.setdefault(kind, []).append(index)
        frozen = {kind: tuple(indexes) for kind, indexes in table.items()}
        self._cached = (processors, frozen)
        return frozen

    def route(self, effects: Sequence[Effect],
              processors: Sequence[BoundProcessor]) -> Routed | ErrorInfo:
        """Group ``effects`` per processor (processor order, effect order kept), or the veto
        naming the first effect kind nobody handles."""
        table = self._table(processors)
        if len(effects) == 1:  # the usual case: no grouping to do
            targets = table.get(effects[0].kind)
            if targets:
                return [(processors[index], list(effects)) for index in targets]
        per: dict[int, list[Effect]] = {}
        for effect in effects:
            targets = table.get(effect.kind)
            if not targets:
                return ErrorInfo(
                    ErrorKind.INVALID_REQUEST,
                    f"no effect processor handles effect kind {effect.kind!r} "
                    f"(registered kinds: {', '.join(sorted(table)) or 'none'})",
                    source="store",
                )
            for index in targets:
                per.setdefault(index, []).append(effect)
        return [(processors[index], per[index]) for index in sorted(per)]


def blob(value: object, what: str) -> bytes:
    """``value`` as bytes for a state key/value or payload; anything else is refused (a str
    stored as TEXT would never match a later bytes lookup)."""
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidRequest(f"{what} must be bytes, got {type(value).__name__}")


def prepare_all(execution_id: str, routed: Routed, txn: Any) -> Prepared:
    """Call ``prepare`` on each processor in turn; stop at the first that raises.

    The failing processor is included in ``processors`` so it is rolled back as well: it may
    have staged part of its effects before raising.
    """
    done = Prepared([])
    for bound, effects in routed:
        done.processors.append(bound)
        try:
            bound.processor.prepare(execution_id, effects, txn)
        except sqlite3.Error:
            raise  # the store itself failed (disk full, I/O): the whole group must abort
        except CoordinatorError as exc:
            done.error = ErrorInfo(exc.kind, f"effect processor {bound.name!r} vetoed the "
                                   f"effects: {exc.message}", source=exc.source or bound.name)
            return done
        except Exception as exc:  # a plugin bug: reported as internal, never leaked
            done.error = ErrorInfo(ErrorKind.INTERNAL, f"effect processor {bound.name!r} "
                                   f"failed in prepare: {type(exc).__name__}: {exc}",
                                   source=bound.name)
            return done
    return done


def finish_processors(record: AuditRecord, processors: Sequence[BoundProcessor],
                      committed: bool) -> list[AuditRecord]:
    """Second phase, after the store's outcome is known: ``commit`` or ``rollback`` each
    processor. A failure here cannot undo the store's decision (SPEC: a post-processing
    failure does not affect the main result); it is logged with the processor's name and
    returned as an ``effect_failure`` record for the caller to append to the audit log."""
    failures: list[AuditRecord] = []
    execution_id = record.execution_id or ""
    for bound in processors:
        try:
            if committed:
                bound.processor.commit(execution_id)
            else:
                bound.processor.rollback(execution_id)
        except Exception as exc:
            phase = "commit" if committed else "rollback"
            logger.opt(exception=True).error(
                "effect processor {} failed in {} of execution {}", bound.name, phase,
                execution_id)
            failures.append(AuditRecord(
                seq=0, record_kind="effect_failure", timestamp=0.0, execution_id=execution_id,
                caller=record.caller, resource_id=record.resource_id, status="failed",
                error_kind=ErrorKind.INTERNAL.value,
                message=f"effect processor {bound.name!r} failed in {phase}: "
                        f"{type(exc).__name__}: {exc}",
                detail={"processor": bound.name, "phase": phase}))
    return failures


def failed_records(record: AuditRecord, error: ErrorInfo,
                   processors: Sequence[BoundProcessor], effect_count: int
                   ) -> tuple[AuditRecord, AuditRecord]:
    """The ``rollback`` record and the final record (now failed) of a vetoed execution."""
    kind = error.kind.value
    rollback = AuditRecord(
        seq=0, record_kind="rollback", timestamp=record.timestamp,
        execution_id=record.execution_id, parent_id=record.parent_id, caller=record.caller,
        resource_id=record.resource_id, status="rolled_back", error_kind=kind,
        message=error.message, effect_digest=record.effect_digest,
        detail={"processors": [bound.name for bound in processors], "effects": effect_count,
                "source": error.source},
    )
    final = attrs.evolve(record, status="failed", error_kind=kind, message=error.message)
    return rollback, final


def discarded(children: Sequence[AuditRecord], parent: AuditRecord,
              error: ErrorInfo | None) -> list[AuditRecord]:
    """The nested executions' final records as they must be written when their parent's
    effects are not kept: a child that succeeded is failed, naming why (the audit log never
    says succeeded for writes that were not committed)."""
    kind = error.kind.value if error is not None else (parent.error_kind or "internal")
    why = (f"discarded with its parent execution {parent.execution_id}, which ended "
           f"{'failed' if error is not None else parent.status} ({kind})")
    return [attrs.evolve(child, status="failed", error_kind=kind, message=why)
            if child.status == "succeeded" else child for child in children]

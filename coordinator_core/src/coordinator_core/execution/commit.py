"""The end of an execution: its one final audit record, committed with its effects in one
store transaction, and the records of what could not be committed.

A veto by an effect processor or a store failure turns the execution into a failure; the
log then still holds exactly one final record for it and for each of its nested executions,
and none of them says succeeded for writes that were discarded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import attrs

from coordinator_core.execution.ledger import Entry, Ledger
from coordinator_core.execution.scope import Tree
from coordinator_core.execution.usage import usage_detail
from coordinator_core.log import logger
from coordinator_core.store.base import BoundProcessor, Finished, Store
from coordinator_core.store.chain import effect_digest
from coordinator_core.store.effects import discarded
from coordinator_core.store.requests import RequestRef, output_digest, request_ref
from coordinator_hookspecs import (
    AuditRecord,
    Effect,
    ErrorInfo,
    ErrorKind,
    ExecutionRequest,
    Status,
)

_SUCCEEDED = Status.SUCCEEDED
#: enum member -> its string, without the (slow) ``.value`` descriptor on the hot path
_VALUE: dict[Any, str] = {m: m.value for m in (*Status, *ErrorKind)}
#: What a commit that wrote nothing returns (no records to hand to audit sinks, no error).
_NOTHING = Finished(())


class Committer:
    """Writes final records and effects; ``commit`` returns the store's ``Finished``, whose
    ``error`` (when set) replaces the execution's success."""

    def __init__(self, store: Store, ledger: Ledger, processors: Sequence[BoundProcessor], *,
                 tracking: bool, events: bool) -> None:
        self._store = store
        self._ledger = ledger
        self._processors = tuple(processors)
        self._tracking = tracking  # the durable log keeps every final record
        self._records = tracking or events  # someone wants the final record
        #: keep each top-level request and output digest in its record (``[store]
        #: keep_requests``; a store without the attribute keeps none)
        self._keep_requests = tracking and getattr(store, "keep_requests", False) is True

    def commit(
        self,
        entry: Entry,
        status: Status,
        error: ErrorInfo | None,
        fee_used: int,
        duration: float,
        effects: tuple[Effect, ...],
        bound: Any,
        tree: Tree,
        top: bool,
        output: Any = None,
        use: tuple[int, int] | None = None,
    ) -> Finished:
        """Commit the effects and the final audit record in one store transaction.

        A nested execution commits nothing itself: its record waits in ``tree.records`` and
        is committed with the top-level execution's, which rewrites it as failed if the top
        level's effects are not kept (so the log never says succeeded for discarded writes).
        """
        if not (self._records or (effects and top)):
            return _NOTHING
        record = self.final_record(entry, status, error, fee_used, duration, effects, bound,
                                   use)
        if self._keep_requests:
            detail = cast("dict[str, Any]", record.detail)  # ``_detail``'s own dict
            engine = bound.engine if bound is not None else None
            if getattr(engine, "deterministic", True) is False or (top and any(
                    child.detail.get("nondeterministic") for child in tree.records)):
                detail["nondeterministic"] = True
            if top:
                detail["request"] = request_ref(entry.request, detail.get("engine"), engine)
                detail["output"] = output_digest(output)
        if not top:
            tree.records.append(record)
            return _NOTHING
        children = tuple(tree.records)
        if not (self._tracking or effects or children):
            return Finished((record,))
        try:
            return self._store.finish(record, effects, self._processors, children)
        except Exception as exc:
            logger.opt(exception=exc).error("commit of {} failed", entry.execution_id)
            error = commit_error(exc)
            return Finished(record_failure(self._store, record, error, children), error)

    def settle_children(self, entry: Entry, tree: Tree, status: Status,
                        error: ErrorInfo | None) -> None:
        """The top level ended without keeping its effects, so neither did its nested
        executions: each one that succeeded is failed in the ledger too, as its durable record
        says (``discarded``), and ``status`` never contradicts the audit log."""
        kind = error.kind if error is not None else ErrorKind.INTERNAL
        why = (f"discarded with its parent execution {entry.execution_id}, which ended "
               f"{_VALUE[status]} ({_VALUE[kind]})")
        for child in tree.children:
            result = child.result
            if result is not None and result.status is _SUCCEEDED:
                self._ledger.amend(child, attrs.evolve(
                    result, status=Status.FAILED, output=None, effects=(),
                    error=ErrorInfo(kind, why, "coordinator")))

    @staticmethod
    def final_record(
        entry: Entry,
        status: Status,
        error: ErrorInfo | None,
        fee_used: int,
        duration: float,
        effects: tuple[Effect, ...],
        bound: Any,
        use: tuple[int, int] | None = None,
    ) -> AuditRecord:
        """The one final audit record of an execution (seq and hashes set by the store);
        ``use`` is its (CPU nanoseconds, memory bytes), when measured."""
        request = entry.request
        caller, resource_id = request.caller, request.resource_id
        return AuditRecord(  # positional, in field order: keywords cost more on every commit
            0,  # seq
            "execution",  # record_kind
            time.time(),  # timestamp
            entry.execution_id,
            request.parent_id,
            caller if isinstance(caller, str) else repr(caller),
            resource_id if isinstance(resource_id, str) else None,
            _VALUE[status],
            _VALUE[error.kind] if error else None,  # error_kind
            error.message if error else None,  # message
            fee_used,
            duration,
            effect_digest(effects) if effects else None,
            _detail(request, bound, error, use),
        )


def commit_error(exc: BaseException) -> ErrorInfo:
    """What an execution whose commit failed ends with."""
    return ErrorInfo(ErrorKind.INTERNAL, f"commit failed: {type(exc).__name__}: {exc}")


def record_failure(store: Store, record: AuditRecord, error: ErrorInfo,
                   children: Sequence[AuditRecord] = ()) -> tuple[AuditRecord, ...]:
    """The final records of an execution whose commit failed (nothing of it was written)
    and of its nested executions, discarded with it: one more try, alone and without
    effects, so the log still has them. (The writer of worker processes uses it too.) The
    request's body is not written again (its digest stays in the record): the try must
    be as small as it can, and a replay takes such a failure as recorded."""
    detail = record.detail
    if type(detail.get("request")) is RequestRef:
        detail = {**detail, "request": str(detail["request"])}
    failed = attrs.evolve(
        record,
        detail=detail,
        status=_VALUE[Status.FAILED],
        error_kind=_VALUE[error.kind],
        message=error.message,
        effect_digest=None,
    )
    written = []
    for each in (*discarded(children, failed, error), failed):
        try:
            written.append(store.append(each))
        except Exception as exc:
            logger.opt(exception=exc).error(
                "the final record of {} could not be written either", each.execution_id
            )
    return tuple(written)


def _detail(request: ExecutionRequest, bound: Any, error: ErrorInfo | None,
            use: tuple[int, int] | None) -> dict[str, Any]:
    detail: dict[str, Any] = {"entry": request.entry}
    if bound is not None:
        detail["engine"] = bound.name
    if error is not None and error.source:
        detail["source"] = error.source
    if request.depth:
        detail["depth"] = request.depth
    if use is not None:
        usage_detail(detail, use)
    return detail

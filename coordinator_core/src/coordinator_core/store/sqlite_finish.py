"""One execution's commit through effect processors, as a job of the group commit.

``SqliteStore.finish`` commits one execution; ``SqliteStore.finish_many`` commits what a
worker process sent in one read as one group. Both build a ``PendingFinish`` per execution
whose effects are applied: its ``job`` runs in the group's transaction (a SAVEPOINT of its
own, so a veto rolls back only this execution), and ``outcome`` does what must follow the
commit (the state cache, the processors' ``commit``/``rollback``) and returns the
``Finished``, or raises what failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coordinator_core.store.base import BoundProcessor, Finished
from coordinator_core.store.chain import SealedRecords
from coordinator_core.store.effects import (
    Prepared,
    discarded,
    failed_records,
    finish_processors,
    prepare_all,
)
from coordinator_core.store.groupcommit import Job
from coordinator_core.store.sqlite_writer import StateLog, Writer
from coordinator_hookspecs import AuditRecord, Effect, ErrorInfo


class PendingFinish:
    """The job committing ``record`` with ``effects`` (and nested ``children`` records)."""

    __slots__ = ("job", "log", "prepared", "record", "store")

    def __init__(self, store: Any, record: AuditRecord, effects: Sequence[Effect],
                 processors: Sequence[BoundProcessor], children: Sequence[AuditRecord],
                 digest: str | None) -> None:
        self.store = store
        self.record = record
        self.log: StateLog = {}
        self.prepared: list[Prepared] = []
        log, prepared, router = self.log, self.prepared, store._router

        def run(w: Writer) -> tuple[SealedRecords, ErrorInfo | None]:
            w.savepoint()
            w.state_log = log
            try:
                routed = router.route(effects, processors)
                done = (Prepared([], routed) if isinstance(routed, ErrorInfo)
                        else prepare_all(record.execution_id or "", routed, w.txn))
                prepared.append(done)
                if done.error is None:
                    rows = [w.insert(c) for c in children] if children else []
                    rows.append(w.insert(record, digest))
                    return SealedRecords(rows), None
                w.undo()
                log.clear()  # rolled back: nothing of it is committed state
                rollback, final = failed_records(record, done.error, done.processors,
                                                 len(effects))
                lost = discarded(children, record, done.error)
                return SealedRecords([*(w.insert(c) for c in lost), w.insert(rollback, digest),
                                      w.insert(final, digest)]), done.error
            except BaseException:
                w.undo()
                log.clear()
                raise
            finally:
                w.state_log = None
                w.release()

        self.job = Job(run)

    def abandon(self) -> None:
        """Nothing of it was committed (its stamps already changed): processors roll back."""
        if self.prepared:
            finish_processors(self.record, self.prepared[0].processors, committed=False)

    def outcome(self, written: StateLog | None = None) -> Finished:
        """After the job's group: the ``Finished``, or the job's error raised."""
        job = self.job
        if job.error is not None:
            self.abandon()
            raise job.error
        records, error = job.result
        cache = self.store._state_cache
        for resource_id, (previous, stamp, writes) in self.log.items():
            cache.committed(resource_id, previous, stamp, writes)
        if written is not None:
            written.update(self.log)
        if self.prepared:
            done = self.prepared[0]
            for failure in finish_processors(self.record, done.processors, done.error is None):
                self.store._append_quietly(failure)
        return Finished(records, error)


def unapplied(record: AuditRecord, children: Sequence[AuditRecord],
              digest: str | None) -> tuple[tuple[AuditRecord, str | None], ...]:
    """The records of an execution whose effects are not applied (none, or it failed): its
    nested records (marked discarded unless it succeeded) and its own, to append."""
    kept = children if record.status == "succeeded" else discarded(children, record, None)
    return (*((c, None) for c in kept), (record, digest))

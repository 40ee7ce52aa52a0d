"""The store of a worker process: reads its own, writes through the coordinator's writer.

A worker reads resources, code and committed state from the data directory itself (SQLite
in WAL mode lets any number of processes read while one writes; the shared stamps file keeps
its state cache honest, see ``store/statecache.py``). Everything it would write — an
execution's effects with its final audit record, a lone audit record — goes to the
coordinator process as one message, where the one writer connection commits it in a group
with what the other workers finished, assigns the sequence numbers and links the chain.
An execution with effects waits for that commit (``finish`` is a call): its state lock
is held until its writes are durable, and a veto must reach its pipeline. An execution
without effects does not wait: its record is kept for the thread's next report, and
``ResultForwarder`` sends both in one message; the coordinator commits the record before it
releases the result, so a result is still never seen before its record is durable.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from coordinator_core.store.base import BoundProcessor, Finished
from coordinator_core.store.chain import SealedRecords
from coordinator_core.store.sqlite import SqliteStore
from coordinator_core.workers.channel import Channel, serve
from coordinator_hookspecs import AccessPolicy, AuditRecord, Effect, InvalidRequest, ResourceInfo

#: Message tags of the writes (calls, answered with a ``reply``).
FINISH = "finish"
APPEND = "append"
PUT_RESOURCE = "put_resource"
SET_POLICY = "set_policy"


class WorkerStore(SqliteStore):
    """``SqliteStore`` whose writes are calls to the coordinator process over ``channel``.

    Its own writer connection is opened (and the schema checked) but never written with: the
    worker takes no SQLite write lock, so workers never contend for it."""

    channel: Channel
    #: per thread: the record ``finish`` kept for the report that follows it
    unsent: threading.local

    def attach(self, channel: Channel, *, keep: bool) -> WorkerStore:
        """Write through ``channel``. ``keep``: hold effect-free records for the report
        (worker processes, whose coordinator completes the result); otherwise every commit
        is a call (a process using the writer socket completes its own results)."""
        self.channel = channel
        self.unsent = threading.local()
        self._keep = keep
        return self

    def finish(self, record: AuditRecord, effects: Sequence[Effect],
               processors: Sequence[BoundProcessor], children: Sequence[AuditRecord] = (),
               written: Any = None) -> Finished:
        """Commit in the coordinator process (with its effect processors, the same plugins
        this worker loaded); update this process's state cache with what was written. Without
        effects, kept for the report instead (see the module docstring)."""
        if not effects and self._keep:
            self.unsent.item = (record, tuple(children))
            return _KEPT
        rows, error, log = self.channel.call(FINISH, record, tuple(effects), tuple(children))
        for resource_id, (previous, stamp, writes) in log.items():
            self._state_cache.committed(resource_id, previous, stamp, writes)
        return Finished(records_of(rows), error)

    def finish_many(self, items: Sequence[tuple[AuditRecord, Sequence[Effect],
                                                Sequence[AuditRecord]]],
                    processors: Sequence[BoundProcessor]) -> list[tuple[Any, Any]]:
        """Never this process's own writer: each item is a ``finish`` call."""
        out: list[tuple[Any, Any]] = []
        for record, effects, children in items:
            try:
                out.append((self.finish(record, effects, processors, children), {}))
            except Exception as exc:
                out.append((exc, {}))
        return out

    def append(self, record: AuditRecord) -> AuditRecord:
        rows = self.channel.call(APPEND, (record,))
        return records_of(rows)[0]

    def _append_records(self, pairs: tuple[tuple[AuditRecord, str | None], ...]) -> Any:
        return records_of(self.channel.call(APPEND, tuple(record for record, _ in pairs)))

    def put_resource(self, info: ResourceInfo, code: bytes) -> tuple[ResourceInfo, bool]:
        stored: tuple[ResourceInfo, bool] = self.channel.call(PUT_RESOURCE, info, code)
        return stored

    def set_policy(self, resource_id: str, policy: AccessPolicy) -> ResourceInfo:
        info: ResourceInfo = self.channel.call(SET_POLICY, resource_id, policy)
        return info

    def restore(self, snapshot: Any) -> AuditRecord:
        """Refused: a snapshot goes into an empty directory that no coordinator serves."""
        raise InvalidRequest("a snapshot is imported into a data directory no coordinator "
                             "is writing to; stop it first")

    def close(self) -> None:
        super().close()
        self.channel.close()


def connected_store(data_dir: Any, settings: Any) -> WorkerStore:
    """``[coordinator] writer = "connect"``: a store writing through the writer socket of
    the coordinator serving ``data_dir`` (``writer.py``), with a thread reading its answers."""
    from coordinator_core.workers.writer import connect

    channel = connect(Path(data_dir))
    store = WorkerStore(data_dir, **attrs.asdict(settings)).attach(channel, keep=False)
    threading.Thread(target=serve, args=(channel, lambda _message: True), daemon=True,
                     name="coordinator-writer-answers").start()
    return store


#: What ``finish`` returns for a record it kept: no records (the worker has no audit sinks).
_KEPT = Finished(())


def rows_of(records: Sequence[AuditRecord]) -> Any:
    """What crosses the pipe for committed records: the sealed rows when the store kept them
    (plain lists, cheap to pickle), else the records."""
    if type(records) is SealedRecords:
        return ("rows", records._rows)
    return ("records", tuple(records))


def records_of(payload: Any) -> Sequence[AuditRecord]:
    kind, items = payload
    return SealedRecords(items) if kind == "rows" else items

"""``SqliteStore``: the embedded default store, one data directory, no server.

Layout: ``<data_dir>/coordinator.db`` (SQLite, WAL mode; schema in ``schema.py``) and
``<data_dir>/resources/<aa>/<sha256>`` (content-addressed bytes, ``files.py``).

Reads run on a connection per thread (``readers.py``); an execution's reads go through
the committed-state cache first (``statecache.py``). Writes
go through one writer connection driven by the group-commit leader (``groupcommit.py``):
each ``finish`` returns only after the transaction holding its records is committed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from coordinator_core.log import logger
from coordinator_core.store import requests
from coordinator_core.store.base import BoundProcessor, Finished, VerifyReport
from coordinator_core.store.chain import (
    ChainWalker,
    SealedRecords,
    missing_digest,
    record_of_row,
)
from coordinator_core.store.effects import Router
from coordinator_core.store.files import BlobFiles, check_id, check_new_resource
from coordinator_core.store.groupcommit import GroupCommitter, Job
from coordinator_core.store.merkle import GLOBAL
from coordinator_core.store.merkle_sqlite import SqliteNodes, roots, store_tree
from coordinator_core.store.readers import ReadConnections
from coordinator_core.store.roots import preview, proof_of, roots_of
from coordinator_core.store.schema import (
    AUDIT_COLUMNS,
    DURABILITY,
    RESOURCE_COLUMNS,
    connect,
    initialise,
    policy_json,
    resource_of,
    resource_row,
)
from coordinator_core.store.snapshot import Snapshot, refuse_unless_empty
from coordinator_core.store.sqlite_finish import PendingFinish, unapplied
from coordinator_core.store.sqlite_writer import StateLog, Writer
from coordinator_core.store.statecache import Stamps, StateCache
from coordinator_hookspecs import (
    AccessPolicy,
    AuditRecord,
    Effect,
    InvalidRequest,
    NotFound,
    ResourceInfo,
)

_PAGE = 500  # audit rows per query when walking the log: no snapshot held across yields


class SqliteStore:
    """SQLite + content-addressed files; see the module docstring and docs/storage.md."""

    def __init__(self, data_dir: str | os.PathLike[str], durability: str = "normal",
                 busy_timeout: float = 5.0, group_commit_max: int = 256,
                 keep_logs: bool = True, commit_delay: float = 0.0,
                 keep_requests: bool = True) -> None:
        if durability not in DURABILITY:
            raise InvalidRequest(f"durability must be one of {sorted(DURABILITY)}, "
                                 f"got {durability!r}")
        if busy_timeout <= 0 or group_commit_max < 1 or not 0 <= commit_delay <= 0.1:
            raise InvalidRequest("busy_timeout must be positive, group_commit_max at least 1 "
                                 "and commit_delay between 0 and 0.1 seconds")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "coordinator.db"
        self.durability = durability
        #: read by the pipeline: attach each top-level request to its final record
        self.keep_requests = keep_requests
        self._busy_timeout = busy_timeout
        self._files = BlobFiles(self.data_dir / "resources", fsync=durability == "full")
        self._stamps = Stamps(self.data_dir / "state.stamps")
        try:
            conn = connect(self.path, durability=durability, busy_timeout=busy_timeout,
                           readonly=False)
        except BaseException:
            self._stamps.close()
            raise
        try:
            initialise(conn, busy_timeout)
            self._writer = Writer(conn, keep_logs=keep_logs, stamps=self._stamps)
        except BaseException:
            conn.close()
            self._stamps.close()
            raise
        self._state_cache = StateCache(self._stamps, self.state_get)
        self._committer = GroupCommitter(self._writer.commit_batch, group_commit_max,
                                         commit_delay)
        self._router = Router()
        self._readers = ReadConnections(self.path, durability=durability,
                                        busy_timeout=busy_timeout)
        #: this thread's read connection (a bound method: one call on the hot path)
        self._reader = self._readers.get
        self._closed = False

    # -- connections ---------------------------------------------------------------------
    def _write(self, run: Any = None, single: bool = False,
               records: tuple[tuple[AuditRecord, str | None], ...] | None = None) -> Any:
        if self._closed:
            raise InvalidRequest("the store is closed")
        committer = self._committer
        if run is not None and not single and committer.try_alone():
            committed = False
            try:  # uncontended: the transaction runs here, no Job and no hand-off
                result = self._writer.run_alone(run)
                committed = True
                return result
            finally:
                committer.end_alone(committed)
        return committer.submit(Job(run, single, records))

    @property
    def commit_stats(self) -> tuple[int, int]:
        """(transactions committed, jobs committed): their ratio is the mean group size."""
        return self._committer.groups, self._committer.jobs

    # -- resources -----------------------------------------------------------------------
    def put_resource(self, info: ResourceInfo, code: bytes) -> tuple[ResourceInfo, bool]:
        check_new_resource(info, code)
        info = attrs.evolve(info, size=len(code), deployed_at=info.deployed_at or time.time())
        self._files.write(info.id, code)  # before the row: a row never points at no file

        def run(w: Writer) -> tuple[ResourceInfo, bool]:
            cursor = w.conn.execute(
                f"INSERT OR IGNORE INTO resources ({RESOURCE_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?)", resource_row(info))
            if cursor.rowcount:
                return info, True
            rows = w.conn.execute(f"SELECT {RESOURCE_COLUMNS} FROM resources WHERE id = ?",
                                  (info.id,)).fetchall()
            return resource_of(rows[0]), False

        result: tuple[ResourceInfo, bool] = self._write(run)
        return result

    def get_resource(self, resource_id: str) -> ResourceInfo | None:
        rows = self._reader().execute(
            f"SELECT {RESOURCE_COLUMNS} FROM resources WHERE id = ?", (resource_id,)).fetchall()
        return resource_of(rows[0]) if rows else None

    def load_code(self, resource_id: str) -> bytes:
        if self.get_resource(check_id(resource_id)) is None:
            raise NotFound(f"no resource with id {resource_id}")
        return self._files.read(resource_id)

    def list_resources(self) -> list[ResourceInfo]:
        rows = self._reader().execute(
            f"SELECT {RESOURCE_COLUMNS} FROM resources ORDER BY deployed_at, id").fetchall()
        return [resource_of(row) for row in rows]

    def set_policy(self, resource_id: str, policy: AccessPolicy) -> ResourceInfo:
        def run(w: Writer) -> ResourceInfo:
            w.conn.execute("UPDATE resources SET policy = ? WHERE id = ?",
                           (policy_json(policy), resource_id))
            rows = w.conn.execute(f"SELECT {RESOURCE_COLUMNS} FROM resources WHERE id = ?",
                                  (resource_id,)).fetchall()
            if not rows:
                raise NotFound(f"no resource with id {resource_id}")
            return resource_of(rows[0])

        info: ResourceInfo = self._write(run)
        return info

    def resources_version(self) -> int:
        rows = self._reader().execute(
            "SELECT value FROM meta WHERE key = 'resources_version'").fetchall()
        return int(rows[0][0]) if rows else 0

    # -- state and events ----------------------------------------------------------------
    def state_get(self, resource_id: str, key: bytes) -> bytes | None:
        # fetchall, never fetchone: an unfinished statement would pin an old WAL snapshot.
        rows = self._reader().execute(
            "SELECT value FROM state WHERE resource_id = ? AND key = ?",
            (resource_id, key)).fetchall()
        return rows[0][0] if rows else None

    def state_reader(self, resource_id: str) -> Callable[[bytes], bytes | None]:
        return self._state_cache.reader(resource_id)

    def state_items(self, resource_id: str) -> list[tuple[bytes, bytes]]:
        rows = self._reader().execute(
            "SELECT key, value FROM state WHERE resource_id = ? ORDER BY key",
            (resource_id,)).fetchall()
        return [(bytes(k), bytes(v)) for k, v in rows]

    def events(self, resource_id: str, limit: int = 100) -> list[dict[str, Any]]:
        if type(limit) is not int or limit < 1:
            raise InvalidRequest(f"limit must be a positive integer, got {limit!r}")
        rows = self._reader().execute(
            "SELECT seq, execution_id, kind, level, payload, timestamp FROM events "
            "WHERE resource_id = ? ORDER BY seq DESC LIMIT ?", (resource_id, limit)).fetchall()
        keys = ("seq", "execution_id", "kind", "level", "payload", "timestamp")
        return [dict(zip(keys, row, strict=True)) for row in reversed(rows)]

    # -- state roots ---------------------------------------------------------------------
    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[sqlite3.Connection]:
        """This thread's read connection inside one read transaction: every read made through
        this store on this thread until the block ends sees the same committed state."""
        conn = self._reader()
        if conn.in_transaction:  # nested: the outer block's snapshot already holds
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def roots(self, resource_id: str | None = None) -> dict[str, Any]:
        """The committed global root (and the state root of ``resource_id``), hex."""
        with self.read_snapshot() as conn:
            return roots_of(SqliteNodes(conn), resource_id)

    def prove(self, resource_id: str, key: bytes) -> dict[str, Any]:
        """The committed value of ``key`` with its proofs (``roots.proof_of``)."""
        with self.read_snapshot() as conn:
            return proof_of(SqliteNodes(conn), resource_id, key,
                            self.state_get(resource_id, key))

    def preview_roots(self, effects: Sequence[Effect],
                      resource_id: str | None = None) -> dict[str, Any]:
        """The roots committing ``effects`` now would produce, writing nothing."""
        with self.read_snapshot() as conn:
            return preview(SqliteNodes(conn), effects, resource_id)

    def restore(self, snapshot: Snapshot) -> AuditRecord:
        """Write a verified snapshot (``snapshot.py``) into this empty store, in one
        transaction ending with its ``snapshot`` record."""
        for item in snapshot.resources:  # before the rows: a row never points at no file
            self._files.write(item.info.id, item.code)

        def run(w: Writer) -> AuditRecord:
            conn = w.conn
            counts = conn.execute("SELECT (SELECT count(*) FROM resources), "
                                  "(SELECT count(*) FROM audit)").fetchall()[0]
            refuse_unless_empty(counts[0], counts[1], roots(conn, ())[GLOBAL])
            for item in snapshot.resources:
                conn.execute(f"INSERT INTO resources ({RESOURCE_COLUMNS}) VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?, ?)", resource_row(item.info))
                if item.state:
                    w.writing(item.info.id)  # stamps the slot: no process keeps stale values
                    conn.executemany("INSERT INTO state VALUES (?, ?, ?)",
                                     [(item.info.id, k, v) for k, v in item.state])
                store_tree(conn, item.info.id, item.nodes)
            store_tree(conn, GLOBAL, snapshot.global_nodes)
            w.nodes.clear()  # the trees were written around the writer's node cache
            return record_of_row(w.insert(snapshot.record()))

        try:
            record: AuditRecord = self._write(run)
        finally:  # committed or not, what the cache read inside the restore is not kept
            self._writer.nodes.clear()
        return record

    # -- audit and commit ----------------------------------------------------------------
    def finish(self, record: AuditRecord, effects: Sequence[Effect],
               processors: Sequence[BoundProcessor],
               children: Sequence[AuditRecord] = (),
               written: StateLog | None = None) -> Finished:
        """``Store.finish``; ``written`` receives the state writes committed (for a worker's
        state cache)."""
        digest = missing_digest(record, effects)
        if not (effects and record.status == "succeeded"):
            return Finished(self._append_records(unapplied(record, children, digest)), None)
        if not children:
            routed = self._router.route(effects, processors)
            if type(routed) is list and len(routed) == 1 and routed[0][0].txn_only:
                finished = self._finish_flat(record, digest, routed[0][0], effects, written)
                if finished is not None:
                    return finished
        pending = PendingFinish(self, record, effects, processors, children, digest)
        try:
            pending.job.result = self._write(pending.job.run)
        except BaseException:
            pending.abandon()
            raise
        return pending.outcome(written)

    def finish_many(self, items: Sequence[tuple[AuditRecord, Sequence[Effect],
                                                Sequence[AuditRecord]]],
                    processors: Sequence[BoundProcessor]) -> list[tuple[Any, StateLog]]:
        """``finish`` of several executions as one group (what a worker process sent in one
        read): each item's (``Finished`` or the exception it raised, state written)."""
        if len(items) == 1:  # alone: finish's short paths (one statement, or flat) apply
            record, effects, children = items[0]
            alone: StateLog = {}
            try:
                return [(self.finish(record, effects, processors, children, alone), alone)]
            except Exception as exc:
                return [(exc, alone)]
        if self._closed:
            raise InvalidRequest("the store is closed")
        jobs: list[Job] = []
        pendings: list[Any] = []
        for record, effects, children in items:
            digest = missing_digest(record, effects)
            if effects and record.status == "succeeded":
                pending: Any = PendingFinish(self, record, effects, processors, children, digest)
                jobs.append(pending.job)
            else:
                pending = Job(records=unapplied(record, children, digest))
                jobs.append(pending)
            pendings.append(pending)
        self._committer.submit_all(jobs)
        out: list[tuple[Any, StateLog]] = []
        for pending in pendings:
            written: StateLog = {}
            try:
                if type(pending) is Job:
                    if pending.error is not None:
                        raise pending.error
                    out.append((Finished(pending.result, None), written))
                else:
                    out.append((pending.outcome(written), written))
            except Exception as exc:
                out.append((exc, written))
        return out

    def _finish_flat(self, record: AuditRecord, digest: str | None, bound: BoundProcessor,
                     effects: Sequence[Effect], written: StateLog | None) -> Finished | None:
        """``finish`` of the usual execution on a short path: no nested executions, all its
        effects for one ``txn_only`` processor (the built-in state processor), no commit in
        progress. None when it cannot be taken, or was vetoed or refused with nothing
        written: ``finish`` then takes the general path, which commits (or reports) the same
        execution; a failed transaction raises ``InternalError`` here already. The
        general path's job, savepoint and processor bookkeeping are a measurable share of an
        execution's cost in the pipeline benchmark."""
        if self._closed or not self._committer.try_alone():
            return None
        log: StateLog = {}
        row = None
        try:
            row = self._writer.commit_flat(record, digest, bound.processor, effects, log)
        finally:
            self._committer.end_alone(row is not None)
        if row is None:
            return None
        for resource_id, (previous, stamp, writes) in log.items():
            self._state_cache.committed(resource_id, previous, stamp, writes)
        if written is not None:
            written.update(log)
        return Finished(SealedRecords([row]), None)

    def _append_quietly(self, record: AuditRecord) -> None:
        try:
            self.append(record)
        except Exception:
            logger.opt(exception=True).error("could not append {} record of execution {}",
                                             record.record_kind, record.execution_id)

    def append(self, record: AuditRecord) -> AuditRecord:
        return self._append_records(((record, None),))[0]

    def _append_records(self, pairs: tuple[tuple[AuditRecord, str | None], ...]
                        ) -> SealedRecords:
        """Append ``(record, effect digest)`` pairs, in order, as one job of the group."""
        sealed: SealedRecords = self._write(records=pairs)
        return sealed

    def execution(self, execution_id: str) -> AuditRecord | None:
        rows = self._reader().execute(
            f"SELECT {AUDIT_COLUMNS} FROM audit WHERE execution_id = ? "
            "AND record_kind = 'execution'", (execution_id,)).fetchall()
        return record_of_row(rows[0]) if rows else None

    def _rows(self, start: int) -> Iterator[tuple[Any, ...]]:
        conn = self._reader()
        while True:
            rows = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit WHERE seq >= ? "
                                "ORDER BY seq LIMIT ?", (start, _PAGE)).fetchall()
            yield from rows
            if len(rows) < _PAGE:
                return
            start = rows[-1][0] + 1

    def audit_records(self, start: int = 1) -> Iterator[AuditRecord]:
        for row in self._rows(start):
            yield record_of_row(row)

    def verify(self) -> VerifyReport:
        walker = ChainWalker()
        for row in self._rows(-(2**63)):
            if not walker.feed(row[:13], row[13], row[14], row[15]):
                break
        return walker.report()

    def kept_request(self, digest: str) -> bytes | None:
        """The request body kept under ``digest`` (``store/requests.py``), None if none."""
        return requests.load(self._reader(), digest)

    def integrity_check(self) -> str:
        """SQLite's own ``PRAGMA integrity_check`` ("ok" when the file is sound)."""
        rows = self._reader().execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(row[0]) for row in rows)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._readers.close()
        self._writer.conn.close()
        self._state_cache.clear()
        self._stamps.close()

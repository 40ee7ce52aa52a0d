"""The write side of ``SqliteStore``: one connection, driven by the group-commit leader.

Only the current leader (see ``groupcommit.py``) touches this object, so the connection and
the chain head need no lock. Each group is one ``BEGIN IMMEDIATE`` ... ``COMMIT``; an
execution whose effects go through processors gets a SAVEPOINT of its own, so one execution's
veto rolls back its writes without aborting the other executions of the group.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from coordinator_core.store.chain import GENESIS, SealedRecords, seal_row
from coordinator_core.store.groupcommit import Job
from coordinator_core.store.merkle import GLOBAL, apply_writes, rooted, with_roots
from coordinator_core.store.merkle_cache import _UNKNOWN as _UNCHANGED
from coordinator_core.store.merkle_cache import CachedNodes
from coordinator_core.store.merkle_sqlite import roots
from coordinator_core.store.requests import keep, refs_of
from coordinator_core.store.schema import INSERT_AUDIT
from coordinator_core.store.sqlite_txn import SqliteTxn
from coordinator_core.store.statecache import Stamps
from coordinator_hookspecs import AuditRecord, Effect, InternalError, InvalidRequest

#: What one job wrote to state, per resource: (stamp replaced, stamp put, key -> value or
#: None for a removal). See ``statecache.py``.
StateLog = dict[str, tuple[int, int, dict[bytes, bytes | None]]]


class Writer:
    """Owns the writer connection and the in-transaction chain head."""

    def __init__(self, conn: sqlite3.Connection, *, keep_logs: bool,
                 stamps: Stamps | None = None) -> None:
        self.conn = conn
        #: one cursor for the statements of every commit (``conn.execute`` makes a new one
        #: per call); never used for a query, so no statement is ever left open on it
        self.cursor = conn.cursor()
        self.keep_logs = keep_logs
        self.stamps = stamps
        #: the state writes of the job running now (``finish`` sets and takes it)
        self.state_log: StateLog | None = None
        self.txn = SqliteTxn(self)
        #: state writes not yet applied to the state trees (resource -> key -> value or
        #: None): applied in one go before the next record is sealed (``with_roots``)
        self.tree_writes: dict[str, dict[bytes, bytes | None]] = {}
        #: the state trees' nodes, cached: this connection is the only one changing them
        self.nodes = CachedNodes(conn)
        self.now = 0.0
        self.seq = 0
        self.head = GENESIS
        self.reload_head()
        self._mark: tuple[int, bytes] = (self.seq, self.head)
        self._solo = False

    def reload_head(self) -> None:
        """Read the chain head from the database (at open, and when another process has
        appended since: see ``insert``)."""
        rows = self.conn.execute(
            "SELECT seq, chain_hash FROM audit ORDER BY seq DESC LIMIT 1").fetchall()
        self.seq, self.head = (rows[0][0], rows[0][1]) if rows else (0, GENESIS)

    # -- the group transaction -----------------------------------------------------------
    def commit_batch(self, jobs: list[Job]) -> None:
        """Run ``jobs`` in one transaction. A job's own failure stays its own; a failure of
        the transaction (disk full, I/O error, lock timeout) fails every job of the group."""
        conn = self.conn
        if jobs[0].records is not None and all(job.records is not None for job in jobs) \
                and self._append_group(jobs):
            return
        if len(jobs) == 1 and jobs[0].single:
            # One statement alone: SQLite's implicit transaction commits it just as durably,
            # and skipping BEGIN/COMMIT saves two statements on the uncontended path.
            job = jobs[0]
            try:
                job.result = self._run(job)
            except sqlite3.Error as exc:
                job.error = InternalError(f"store write failed: {exc}")
            except Exception as exc:
                job.error = exc
            return
        start = (self.seq, self.head)
        self._solo = len(jobs) == 1
        try:
            self.cursor.execute("BEGIN IMMEDIATE")
            self.now = time.time()
            for job in jobs:
                try:
                    job.result = self._run(job)
                except sqlite3.Error as exc:
                    if not conn.in_transaction:  # SQLite aborted the whole transaction
                        raise
                    job.error = InternalError(f"store write failed: {exc}")
                except Exception as exc:
                    job.error = exc
                if not conn.in_transaction:
                    # SQLite rolled the group back under us (disk full, I/O error): anything
                    # more would run outside a transaction, committing piecemeal.
                    raise sqlite3.OperationalError("the group's transaction was rolled back")
            self.nodes.flush()
            self.cursor.execute("COMMIT")
            self.nodes.commit()
        except Exception as exc:
            self._abandon(start)
            error = InternalError(f"store commit failed, nothing of this group was written: "
                                  f"{type(exc).__name__}: {exc}")
            for job in jobs:
                job.result = None
                if job.error is None:
                    job.error = error

    def run_alone(self, run: Any) -> Any:
        """One job's transaction, run by its own caller (``GroupCommitter.try_alone``):
        ``commit_batch`` for a group of one, without the ``Job``. A failed transaction raises
        ``InternalError``. A job that raises is rolled back here; in a group it must undo its
        own writes first, as ``finish``'s job does (the group's transaction commits)."""
        start = (self.seq, self.head)
        self._solo = True
        cursor = self.cursor
        try:
            cursor.execute("BEGIN IMMEDIATE")
            self.now = time.time()
            result = run(self)
            self.nodes.flush()
            cursor.execute("COMMIT")
            self.nodes.commit()
            return result
        except BaseException as exc:
            failed = isinstance(exc, sqlite3.Error)
            self._abandon(start, reload=failed)
            if failed:
                raise InternalError(f"store commit failed, nothing of it was written: "
                                    f"{type(exc).__name__}: {exc}") from None
            raise

    def commit_flat(self, record: AuditRecord, digest: str | None, processor: Any,
                    effects: Sequence[Effect], log: StateLog) -> list[Any] | None:
        """The usual execution's whole transaction, written out flat (the short path of
        ``SqliteStore.finish``, run by the caller holding the writer alone): ``processor``'s
        ``prepare`` writes ``effects`` through ``txn`` (state writes noted in ``log``), then
        ``record`` is sealed and inserted. Returns its row; or None, with nothing written,
        ``log`` empty and the chain head unchanged, when ``prepare`` vetoed or the INSERT was
        refused (another process's record took our ``seq``, or the execution already has a
        final record): the general path then commits or reports the same execution. A
        failure of the transaction itself (a lock held past ``busy_timeout``, a full disk)
        raises ``InternalError`` at once, as the general path would, without waiting twice."""
        cursor = self.cursor
        seq, head = self.seq, self.head
        self.state_log = log
        try:
            cursor.execute("BEGIN IMMEDIATE")
            self.now = time.time()
            processor.prepare(record.execution_id or "", effects, self.txn)
            row = seal_row(self.with_roots(record), seq + 1, head, digest)
            keep(cursor, refs_of((record,)))
            cursor.execute(INSERT_AUDIT, row)
            self.nodes.flush()
            cursor.execute("COMMIT")
            self.nodes.commit()
        except BaseException as exc:
            log.clear()
            self.tree_writes.clear()
            self.nodes.rollback()
            try:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
            except sqlite3.Error:  # a transaction SQLite could not roll back is gone anyway
                pass
            if not isinstance(exc, sqlite3.Error) or isinstance(exc, sqlite3.IntegrityError):
                if not isinstance(exc, Exception):
                    raise
                return None
            raise InternalError(f"store commit failed, nothing of it was written: "
                                f"{type(exc).__name__}: {exc}") from None
        finally:
            self.state_log = None
        self.seq, self.head = seq + 1, row[-1]
        return row

    def _abandon(self, start: tuple[int, bytes], reload: bool = True) -> None:
        """Roll back the open transaction and put the chain head back where it was; after a
        failed transaction, re-read it too: what is really on disk decides the next seq and
        link, not our memory. (Not after a job's own failure: a log whose tail was deleted
        behind our back keeps its visible gap, see ``insert``.)"""
        self.tree_writes.clear()
        self.nodes.rollback()
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.seq, self.head = start
        if not reload:
            return
        try:
            self.reload_head()
        except sqlite3.Error:
            pass

    def _run(self, job: Job) -> Any:
        if job.run is not None:
            return job.run(self)
        assert job.records is not None
        return SealedRecords([self.insert(record, digest) for record, digest in job.records])

    def _append_group(self, jobs: list[Job]) -> bool:
        """Write a group of append-only jobs as ONE multi-row INSERT, atomic by itself.

        Under the GIL this matters more than the statement count suggests: each statement
        releases the GIL while SQLite works and must win it back from the threads running
        other executions, so a group of N records costs N+2 such waits in a transaction and
        one here. Returns False, with nothing written, when the statement is refused (a
        duplicate final record, another process's record taking our ``seq``) or the group
        is too big for one statement: the caller then runs the group one record at a time,
        which sorts out each job's own outcome. Any other SQLite error (disk full, a lock
        held past ``busy_timeout``) fails the whole group at once, as a transaction would:
        retrying record by record would only wait the timeout again."""
        count = sum(len(job.records or ()) for job in jobs)
        if count > MAX_ROWS:
            return False
        seq, head = self.seq, self.head
        rows: list[Any] = []
        sealed: list[SealedRecords] = []
        try:
            # one read of every root the group's execution records carry (none: no read)
            rooted_ids = [record.resource_id or "" for job in jobs
                          for record, _ in job.records or () if rooted(record)]
            known = self.roots(rooted_ids) if rooted_ids else None
            for job in jobs:
                own = []
                for record, digest in job.records or ():
                    seq += 1
                    row = seal_row(self.with_roots(record, known), seq, head, digest)
                    head = row[-1]
                    rows.extend(row)
                    own.append(row)
                sealed.append(SealedRecords(own))
        except Exception:  # a record that cannot be sealed fails its own job, on that path
            return False
        try:
            # Kept requests first, in a statement of their own: a body whose record is then
            # refused stays behind unreferenced, harmless (content-addressed, reused).
            keep(self.cursor, refs_of(record for job in jobs for record, _ in job.records or ()))
            self.conn.execute(_insert_rows(count), rows)
        except sqlite3.IntegrityError:  # refused: the careful path decides per job
            return False
        except sqlite3.Error as exc:  # disk full, I/O, lock timeout: the group fails as one
            error = InternalError(f"store commit failed, nothing of this group was written: "
                                  f"{type(exc).__name__}: {exc}")
            for job in jobs:
                job.error = error
            return True
        self.seq, self.head = seq, head
        for job, records in zip(jobs, sealed, strict=True):
            job.result = records
        return True

    # -- helpers for jobs ----------------------------------------------------------------
    def with_roots(self, record: AuditRecord,
                   known: dict[str, bytes] | None = None) -> AuditRecord:
        """Apply the pending state writes to the state trees (in the open transaction), then
        give an execution's final record its resource's state root and the global root
        (from ``known`` when the caller read them already)."""
        written = None
        if self.tree_writes:
            self.nodes.sync()
            written = apply_writes(self.nodes, self.tree_writes)
            self.tree_writes = {}
        if not rooted(record):
            return record
        resource_id = record.resource_id or ""
        found = written if written is not None and resource_id in written else known
        if found is None or resource_id not in found:
            found = self.roots((resource_id,))
        return with_roots(record, found[resource_id], found[GLOBAL])

    def roots(self, resource_ids: Sequence[str]) -> dict[str, bytes]:
        """The roots of ``resource_ids`` and the global root (under ``GLOBAL``), as written
        so far: from the node cache for the trees it holds whole, else in one query (a
        record that wrote nothing does not make the cache read a tree)."""
        nodes = self.nodes
        nodes.sync()
        found: dict[str, bytes] = {}
        missing = []
        for tree in (*resource_ids, GLOBAL):
            root = nodes.known_root(tree)  # includes what this transaction changed
            if root is _UNCHANGED:
                missing.append(tree)
            else:
                found[tree] = root  # type: ignore[assignment]
        if missing:  # none of these trees changed in this transaction: the table is current
            read = roots(self.conn, [tree for tree in missing if tree != GLOBAL])
            for tree in missing:
                found[tree] = read[tree]
                nodes.remember_root(tree, read[tree])
        return found

    def writing(self, resource_id: str) -> dict[bytes, bytes | None]:
        """Before a state write in the open transaction: the first one of a resource in this
        job stamps the resource's slot, so every process's cached values of it are dropped
        before the write can commit (``statecache.py``). Returns the job's log of the
        resource's writes, for the caller to note the write in once it was made."""
        stamps, log = self.stamps, self.state_log
        noted = log.get(resource_id) if log is not None else None
        if noted is not None:
            return noted[2]
        if stamps is None:
            return {}
        previous, new = stamps.stamp(stamps.slot(resource_id))
        if log is None:  # not an execution's commit: the stamp invalidates, nothing is kept
            return {}
        noted = log[resource_id] = (previous, new, {})
        return noted[2]

    def savepoint(self) -> None:
        """Mark where this execution's writes start. Alone in its group (the uncontended
        case) the group's transaction is the savepoint: two statements fewer per commit."""
        if not self._solo:
            self.conn.execute("SAVEPOINT execution")
        self._mark = (self.seq, self.head)
        self.nodes.savepoint()

    def release(self) -> None:
        if not self._solo:
            self._require_transaction()
            self.conn.execute("RELEASE execution")

    def _require_transaction(self) -> None:
        if not self.conn.in_transaction:
            raise sqlite3.OperationalError("the group's transaction was rolled back")

    def undo(self) -> None:
        """Roll back this execution's writes (the transaction stays open for what follows,
        such as the rollback record) and restore the chain head."""
        self.tree_writes.clear()
        self.nodes.undo()
        if self._solo:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            self._require_transaction()
            self.conn.execute("ROLLBACK TO execution")
        self.seq, self.head = self._mark

    def insert(self, record: AuditRecord, digest: str | None = None) -> list[Any]:
        """Seal ``record`` as the next link of the chain and insert it; returns its row
        (``SealedRecords`` turns it into the sealed record when read).

        The head is cached between groups instead of re-read each time (one statement less
        per commit). Another process appending to the same log (the CLI deploying while a
        server runs) makes our next ``seq`` collide with its record: the primary key refuses
        it, and we re-read the head and seal again. A log whose tail was deleted behind our
        back is not papered over: our next record keeps its number and verify reports the gap.
        """
        record = self.with_roots(record)
        row = seal_row(record, self.seq + 1, self.head, digest)
        keep(self.cursor, refs_of((record,)))
        try:
            self.cursor.execute(INSERT_AUDIT, row)
        except sqlite3.IntegrityError as exc:
            if "audit.seq" not in str(exc):
                raise _refused(record) from None
            own = not self.conn.in_transaction  # hold the lock between reading and writing
            if own:
                self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.reload_head()
                row = seal_row(record, self.seq + 1, self.head, digest)
                self.conn.execute(INSERT_AUDIT, row)
            except sqlite3.IntegrityError:
                if own:
                    self.conn.execute("ROLLBACK")
                raise _refused(record) from None
            if own:
                self.conn.execute("COMMIT")
        self.seq, self.head = row[0], row[-1]
        return row


#: Most audit rows in one multi-row INSERT (16 parameters each, well under SQLite's limit).
MAX_ROWS = 512
_ROW = "(" + ", ".join("?" * 16) + ")"


@functools.lru_cache(maxsize=MAX_ROWS)
def _insert_rows(count: int) -> str:
    return INSERT_AUDIT.split(" VALUES ")[0] + " VALUES " + ", ".join([_ROW] * count)


def _refused(record: AuditRecord) -> Exception:
    if record.record_kind == "execution":
        return InvalidRequest(f"execution {record.execution_id} already has a final audit "
                              "record")
    return InternalError(f"the audit log refused a {record.record_kind} record")

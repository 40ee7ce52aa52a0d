"""Many threads finishing at once: every record is present exactly once, the chain is valid,
every thread reads its own committed writes, and commits were grouped."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from coordinator_core.store import BoundProcessor, MemoryStore, SqliteStore, Store
from coordinator_core.store.groupcommit import Job
from coordinator_core.store.state_processor import KINDS, StateProcessor
from coordinator_hookspecs import AuditRecord, Effect, InternalError, InvalidRequest

PROCESSORS = (BoundProcessor("state", StateProcessor(), KINDS),)
RID = "cd" * 32
THREADS, PER_THREAD = 8, 60


def hammer(store: Store) -> list[str]:
    errors: list[str] = []
    start = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        start.wait()
        for i in range(PER_THREAD):
            eid = f"t{t}-{i}"
            status = "succeeded" if i % 5 else "failed"
            record = AuditRecord(seq=0, record_kind="execution", timestamp=time.time(),
                                 execution_id=eid, caller=f"c{t}", resource_id=RID,
                                 status=status)
            done = store.finish(record, [Effect("state.set", RID, eid.encode(), b"v"),
                                         Effect("event", RID, value=eid.encode())], PROCESSORS)
            seen = store.state_get(RID, eid.encode())  # read-your-writes after finish
            if (seen == b"v") != (status == "succeeded") or done.error is not None:
                errors.append(f"{eid}: {status} but state {seen!r}, error {done.error}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_concurrent_finishes(tmp_path: Path, kind: str) -> None:
    store: Store = SqliteStore(tmp_path) if kind == "sqlite" else MemoryStore()
    assert hammer(store) == []
    records = list(store.audit_records())
    total = THREADS * PER_THREAD
    assert len(records) == total
    assert sorted(r.seq for r in records) == list(range(1, total + 1))
    assert len({r.execution_id for r in records}) == total
    report = store.verify()
    assert report.ok and report.count == total
    succeeded = {r.execution_id for r in records if r.status == "succeeded"}
    assert {k.decode() for k, _ in store.state_items(RID)} == succeeded
    assert {e["payload"].decode() for e in store.events(RID, limit=total)} == succeeded
    if isinstance(store, SqliteStore):
        groups, jobs = store.commit_stats
        assert jobs == total and groups <= jobs
    store.close()


def test_readers_on_many_threads_see_commits(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    stop = threading.Event()
    stale: list[bytes | None] = []

    def reader() -> None:
        last = 0
        while not stop.is_set():
            value = store.state_get(RID, b"n")
            current = int(value or b"0")
            if current < last:
                stale.append(value)
            last = current

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    for n in range(1, 51):
        record = AuditRecord(seq=0, record_kind="execution", timestamp=time.time(),
                             execution_id=f"n{n}", resource_id=RID, status="succeeded")
        store.finish(record, [Effect("state.set", RID, b"n", str(n).encode())], PROCESSORS)
        assert store.state_get(RID, b"n") == str(n).encode()
    stop.set()
    for thread in readers:
        thread.join(5)
    assert stale == []  # no reader ever went back in time
    store.close()


def test_a_thread_s_read_connection_closes_with_the_thread(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    threads = [threading.Thread(target=store.state_get, args=(RID, b"k")) for _ in range(20)]
    for thread in threads:
        thread.start()
        thread.join()
    del threads
    assert len(store._readers) <= 1  # not 20 open connections
    store.state_get(RID, b"k")
    store.close()


class Gate:
    """An effect processor that holds its execution's commit until released."""

    def __init__(self) -> None:
        self.entered, self.go = threading.Event(), threading.Event()

    def prepare(self, execution_id: str, effects: object, txn: object) -> None:
        self.entered.set()
        self.go.wait(5)

    def commit(self, execution_id: str) -> None: ...

    def rollback(self, execution_id: str) -> None: ...


def _final(eid: str) -> AuditRecord:
    return AuditRecord(seq=0, record_kind="execution", timestamp=time.time(),
                       execution_id=eid, status="succeeded")


def _queue_finishes(store: SqliteStore, n: int) -> list[threading.Thread]:
    """Start ``n`` finishes of final records on threads of their own, and wait (up to 5 s)
    until all of them queue behind the commit in progress."""
    queued = [threading.Thread(target=store.finish, args=(_final(f"q{i}"), [], ()))
              for i in range(n)]
    for thread in queued:
        thread.start()
    deadline = time.monotonic() + 5
    while len(store._committer._queue) < n and time.monotonic() < deadline:
        time.sleep(0.001)
    return queued


def test_commit_delay_gathers_concurrent_executions(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path, commit_delay=0.1)
    gate = Gate()
    gated = (BoundProcessor("gate", gate, frozenset({"gate"})),)
    committer = store._committer
    # 1. Make executions finish concurrently: one holds the writer, two queue behind it.
    holder = threading.Thread(target=store.finish,
                              args=(_final("hold"), [Effect("gate", RID)], gated))
    holder.start()
    assert gate.entered.wait(5)
    queued = _queue_finishes(store, 2)
    gate.go.set()
    for thread in [holder, *queued]:
        thread.join(5)
    groups_before = store.commit_stats[0]
    # 2. Under that load the next leader waits; a finish arriving meanwhile joins its group.
    first = threading.Thread(target=store.finish, args=(_final("first"), [], ()))
    first.start()
    deadline = time.monotonic() + 5
    while not committer._busy and time.monotonic() < deadline:
        time.sleep(0.0005)
    store.finish(_final("second"), [], ())
    first.join(5)
    assert store.commit_stats[0] == groups_before + 1  # two executions, one transaction
    assert store.verify().ok and store.verify().count == 5
    store.close()


def _record_job(store: SqliteStore, execution_id: str) -> Job:
    record = AuditRecord(seq=0, record_kind="execution", timestamp=time.time(),
                         execution_id=execution_id, caller="c", resource_id=RID,
                         status="succeeded")
    return Job(records=((record, None),))


def test_a_group_of_appends_is_one_statement(tmp_path: Path) -> None:
    """Record-only jobs of one group go in as one multi-row INSERT (under the GIL each
    statement is a wait to win the GIL back), sealed in order, chain intact; the state roots
    their final records carry are read once for the whole group."""
    store = SqliteStore(tmp_path)
    statements: list[str] = []
    store._writer.conn.set_trace_callback(statements.append)
    jobs = [_record_job(store, f"e{i}") for i in range(5)]
    store._writer.commit_batch(jobs)
    store._writer.conn.set_trace_callback(None)
    assert statements.count("PRAGMA data_version") == 1  # the node cache's check, once
    statements = [s for s in statements if s != "PRAGMA data_version"]
    assert len(statements) == 2 and statements[0].startswith("SELECT tree, hash FROM merkle")
    assert statements[1].startswith("INSERT INTO audit")
    assert [job.error for job in jobs] == [None] * 5
    assert [job.result[0].seq for job in jobs] == [1, 2, 3, 4, 5]
    assert [r.execution_id for r in store.audit_records()] == [f"e{i}" for i in range(5)]
    assert store.verify().ok
    store.close()


def test_a_refused_record_in_a_group_fails_only_its_own_job(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store._writer.commit_batch([first := _record_job(store, "dup")])
    assert first.error is None
    jobs = [_record_job(store, "a"), _record_job(store, "dup"), _record_job(store, "b")]
    store._writer.commit_batch(jobs)
    assert jobs[0].error is None and jobs[2].error is None
    assert isinstance(jobs[1].error, InvalidRequest)
    assert "already has a final audit record" in str(jobs[1].error)
    assert [r.execution_id for r in store.audit_records()] == ["dup", "a", "b"]
    report = store.verify()
    assert report.ok and report.count == 3
    store.close()


def test_a_locked_database_fails_a_group_of_appends_once(tmp_path: Path) -> None:
    """A lock held past busy_timeout (another process writing) fails the group after one
    timeout, not one per fallback attempt; nothing is written and the next append works."""
    store = SqliteStore(tmp_path, busy_timeout=0.5)
    other = sqlite3.connect(tmp_path / "coordinator.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    job = _record_job(store, "locked")
    started = time.monotonic()
    store._writer.commit_batch([job])
    elapsed = time.monotonic() - started
    other.execute("ROLLBACK")
    other.close()
    assert isinstance(job.error, InternalError) and "locked" in str(job.error)
    assert elapsed < 0.9  # one busy_timeout (0.5 s), where the retry made it two
    assert list(store.audit_records()) == []
    store._writer.commit_batch([again := _record_job(store, "after")])
    assert again.error is None and store.verify().ok
    store.close()


def test_an_uncontended_commit_runs_alone_and_hands_the_writer_on(tmp_path: Path) -> None:
    """With no commit in progress a finish runs its transaction on its own thread, without
    a Job; callers arriving meanwhile queue, and the first of them leads the next group."""
    store = SqliteStore(tmp_path)
    gate = Gate()
    gated = (BoundProcessor("gate", gate, frozenset({"gate"})), *PROCESSORS)
    committer = store._committer
    alone = threading.Thread(target=store.finish, args=(
        _final("alone"), [Effect("gate", RID), Effect("state.set", RID, b"k", b"v")], gated))
    alone.start()
    assert gate.entered.wait(5)
    assert committer._busy and not committer._queue  # the writer is taken, by no Job
    queued = _queue_finishes(store, 3)
    assert len(committer._queue) == 3
    gate.go.set()
    for thread in [alone, *queued]:
        thread.join(5)
        assert not thread.is_alive()
    assert not committer._busy and not committer._queue
    assert store.state_get(RID, b"k") == b"v"
    assert sorted(r.execution_id or "" for r in store.audit_records()) == \
        ["alone", "q0", "q1", "q2"]
    groups, jobs = store.commit_stats
    assert jobs == 4 and groups in (2, 3, 4)  # the queued three in one group or more
    assert store.verify().ok
    store.close()


@pytest.mark.parametrize("failure", [ValueError("job bug"), sqlite3.OperationalError("disk")])
def test_a_job_failing_alone_leaves_nothing_written(tmp_path: Path,
                                                    failure: Exception) -> None:
    """A job that fails after writing, alone on the writer, is rolled back whole (an SQLite
    failure is reported as ``InternalError``); the chain head is where it was and the next
    commit works."""
    store = SqliteStore(tmp_path)
    store.finish(_final("before"), [], ())

    def run(w: object) -> None:
        store._writer.cursor.execute("INSERT INTO state VALUES (?, ?, ?)", (RID, b"k", b"v"))
        store._writer.insert(_final("half"))
        raise failure

    expected = InternalError if isinstance(failure, sqlite3.Error) else ValueError
    with pytest.raises(expected):
        store._write(run)
    assert store.state_get(RID, b"k") is None
    assert [r.execution_id for r in store.audit_records()] == ["before"]
    assert not store._committer._busy
    store.finish(_final("after"), [Effect("state.set", RID, b"k", b"w")], PROCESSORS)
    assert store.state_get(RID, b"k") == b"w"
    report = store.verify()
    assert report.ok and report.count == 2
    store.close()


def test_a_group_without_final_records_reads_no_roots(tmp_path: Path) -> None:
    """Only an execution's final record carries roots: a group of other records (deploys,
    security decisions) stays one statement."""
    store = SqliteStore(tmp_path)
    statements: list[str] = []
    store._writer.conn.set_trace_callback(statements.append)
    jobs = [Job(records=((AuditRecord(seq=0, record_kind="security", timestamp=time.time(),
                                      caller="c", status="succeeded"), None),))
            for _ in range(3)]
    store._writer.commit_batch(jobs)
    store._writer.conn.set_trace_callback(None)
    assert len(statements) == 1 and statements[0].startswith("INSERT INTO audit")
    assert all("state_root" not in r.detail for r in store.audit_records())
    store.close()

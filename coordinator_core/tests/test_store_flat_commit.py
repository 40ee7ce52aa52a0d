"""The SQLite store's short commit path: an execution whose effects all go to the built-in
state processor (``txn_only``), with no nested executions and no commit in progress, is
committed in one flat transaction. It must write exactly what the general path writes, and
hand every case it cannot finish to the general path with nothing written."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from coordinator_core.store import BoundProcessor, SqliteStore
from coordinator_core.store.sqlite_writer import Writer
from coordinator_core.store.state_processor import KINDS, StateProcessor
from coordinator_hookspecs import AuditRecord, Effect, InternalError

RID = "ef" * 32
STATE = (BoundProcessor("state", StateProcessor(), KINDS, txn_only=True),)


def _final(eid: str, timestamp: float = 1700000000.5) -> AuditRecord:
    return AuditRecord(seq=0, record_kind="execution", timestamp=timestamp, execution_id=eid,
                       caller="alice", resource_id=RID, status="succeeded", fee_used=7,
                       duration=0.001, detail={"engine": "wasmtime", "entry": None})


def _effects(i: int) -> list[Effect]:
    return [Effect("state.set", RID, b"count", i.to_bytes(8, "big")),
            Effect("state.set", RID, f"k{i}".encode(), b"v"),
            Effect("event", RID, b"", f"e{i}".encode())]


def _run(store: SqliteStore, n: int = 20) -> None:
    for i in range(n):
        effects = _effects(i) + ([Effect("state.delete", RID, b"k0")] if i == 5 else [])
        done = store.finish(_final(f"x{i}"), effects, STATE)
        assert done.error is None and done.records[-1].execution_id == f"x{i}"


def test_the_flat_path_writes_what_the_general_path_writes(tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    flat = SqliteStore(tmp_path / "flat")
    inserted: list[str] = []
    insert = Writer.insert

    def spy(self: Writer, record: AuditRecord, digest: str | None = None) -> list[Any]:
        inserted.append(record.execution_id or "")
        return insert(self, record, digest)

    monkeypatch.setattr(Writer, "insert", spy)
    _run(flat)
    assert inserted == []  # every commit took the flat path
    general = SqliteStore(tmp_path / "general")
    monkeypatch.setattr(SqliteStore, "_finish_flat", lambda *args: None)
    _run(general)
    assert len(inserted) == 20  # ... and here none did
    for store in (flat, general):
        assert store.verify().ok and store.verify().count == 20
    assert flat.verify().head == general.verify().head  # the same records, sealed alike
    assert flat.state_items(RID) == general.state_items(RID)
    assert flat.state_get(RID, b"count") == (19).to_bytes(8, "big")
    assert flat.state_get(RID, b"k0") is None
    assert [e["payload"] for e in flat.events(RID, 100)] == \
        [e["payload"] for e in general.events(RID, 100)]
    assert flat.state_reader(RID)(b"k19") == b"v"  # the committed-state cache was told
    flat.close()
    general.close()


def test_a_veto_on_the_flat_path_is_committed_by_the_general_path(tmp_path: Path) -> None:
    """The built-in processor refuses an effect naming no resource: nothing of the
    execution is written, the log says why, as on the general path."""
    store = SqliteStore(tmp_path)
    effects = [Effect("state.set", RID, b"k", b"v"), Effect("state.set", "", b"k", b"v")]
    done = store.finish(_final("vetoed"), effects, STATE)
    assert done.error is not None and "names no resource id" in done.error.message
    assert [r.record_kind for r in done.records] == ["rollback", "execution"]
    assert done.records[-1].status == "failed"
    assert store.state_items(RID) == []
    assert store.verify().ok and store.verify().count == 2
    store.finish(_final("after"), _effects(1), STATE)
    assert store.state_get(RID, b"k1") == b"v" and store.verify().count == 3
    store.close()


def test_a_veto_counts_one_transaction(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.finish(_final("vetoed"), [Effect("state.set", "", b"k", b"v")], STATE)
    assert store.commit_stats == (1, 1)  # the rolled-back flat attempt is not counted
    store.close()


def test_a_locked_database_fails_the_flat_path_after_one_wait(tmp_path: Path) -> None:
    """Another process holding the write lock past ``busy_timeout`` fails the commit as an
    ``InternalError`` after one timeout (not a second one on the general path), with
    nothing written; the next commit works."""
    store = SqliteStore(tmp_path, busy_timeout=0.5)
    other = sqlite3.connect(tmp_path / "coordinator.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(InternalError, match="locked"):
        store.finish(_final("locked"), _effects(1), STATE)
    elapsed = time.monotonic() - started
    other.execute("ROLLBACK")
    other.close()
    assert 0.4 < elapsed < 0.9  # one busy_timeout (0.5 s), not two
    assert store.state_items(RID) == [] and list(store.audit_records()) == []
    assert store.commit_stats == (0, 0) and not store._committer._busy
    store.finish(_final("after"), _effects(2), STATE)
    assert store.state_get(RID, b"k2") == b"v" and store.verify().ok
    store.close()


def test_txn_only_is_declared_not_inherited() -> None:
    """A subclass of the built-in processor may do real work in ``commit``: it gets the
    short path only if it declares ``txn_only`` itself."""

    class Subclassed(StateProcessor):
        def commit(self, execution_id: str) -> None: ...

    class Declared(Subclassed):
        txn_only = True

    instance = Subclassed()
    assert BoundProcessor.of("state", StateProcessor(), KINDS).txn_only
    assert not BoundProcessor.of("sub", Subclassed(), KINDS).txn_only
    assert BoundProcessor.of("declared", Declared(), KINDS).txn_only
    instance.txn_only = True
    assert BoundProcessor.of("instance", instance, KINDS).txn_only
    assert not BoundProcessor.of("plain", object(), KINDS).txn_only


def test_two_processes_records_interleave_on_the_flat_path(tmp_path: Path) -> None:
    """Another store on the same directory (another process) appends between our commits:
    the flat attempt's seq is taken, it is rolled back, and the general path re-reads the
    chain head and commits. Nothing lost, one chain."""
    one, two = SqliteStore(tmp_path), SqliteStore(tmp_path)
    for i in range(10):
        store = one if i % 2 == 0 else two
        done = store.finish(_final(f"y{i}", time.time()), _effects(i), STATE)
        assert done.error is None
    report = one.verify()
    assert report.ok and report.count == 10
    assert one.state_get(RID, b"count") == (9).to_bytes(8, "big")
    assert [r.execution_id for r in one.audit_records()] == [f"y{i}" for i in range(10)]
    one.close()
    two.close()


class Recording(StateProcessor):
    """The state processor without the ``txn_only`` promise (a plugin's own processor)."""

    txn_only = False

    def __init__(self) -> None:
        self.calls: list[str] = []

    def prepare(self, execution_id: str, effects: Sequence[Effect], txn: Any) -> None:
        self.calls.append("prepare")
        super().prepare(execution_id, effects, txn)

    def commit(self, execution_id: str) -> None:
        self.calls.append("commit")


def test_a_processor_without_txn_only_gets_its_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    processor = Recording()
    store.finish(_final("plugin"), _effects(3),
                 (BoundProcessor("state", processor, KINDS),))
    assert processor.calls == ["prepare", "commit"]
    assert store.state_get(RID, b"k3") == b"v"
    store.close()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_on_the_flat_path_leaves_nothing_and_frees_the_writer(
        tmp_path: Path, interrupt: type[BaseException]) -> None:
    class Interrupted(StateProcessor):
        def prepare(self, execution_id: str, effects: Sequence[Effect], txn: Any) -> None:
            super().prepare(execution_id, effects, txn)
            raise interrupt

    store = SqliteStore(tmp_path)
    with pytest.raises(interrupt):
        store.finish(_final("stop"), _effects(1),
                     (BoundProcessor("state", Interrupted(), KINDS, txn_only=True),))
    assert store.state_items(RID) == [] and list(store.audit_records()) == []
    assert not store._committer._busy
    store.finish(_final("next"), _effects(2), STATE)
    assert store.state_get(RID, b"k2") == b"v" and store.verify().ok
    store.close()

"""Effect processors: prepare/commit/rollback, vetoes, and isolation inside a commit group."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from coordinator_core.store import BoundProcessor, MemoryStore, SqliteStore, Store
from coordinator_core.store.state_processor import KINDS, StateProcessor
from coordinator_hookspecs import AuditRecord, Effect, QuotaExceeded

RID = "ab" * 32


class Outbox:
    """A plugin processor with its own staging: 'mail' effects are sent only on commit.
    A payload of b"veto" is refused; b"crash" raises a plain bug; ``block`` holds prepare."""

    def __init__(self) -> None:
        self.staged: dict[str, list[bytes]] = {}
        self.sent: list[bytes] = []
        self.rolled_back: list[str] = []
        self.block: threading.Event | None = None
        self.entered = threading.Event()
        self.fail_commit = False

    def prepare(self, execution_id: str, effects: Sequence[Effect], txn: Any) -> None:
        self.staged[execution_id] = [e.value for e in effects]
        self.entered.set()
        if self.block is not None:
            self.block.wait(5)
        if b"veto" in self.staged[execution_id]:
            raise QuotaExceeded("mail quota used up", source="outbox")
        if b"crash" in self.staged[execution_id]:
            raise KeyError("bug")

    def commit(self, execution_id: str) -> None:
        if self.fail_commit:
            raise RuntimeError("smtp down")
        self.sent.extend(self.staged.pop(execution_id))

    def rollback(self, execution_id: str) -> None:
        self.staged.pop(execution_id, None)
        self.rolled_back.append(execution_id)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    s: Store = SqliteStore(tmp_path) if request.param == "sqlite" else MemoryStore()
    request.addfinalizer(s.close)
    return s


def setup() -> tuple[Outbox, tuple[BoundProcessor, ...]]:
    outbox = Outbox()
    return outbox, (BoundProcessor("state", StateProcessor(), KINDS),
                    BoundProcessor("outbox", outbox, frozenset({"mail"})))


def run(store: Store, processors: Sequence[BoundProcessor], eid: str, mail: bytes) -> Any:
    record = AuditRecord(seq=0, record_kind="execution", timestamp=time.time(),
                         execution_id=eid, caller="alice", resource_id=RID, status="succeeded")
    effects = [Effect("state.set", RID, eid.encode(), b"1"), Effect("mail", RID, value=mail)]
    return store.finish(record, effects, processors)


def test_commit_reaches_every_processor(store: Store) -> None:
    outbox, processors = setup()
    done = run(store, processors, "ok", b"hello")
    assert done.error is None and outbox.sent == [b"hello"] and outbox.staged == {}
    assert store.state_get(RID, b"ok") == b"1"


def test_veto_rolls_back_everything_and_records_why(store: Store) -> None:
    outbox, processors = setup()
    done = run(store, processors, "v", b"veto")
    assert done.error is not None and done.error.kind == "quota_exceeded"
    assert done.error.source == "outbox" and "mail quota used up" in done.error.message
    assert [r.record_kind for r in done.records] == ["rollback", "execution"]
    rollback, final = done.records
    assert rollback.detail["processors"] == ["state", "outbox"]
    assert final.status == "failed" and final.error_kind == "quota_exceeded"
    assert outbox.rolled_back == ["v"] and outbox.sent == []
    assert store.state_get(RID, b"v") is None
    assert store.execution("v") == final and store.verify().ok


def test_processor_bug_is_internal(store: Store) -> None:
    _, processors = setup()
    done = run(store, processors, "c", b"crash")
    assert done.error is not None and done.error.kind == "internal"
    assert "'outbox' failed in prepare: KeyError" in done.error.message


def test_unhandled_effect_kind_is_a_veto(store: Store) -> None:
    done = run(store, (BoundProcessor("state", StateProcessor(), KINDS),), "u", b"x")
    assert done.error is not None and done.error.kind == "invalid_request"
    assert "no effect processor handles effect kind 'mail'" in done.error.message
    assert store.state_items(RID) == []


def test_failing_commit_keeps_the_result_and_is_recorded(store: Store) -> None:
    outbox, processors = setup()
    outbox.fail_commit = True
    done = run(store, processors, "f", b"hi")
    assert done.error is None and store.state_get(RID, b"f") == b"1"
    kinds = [(r.record_kind, r.execution_id) for r in store.audit_records()]
    assert kinds == [("execution", "f"), ("effect_failure", "f")]
    assert store.verify().ok


def test_a_veto_does_not_abort_the_rest_of_its_group(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    outbox, processors = setup()
    outbox.block = threading.Event()
    results: dict[str, Any] = {}

    def go(eid: str, mail: bytes) -> None:
        results[eid] = run(store, processors, eid, mail)

    leader = threading.Thread(target=go, args=("lead", b"a"))
    leader.start()
    assert outbox.entered.wait(5)  # the leader is inside its group, holding the writer
    groups_before = store.commit_stats[0]
    followers = [threading.Thread(target=go, args=(eid, mail))
                 for eid, mail in [("ok1", b"b"), ("bad", b"veto"), ("ok2", b"c")]]
    for thread in followers:
        thread.start()
    deadline = time.monotonic() + 5
    while len(store._committer._queue) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    outbox.block.set()
    for thread in [leader, *followers]:
        thread.join(5)
    assert store.commit_stats[0] == groups_before + 2  # the three followers shared one group
    assert results["bad"].error.kind == "quota_exceeded"
    assert all(results[e].error is None for e in ("lead", "ok1", "ok2"))
    assert sorted(k for k, _ in store.state_items(RID)) == [b"lead", b"ok1", b"ok2"]
    assert sorted(outbox.sent) == [b"a", b"b", b"c"]
    report = store.verify()
    assert report.ok and report.count == 5  # 4 final records + 1 rollback record
    store.close()

"""Resources, state, events and final records on both stores (same contract)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import attrs
import pytest

from coordinator_core.store import BoundProcessor, MemoryStore, SqliteStore, Store
from coordinator_core.store.chain import FIELDS
from coordinator_core.store.state_processor import KINDS, StateProcessor
from coordinator_hookspecs import (
    AccessPolicy,
    AuditRecord,
    Effect,
    InvalidRequest,
    NotFound,
    ResourceInfo,
)

PROCESSORS = (BoundProcessor("state", StateProcessor(), KINDS),)
RID = "ab" * 32


def record(eid: str, status: str = "succeeded", **fields: object) -> AuditRecord:
    return AuditRecord(seq=0, record_kind="execution", timestamp=time.time(), execution_id=eid,
                       caller="alice", resource_id=RID, status=status, **fields)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    s: Store = SqliteStore(tmp_path) if request.param == "sqlite" else MemoryStore()
    request.addfinalizer(s.close)
    return s


def info_for(code: bytes, **fields: object) -> ResourceInfo:
    return ResourceInfo(id=hashlib.sha256(code).hexdigest(), type="wasm", **fields)  # type: ignore[arg-type]


def test_fields_are_audit_record_order() -> None:
    names = [a.name for a in attrs.fields(AuditRecord)]
    assert list(FIELDS) == names[:-2] and names[-2:] == ["leaf_hash", "chain_hash"]


def test_deploy_is_content_addressed_and_idempotent(store: Store) -> None:
    code = b"\0asm-module"
    info = info_for(code, name="token", owner="alice", capabilities=frozenset({"storage"}),
                    meta={"exports": ["run"]})
    stored, created = store.put_resource(info, code)
    assert created and stored.size == len(code) and stored.deployed_at > 0
    again, created_again = store.put_resource(attrs.evolve(info, name="other"), code)
    assert not created_again and again.name == "token"
    assert store.get_resource(info.id) == stored
    assert store.get_resource(info.id).meta == {"exports": ["run"]}  # type: ignore[union-attr]
    assert store.load_code(info.id) == code
    assert [r.id for r in store.list_resources()] == [info.id]


def test_deploy_refuses_wrong_id_and_unknown_ids(store: Store) -> None:
    with pytest.raises(InvalidRequest, match="not the sha256"):
        store.put_resource(ResourceInfo(id="cd" * 32, type="wasm"), b"x")
    with pytest.raises(InvalidRequest, match="sha256 hex"):
        store.put_resource(ResourceInfo(id="../../etc/passwd", type="wasm"), b"x")
    with pytest.raises(InvalidRequest, match="sha256 hex"):
        store.load_code("../../etc/passwd")
    with pytest.raises(NotFound):
        store.load_code("ef" * 32)
    assert store.get_resource("ef" * 32) is None


def test_set_policy(store: Store) -> None:
    code = b"policy"
    info, _ = store.put_resource(info_for(code), code)
    policy = AccessPolicy(public=False, allow=frozenset({"bob"}))
    assert store.set_policy(info.id, policy).policy == policy
    assert store.get_resource(info.id).policy == policy  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        store.set_policy("ef" * 32, policy)


def test_succeeded_execution_commits_its_effects(store: Store) -> None:
    effects = [Effect("state.set", RID, b"a", b"1"), Effect("state.set", RID, b"b", b"2"),
               Effect("state.delete", RID, b"a"), Effect("event", RID, value=b"minted"),
               Effect("log", RID, b"WARN", b"careful")]
    done = store.finish(record("e1"), effects, PROCESSORS)
    assert done.error is None and len(done.records) == 1
    final = done.records[0]
    assert final.seq == 1 and final.status == "succeeded" and final.effect_digest
    assert store.state_get(RID, b"a") is None and store.state_get(RID, b"b") == b"2"
    assert store.state_items(RID) == [(b"b", b"2")]
    events = store.events(RID)
    assert [(e["kind"], e["level"], e["payload"], e["execution_id"]) for e in events] == [
        ("event", None, b"minted", "e1"), ("log", "warn", b"careful", "e1")]
    assert store.execution("e1") == final
    assert store.execution("nope") is None


def test_other_statuses_write_only_the_final_record(store: Store) -> None:
    effects = [Effect("state.set", RID, b"a", b"1")]
    for eid, status in [("f", "failed"), ("r", "rejected"), ("t", "timed_out"),
                        ("c", "cancelled")]:
        done = store.finish(record(eid, status, error_kind="trap"), effects, PROCESSORS)
        assert [r.status for r in done.records] == [status]
    assert store.state_items(RID) == [] and store.events(RID) == []
    assert [r.execution_id for r in store.audit_records()] == ["f", "r", "t", "c"]
    assert [r.seq for r in store.audit_records(3)] == [3, 4]


def test_exactly_one_final_record_per_execution(store: Store) -> None:
    store.finish(record("dup"), [], PROCESSORS)
    with pytest.raises(InvalidRequest, match="already has a final"):
        store.finish(record("dup"), [Effect("state.set", RID, b"k", b"v")], PROCESSORS)
    assert store.state_get(RID, b"k") is None
    assert store.verify().ok and store.verify().count == 1


def test_append_and_logs_dropped_when_asked(tmp_path: Path) -> None:
    for s in (SqliteStore(tmp_path, keep_logs=False), MemoryStore(keep_logs=False)):
        deploy = s.append(AuditRecord(seq=0, record_kind="deploy", timestamp=1.0,
                                      resource_id=RID, detail={"name": "x", "size": 3}))
        assert deploy.seq == 1 and deploy.detail == {"name": "x", "size": 3}
        s.finish(record("e"), [Effect("log", RID, b"info", b"x"), Effect("event", RID)],
                 PROCESSORS)
        assert [e["kind"] for e in s.events(RID)] == ["event"]
        s.close()


def test_events_limit_keeps_latest(store: Store) -> None:
    for i in range(5):
        store.finish(record(f"e{i}"), [Effect("event", RID, value=bytes([i]))], PROCESSORS)
    assert [e["payload"] for e in store.events(RID, limit=2)] == [b"\3", b"\4"]
    with pytest.raises(InvalidRequest, match="limit"):
        store.events(RID, limit=0)


def test_non_bytes_state_is_refused_as_a_veto(store: Store) -> None:
    bad = Effect("state.set", RID, "text-key", b"v")  # type: ignore[arg-type]
    done = store.finish(record("e"), [Effect("state.set", RID, b"ok", b"1"), bad], PROCESSORS)
    assert done.error is not None and done.error.kind == "invalid_request"
    assert "state key must be bytes" in done.error.message
    assert store.state_items(RID) == []


def test_records_normalise_types_and_text(store: Store) -> None:
    weird = record("w", fee_used=7, duration=1, message="bad \udcff byte",
                   detail={"b": b"\x01", "s": {2, 1}})
    sealed = store.finish(weird, [], PROCESSORS).records[0]
    assert isinstance(sealed.duration, float) and sealed.message == "bad ? byte"
    assert sealed.detail == {"b": "01", "s": [1, 2], "state_root": "00" * 32,
                             "global_root": "00" * 32}
    assert store.execution("w") == sealed and store.verify().ok

"""State roots in both stores: incremental updates equal a rebuild from scratch, roots in
the sealed final record, proofs that verify, previews that write nothing, reopen and the
upgrade of a directory written before the trees existed."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

import pytest

from coordinator_core.store import BoundProcessor, MemoryStore, SqliteStore, Store
from coordinator_core.store.merkle import GLOBAL, build, key_hash
from coordinator_core.store.state_processor import KINDS, StateProcessor
from coordinator_hookspecs import AuditRecord, Effect, InvalidRequest, verify_proof
from coordinator_hookspecs.proofs import EMPTY

PROCESSORS = (BoundProcessor("state", StateProcessor(), KINDS),)
RID, OTHER = "ab" * 32, "cd" * 32
ZERO = EMPTY.hex()


def record(eid: str, rid: str = RID, status: str = "succeeded") -> AuditRecord:
    return AuditRecord(seq=0, record_kind="execution", timestamp=1.0, execution_id=eid,
                       caller="alice", resource_id=rid, status=status)


def put(key: bytes, value: bytes, rid: str = RID) -> Effect:
    return Effect("state.set", rid, key, value)


def delete(key: bytes, rid: str = RID) -> Effect:
    return Effect("state.delete", rid, key)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return SqliteStore(tmp_path) if request.param == "sqlite" else MemoryStore()


def expected_root(state: dict[bytes, bytes]) -> str:
    return build((key_hash(k), hashlib.sha256(v).digest()) for k, v in state.items())[0].hex()


def test_empty_store_has_zero_roots(store: Store) -> None:
    assert store.roots(RID) == {"resource_id": RID, "state_root": ZERO, "global_root": ZERO}
    done = store.finish(record("e"), [], PROCESSORS)
    assert done.records[-1].detail == {"state_root": ZERO, "global_root": ZERO}


def test_roots_are_in_the_sealed_final_record_and_follow_every_write(store: Store) -> None:
    rng = random.Random(7)
    state: dict[bytes, bytes] = {}
    for i in range(60):
        effects = []
        for _ in range(rng.randrange(1, 4)):
            key = b"k%d" % rng.randrange(40)
            if rng.random() < 0.3:
                effects.append(delete(key))
                state.pop(key, None)
            else:
                value = b"v%d" % rng.randrange(1000)
                effects.append(put(key, value))
                state[key] = value
        final = store.finish(record(f"e{i}"), effects, PROCESSORS).records[-1]
        assert final.detail["state_root"] == expected_root(state)
        assert store.execution(f"e{i}") == final  # as stored, hashed into the chain
    roots = store.roots(RID)
    assert roots["state_root"] == expected_root(state)
    top = build([(key_hash(RID.encode()), hashlib.sha256(bytes.fromhex(
        roots["state_root"])).digest())])[0].hex()
    assert roots["global_root"] == top and store.verify().ok


def test_the_root_does_not_depend_on_write_order(tmp_path: Path) -> None:
    keys = [(b"key-%d" % i, b"value-%d" % i) for i in range(200)]
    roots = set()
    for n, order in enumerate((keys, keys[::-1], random.Random(3).sample(keys, len(keys)))):
        for store in (MemoryStore(), SqliteStore(tmp_path / str(n))):
            for i in range(0, len(order), 7):  # several writes per execution, too
                batch = [put(k, v) for k, v in order[i:i + 7]]
                store.finish(record(f"e{i}"), batch, PROCESSORS)
            # a key written and deleted again leaves no trace
            store.finish(record("extra"), [put(b"gone", b"x")], PROCESSORS)
            store.finish(record("undo"), [delete(b"gone")], PROCESSORS)
            roots.add(store.roots(RID)["state_root"])
    assert roots == {expected_root(dict(keys))}


def test_deleting_every_key_returns_to_the_empty_root(store: Store) -> None:
    keys = [b"%d" % i for i in range(50)]
    store.finish(record("fill"), [put(k, k) for k in keys], PROCESSORS)
    assert store.roots(RID)["state_root"] != ZERO
    store.finish(record("empty"), [delete(k) for k in keys], PROCESSORS)
    assert store.roots(RID) == {"resource_id": RID, "state_root": ZERO, "global_root": ZERO}


def test_proofs_verify_and_tampering_fails(store: Store) -> None:
    store.finish(record("fill"), [put(b"k%d" % i, b"v%d" % i) for i in range(100)], PROCESSORS)
    store.finish(record("other"), [put(b"x", b"y", OTHER)], PROCESSORS)
    for key in (b"k0", b"k57", b"absent", b"k100"):
        proved = store.prove(RID, key)
        assert verify_proof(proved["proof"], proved["state_root"])
        assert verify_proof(proved["root_proof"], proved["global_root"])
        assert (proved["value"] is None) == (key in (b"absent", b"k100"))
        tampered = {**proved["proof"], "value": b"forged".hex()}
        assert not verify_proof(tampered, proved["state_root"])
        siblings = list(proved["proof"]["siblings"])
        siblings[-1] = hashlib.sha256(bytes.fromhex(siblings[-1])).hexdigest()
        assert not verify_proof({**proved["proof"], "siblings": siblings}, proved["state_root"])
        assert not verify_proof(proved["proof"], proved["global_root"])  # the wrong root
    assert store.prove(RID, b"k3")["value"] == b"v3".hex()
    empty = store.prove("ef" * 32, b"k")  # a resource without state: exclusion, empty tree
    assert empty["state_root"] == ZERO and verify_proof(empty["proof"], ZERO)
    assert verify_proof(empty["root_proof"], empty["global_root"])


def test_a_vetoed_execution_leaves_the_roots_alone(store: Store) -> None:
    store.finish(record("one"), [put(b"a", b"1")], PROCESSORS)
    before = store.roots(RID)
    bad = Effect("state.set", RID, "text-key", b"v")  # type: ignore[arg-type]
    done = store.finish(record("two"), [put(b"b", b"2"), bad], PROCESSORS)
    assert done.error is not None and done.error.kind == "invalid_request"
    assert store.roots(RID) == before
    assert done.records[-1].detail["state_root"] == before["state_root"]
    assert store.finish(record("three"), [put(b"c", b"3")], PROCESSORS).error is None
    assert store.roots(RID)["state_root"] == expected_root({b"a": b"1", b"c": b"3"})


def test_preview_predicts_the_roots_and_writes_nothing(store: Store) -> None:
    store.finish(record("base"), [put(b"a", b"1"), put(b"b", b"2")], PROCESSORS)
    before = store.roots(RID)
    effects = [put(b"c", b"3"), delete(b"a"), put(b"z", b"9", OTHER), Effect("event", RID)]
    preview = store.preview_roots(effects, RID)
    assert store.roots(RID) == before and store.state_get(RID, b"c") is None
    final = store.finish(record("real"), effects, PROCESSORS).records[-1]
    assert preview["state_roots"][RID] == final.detail["state_root"]
    assert preview["global_root"] == final.detail["global_root"]
    assert preview["state_roots"][OTHER] == store.roots(OTHER)["state_root"]
    untouched = store.preview_roots([], "ef" * 32)
    assert untouched == {"state_roots": {"ef" * 32: ZERO}, "global_root": final.detail[
        "global_root"]}
    with pytest.raises(InvalidRequest, match="state key must be bytes"):
        store.preview_roots([Effect("state.set", RID, "text", b"v")])  # type: ignore[arg-type]


def test_nested_records_and_several_resources(store: Store) -> None:
    child = record("child", OTHER)
    done = store.finish(record("parent"), [put(b"p", b"1"), put(b"c", b"2", OTHER)],
                        PROCESSORS, children=[child])
    child_sealed, parent_sealed = done.records
    assert parent_sealed.detail["state_root"] == expected_root({b"p": b"1"})
    assert child_sealed.detail["state_root"] == expected_root({b"c": b"2"})
    assert child_sealed.detail["global_root"] == parent_sealed.detail["global_root"]


def test_roots_survive_reopen_without_a_rebuild(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path)
    first.finish(record("e"), [put(b"k%d" % i, b"v") for i in range(30)], PROCESSORS)
    roots = first.roots(RID)
    first.close()
    statements: list[str] = []
    again = SqliteStore(tmp_path)
    again._writer.conn.set_trace_callback(statements.append)
    assert again.roots(RID) == roots
    again.finish(record("f"), [put(b"k0", b"w")], PROCESSORS)
    assert not any("FROM state" in s for s in statements)  # the tree was not rescanned
    assert again.roots(RID)["state_root"] == expected_root(
        {**{b"k%d" % i: b"v" for i in range(30)}, b"k0": b"w"})
    again.close()


def test_a_version_2_directory_gets_its_trees_on_upgrade(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.finish(record("e"), [put(b"a", b"1"), put(b"b", b"2", OTHER)], PROCESSORS)
    roots = store.roots(RID)
    store.close()
    conn = sqlite3.connect(tmp_path / "coordinator.db")
    conn.execute("DROP TABLE merkle")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    upgraded = SqliteStore(tmp_path)
    assert upgraded.roots(RID) == roots
    assert upgraded.roots(OTHER)["state_root"] == expected_root({b"b": b"2"})
    upgraded.close()
    conn = sqlite3.connect(tmp_path / "coordinator.db")
    assert conn.execute("PRAGMA user_version").fetchall() == [(3,)]
    conn.close()


def test_the_global_tree_is_named_apart_from_resources() -> None:
    assert GLOBAL == "" and len(RID) == 64  # resource ids are sha256 hex, never ""


def test_paths_deeper_than_one_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path longer than one batch of levels is fetched in several queries (with one level
    per query here, every path is), and the tree is the same."""
    from coordinator_core.store import merkle

    monkeypatch.setattr(merkle, "BATCH", 1)
    store = SqliteStore(tmp_path)
    rng = random.Random(11)
    state: dict[bytes, bytes] = {}
    for i in range(40):
        key = b"%d" % rng.randrange(60)
        if key in state and rng.random() < 0.4:
            state.pop(key)
            effects = [delete(key)]
        else:
            state[key] = b"%d" % i
            effects = [put(key, state[key])]
        store.finish(record(f"e{i}"), effects, PROCESSORS)
        assert store.roots(RID)["state_root"] == expected_root(state)
    proved = store.prove(RID, next(iter(state)))
    assert verify_proof(proved["proof"], proved["state_root"])
    store.close()

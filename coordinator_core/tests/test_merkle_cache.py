"""The writer's node cache (``merkle_cache.py``) never changes what the trees are: after
random writes, deletes, vetoes (alone and inside group commits), a reopen and a commit by a
second connection, the ``merkle`` table equals a rebuild from the stored state, every node
the cache holds equals the table's, and the roots sealed into records are the rebuild's."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from coordinator_core.store import BoundProcessor, SqliteStore, merkle_cache
from coordinator_core.store.merkle_sqlite import differences
from coordinator_core.store.state_processor import KINDS, StateProcessor
from coordinator_hookspecs import AuditRecord, Effect, InvalidRequest

PROCESSORS = (BoundProcessor("state", StateProcessor(), KINDS),)
RIDS = ["ab" * 32, "cd" * 32, "ef" * 32]


def record(eid: str, rid: str = RIDS[0]) -> AuditRecord:
    return AuditRecord(seq=0, record_kind="execution", timestamp=1.0, execution_id=eid,
                       caller="alice", resource_id=rid, status="succeeded")


def put(key: bytes, value: bytes, rid: str = RIDS[0]) -> Effect:
    return Effect("state.set", rid, key, value)


def delete(key: bytes, rid: str = RIDS[0]) -> Effect:
    return Effect("state.delete", rid, key)


def assert_consistent(store: SqliteStore) -> None:
    """The table is a rebuild's, and the writer's cache agrees with the table."""
    conn = store._writer.conn
    assert differences(conn) == []
    for (tree, pos), node in list(store._writer.nodes.nodes.items()):
        rows = conn.execute("SELECT hash, leaf FROM merkle WHERE tree = ? AND pos = ?",
                            (tree, pos)).fetchall()
        stored = (bytes(rows[0][0]), None if rows[0][1] is None else bytes(rows[0][1])) \
            if rows else None
        assert node == stored, (tree, pos)


def random_effects(rng: random.Random, veto: bool) -> list[Effect]:
    effects = []
    for _ in range(rng.randint(1, 6)):
        rid, key = rng.choice(RIDS), b"k%d" % rng.randint(0, 60)
        effects.append(delete(key, rid) if rng.random() < 0.3
                       else put(key, b"v%d" % rng.randint(0, 9), rid))
    if veto:  # a key that is not bytes: the state processor refuses the whole execution
        effects.insert(rng.randint(0, len(effects)),
                       Effect("state.set", RIDS[0], "text-key", b"v"))  # type: ignore[arg-type]
    return effects


def finish_or_refuse(store: SqliteStore, rng: random.Random, eid: str,
                     sequential: bool = True) -> bool | None:
    """One random execution: True if vetoed, False if committed, None if refused as a
    repeat (its tree changes were made, then rolled back with the refused record)."""
    veto = rng.random() < 0.2
    repeat = not veto and rng.random() < 0.1
    effects = random_effects(rng, veto)
    if repeat:
        try:
            store.finish(record(eid + "-first"), [], PROCESSORS)
            store.finish(record(eid + "-first", rng.choice(RIDS)), effects, PROCESSORS)
        except InvalidRequest as exc:
            assert "already has a final audit record" in str(exc)
            return None
        raise AssertionError("a second final record was accepted")
    rid = rng.choice(RIDS)
    done = store.finish(record(eid, rid), effects, PROCESSORS)
    assert (done.error is not None) == veto
    sealed = done.records[-1].detail
    if sequential:
        assert sealed["global_root"] == store.roots()["global_root"]
        assert sealed["state_root"] == store.roots(rid)["state_root"]
    return veto


def run_random(store: SqliteStore, rng: random.Random, count: int, prefix: str) -> None:
    for n in range(count):
        finish_or_refuse(store, rng, f"{prefix}{n}")


def test_cached_tree_equals_a_rebuild_after_random_work_and_reopen(tmp_path: Path) -> None:
    rng = random.Random(7)
    store = SqliteStore(tmp_path)
    run_random(store, rng, 150, "a")
    assert store._writer.nodes.nodes  # the cache was used
    assert_consistent(store)
    store.close()
    store = SqliteStore(tmp_path)
    run_random(store, rng, 80, "b")
    assert_consistent(store)
    store.close()


def test_vetoes_inside_group_commits_discard_only_their_own_nodes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path, group_commit_max=16, commit_delay=0.002)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for n in range(40):
                finish_or_refuse(store, rng, f"t{seed}-{n}", sequential=False)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    groups, jobs = store.commit_stats
    assert jobs > groups  # some commits really were groups
    assert_consistent(store)
    assert store.verify().ok
    store.close()


def test_a_commit_by_another_connection_drops_the_cache(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path)
    first.finish(record("one"), [put(b"a", b"1"), put(b"b", b"2")], PROCESSORS)
    second = SqliteStore(tmp_path)  # another writer on the same directory (a CLI, say)
    second.finish(record("two"), [put(b"c", b"3"), delete(b"a")], PROCESSORS)
    second.close()
    done = first.finish(record("three"), [put(b"d", b"4")], PROCESSORS)
    assert done.error is None
    assert_consistent(first)
    assert done.records[-1].detail["state_root"] == first.roots(RIDS[0])["state_root"]
    first.close()


def test_trees_too_big_to_hold_whole_are_cached_node_by_node(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merkle_cache, "LIMIT", 60)
    store = SqliteStore(tmp_path)
    run_random(store, random.Random(11), 120, "p")
    assert_consistent(store)
    nodes = store._writer.nodes
    assert len(store.state_items(RIDS[0])) > 30  # a tree of more than LIMIT nodes
    nodes.clear()
    nodes.fetch(RIDS[0], [""])
    assert RIDS[0] in nodes.partial and RIDS[0] not in nodes.whole
    store.close()


def test_a_record_that_wrote_nothing_seals_known_roots_without_a_query(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An execution without state writes still seals its resource's root and the global
    root. Once read, those come from the cache (no statement on ``merkle`` per execution);
    a tree's new root, a rollback, and a commit by another connection are all seen."""
    monkeypatch.setattr(merkle_cache, "LIMIT", 40)  # RIDS[0]'s tree is cached node by node
    seed = SqliteStore(tmp_path)
    seed.finish(record("seed"), [put(b"k%d" % i, b"v") for i in range(30)], PROCESSORS)
    seed.close()
    store = SqliteStore(tmp_path)
    statements: list[str] = []
    store._writer.conn.set_trace_callback(statements.append)

    def stateless(eid: str, rid: str) -> dict:
        done = store.finish(record(eid, rid), [], PROCESSORS)
        assert done.error is None
        sealed = done.records[-1].detail
        assert sealed["state_root"] == store.roots(rid)["state_root"]
        assert sealed["global_root"] == store.roots()["global_root"]
        return sealed

    for rid in (RIDS[0], RIDS[2]):  # a big tree, and one that is empty
        stateless(f"first-{rid[:2]}", rid)
        statements.clear()
        for n in range(3):
            stateless(f"again-{rid[:2]}-{n}", rid)
        assert not [s for s in statements if "merkle" in s], statements
    before = stateless("before", RIDS[0])
    store.finish(record("write"), [put(b"new", b"1")], PROCESSORS)
    after = stateless("after", RIDS[0])
    assert after["state_root"] != before["state_root"]
    vetoed = store.finish(record("veto"), [put(b"x", b"1"), Effect(
        "state.set", RIDS[0], "text-key", b"v")], PROCESSORS)  # type: ignore[arg-type]
    assert vetoed.error is not None
    assert stateless("after-veto", RIDS[0])["state_root"] == after["state_root"]
    other = SqliteStore(tmp_path)  # another writer on the same directory
    other.finish(record("elsewhere", RIDS[2]), [put(b"c", b"3", RIDS[2])], PROCESSORS)
    expected = other.roots(RIDS[2])["state_root"]
    other.close()
    assert stateless("seen", RIDS[2])["state_root"] == expected
    assert_consistent(store)
    store.close()

"""The audit hash chain: tampering with a record, deleting one or reordering two is found,
and ``verify`` names the first bad sequence number (both stores)."""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator_core.store import MemoryStore, SqliteStore
from coordinator_core.store.chain import (
    GENESIS,
    _jsonable,
    canonical,
    chain_hash,
    effect_digest,
    leaf_hash,
    seal,
)
from coordinator_hookspecs import (
    AccessPolicy,
    AuditRecord,
    Effect,
    EffectKind,
    ErrorKind,
    NotFound,
    Status,
)

Tamper = Callable[[sqlite3.Connection], object]


_ids = itertools.count(1)


def fill(store: SqliteStore | MemoryStore, n: int = 6) -> None:
    for i in range(1, n + 1):
        store.append(AuditRecord(seq=0, record_kind="execution", timestamp=time.time(),
                                 execution_id=f"e{next(_ids)}", caller="alice", status="succeeded",
                                 fee_used=i, detail={"i": i}))


def tampered(tmp_path: Path, tamper: Tamper) -> SqliteStore:
    store = SqliteStore(tmp_path)
    fill(store)
    assert store.verify().ok
    store.close()
    with sqlite3.connect(tmp_path / "coordinator.db") as conn:
        tamper(conn)
    return SqliteStore(tmp_path)


def _recompute_leaf(conn: sqlite3.Connection, seq: int) -> None:
    row = conn.execute("SELECT * FROM audit WHERE seq = ?", (seq,)).fetchone()
    conn.execute("UPDATE audit SET leaf_hash = ? WHERE seq = ?",
                 (leaf_hash(canonical(row[:13], row[13])), seq))


def _edit_and_rehash(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE audit SET status = 'failed' WHERE seq = 2")
    _recompute_leaf(conn, 2)


def _swap(conn: sqlite3.Connection, a: int, b: int) -> None:
    conn.execute("UPDATE audit SET seq = -1 WHERE seq = ?", (a,))
    conn.execute("UPDATE audit SET seq = ? WHERE seq = ?", (a, b))
    conn.execute("UPDATE audit SET seq = ? WHERE seq = -1", (b,))


CASES: dict[str, tuple[Tamper, int, str]] = {
    "edit a middle record": (
        lambda c: c.execute("UPDATE audit SET fee_used = 0 WHERE seq = 3"), 3, "altered"),
    "edit detail text only": (
        lambda c: c.execute("UPDATE audit SET detail = '{\"i\": 4}' WHERE seq = 4"), 4,
        "altered"),
    "edit and recompute the leaf": (_edit_and_rehash, 2, "breaks the chain"),
    "delete a record": (lambda c: c.execute("DELETE FROM audit WHERE seq = 3"), 3, "deleted"),
    "swap two records": (lambda c: _swap(c, 2, 5), 2, "altered"),
    "forge the last chain hash": (
        lambda c: c.execute("UPDATE audit SET chain_hash = zeroblob(32) WHERE seq = 6"), 6,
        "breaks the chain"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sqlite_tampering_is_detected(tmp_path: Path, case: str) -> None:
    tamper, bad, reason = CASES[case]
    store = tampered(tmp_path, tamper)
    report = store.verify()
    store.close()
    assert not report.ok and report.first_bad_seq == bad
    assert reason in report.reason and str(bad) in report.reason
    assert report.count == bad - 1


def test_memory_tampering_is_detected() -> None:
    for mutate, bad in [(lambda rows: rows[2].__setitem__(10, 99), 3),
                        (lambda rows: rows.pop(3), 4),
                        (lambda rows: rows.__setitem__(slice(1, 3), [rows[2], rows[1]]), 2)]:
        store = MemoryStore()
        fill(store)
        assert store.verify().ok
        mutate(store.rows)
        report = store.verify()
        assert not report.ok and report.first_bad_seq == bad, report


def test_chain_is_rfc6962_style_and_continues_across_reopen(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    fill(store, 3)
    store.close()
    store = SqliteStore(tmp_path)
    fill(store, 2)
    records = list(store.audit_records())
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    previous = GENESIS
    with sqlite3.connect(tmp_path / "coordinator.db") as conn:
        rows = conn.execute("SELECT * FROM audit ORDER BY seq").fetchall()
    for rec, row in zip(records, rows, strict=True):
        leaf = leaf_hash(canonical(row[:13], row[13]))
        assert rec.leaf_hash == leaf.hex() and leaf[:1] != b""
        previous = chain_hash(previous, leaf)
        assert rec.chain_hash == previous.hex()
    report = store.verify()
    assert report.ok and report.count == 5 and report.head == previous.hex()
    store.close()


def test_two_stores_on_one_directory_keep_one_chain(tmp_path: Path) -> None:
    first, second = SqliteStore(tmp_path), SqliteStore(tmp_path)
    for _ in range(3):
        fill(first, 1)
        fill(second, 1)
    assert first.verify().ok and first.verify().count == 6
    first.close()
    second.close()


def test_empty_log_verifies() -> None:
    report = MemoryStore().verify()
    assert report.ok and report.count == 0 and report.head == GENESIS.hex()


def test_a_deleted_tail_is_not_papered_over(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    fill(store, 3)
    with sqlite3.connect(tmp_path / "coordinator.db") as conn:
        conn.execute("DELETE FROM audit WHERE seq = 3")
    with pytest.raises(NotFound):  # a job failing on its own does not re-read the head
        store.set_policy("no-such-resource", AccessPolicy())
    fill(store, 1)  # the store keeps numbering from what it wrote, leaving the gap visible
    report = store.verify()
    assert not report.ok and report.first_bad_seq == 3
    assert [r.seq for r in store.audit_records()] == [1, 2, 4]
    store.close()


@pytest.mark.parametrize("record", [
    AuditRecord(seq=0, record_kind="execution", timestamp=1700000000.123456,
                execution_id="ex-1", caller="bob", resource_id="ab" * 32, status="succeeded",
                fee_used=2**70, duration=1e-7, detail={"engine": "wasmtime", "entry": "add"}),
    AuditRecord(seq=0, record_kind="execution", timestamp=0.1, caller="zoë \u2603 \"q\"\n",
                message="\x00\x1f tab\t", duration=float("nan"),
                detail={"b": [1, 2.5, None, True], "a": {"z": b"\x01\xff", "y": {3, 1}}}),
    AuditRecord(seq=0, record_kind="deploy", timestamp=float("inf"), fee_used=-5,
                duration=-0.0, detail={}),
    AuditRecord(seq=0, record_kind="", timestamp=2, execution_id="ex-\udcff",  # lone surrogate
                status=Status.FAILED, error_kind=ErrorKind.INTERNAL,
                fee_used=3.0, duration=1),  # type: ignore[arg-type]
])
def test_sealing_hashes_the_documented_canonical_json(record: AuditRecord) -> None:
    """The sealing fast path (C encoders built once) must hash exactly the canonical form the
    docs define, or logs written earlier (or by other tools) would stop verifying."""
    sealed, row = seal(record, 7, GENESIS, "ff" * 32)
    reference = json.dumps([*row[:13], json.loads(row[13]) if row[13] != "{}" else {}],
                           sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                           default=_jsonable)
    assert row[13] == (json.dumps(record.detail, sort_keys=True, separators=(",", ":"),
                                  ensure_ascii=True, default=_jsonable)
                       if record.detail else "{}")
    assert canonical(row[:13], row[13]) == reference.encode("ascii")
    assert row[14] == leaf_hash(reference.encode("ascii"))
    assert row[15] == chain_hash(GENESIS, row[14])
    # The chain's own SHA-256 (CPython's built-in one) is hashlib's, bit for bit.
    assert row[14] == hashlib.sha256(b"\x00" + reference.encode("ascii")).digest()
    assert row[15] == hashlib.sha256(b"\x01" + GENESIS + row[14]).digest()
    assert sealed.leaf_hash == row[14].hex() and sealed.seq == 7
    assert all(type(v) in (str, type(None)) for v in (row[1], *row[3:10], row[12]))
    assert type(row[10]) is int and type(row[2]) is float and type(row[11]) is float
    if record.status is Status.FAILED:  # enums stored by value; text made storable
        assert (row[1], row[3], row[7], row[8]) == ("", "ex-?", "failed", "internal")


def test_committed_records_are_built_when_read_and_match_the_log(tmp_path: Path) -> None:
    """``finish`` returns its sealed records lazily (rows until read): read, they are
    exactly what the log holds, nested detail included."""
    from coordinator_core.store.chain import SealedRecords

    store = SqliteStore(tmp_path)
    record = AuditRecord(seq=0, record_kind="execution", timestamp=time.time(),
                         execution_id="lazy", caller="alice", status="succeeded",
                         detail={"entry": None, "nested": {"b": [1, 2], "a": b"\x01"}})
    done = store.finish(record, [], ())
    assert isinstance(done.records, SealedRecords) and done.records._records is None
    (sealed,) = done.records
    assert sealed == store.execution("lazy")
    assert sealed.detail == {"entry": None, "nested": {"a": "01", "b": [1, 2]}}
    assert sealed.chain_hash == store.verify().head
    assert list(done.records) == [sealed] and done.records == (sealed,)
    store.close()


def test_effect_digest_is_the_documented_length_prefixed_sha256() -> None:
    """Each field of each effect, as bytes (text as UTF-8) behind its 8-byte big-endian
    length, hashed with SHA-256: a change here would make earlier records' digests unmatched."""
    effects = [Effect(EffectKind.STATE_SET, "ab" * 32, b"count", b"\x00" * 8),
               Effect("event", "r\u00e9", b"", b"payload"),
               Effect("state.set", "r", "text key", b"v")]  # type: ignore[arg-type]

    def field(value: object) -> bytes:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        return len(data).to_bytes(8, "big") + data

    reference = hashlib.sha256(b"".join(
        field(part) for e in effects for part in (e.kind, e.resource_id, e.key, e.value)))
    assert effect_digest(effects) == reference.hexdigest()
    assert effect_digest([]) == hashlib.sha256(b"").hexdigest()

"""Recent executions, one execution's records and the audit chain's head, read from the store.

The SQLite store's tables are documented (docs/storage.md), so these queries read them
through a read-only connection of their own: the newest records first, filtered in SQL,
without walking the chain from its start as ``Store.audit_records`` would. Each scan is
bounded to the newest ``SCAN`` records so a filter matching nothing costs the same as one
matching everything. A store that is not a SQLite file (the in-memory store) is read through
its public methods instead.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import attrs

#: How many of the newest audit records a listing searches; how many the overview searches
#: for each engine's newest failure (it asks once a second); how far before an execution's
#: record its children are looked for (a nested execution's record is committed before its
#: parent's).
SCAN = 100_000
ERROR_SCAN = 5_000
_COLUMNS = ("seq, record_kind, timestamp, execution_id, parent_id, caller, resource_id, "
            "status, error_kind, message, fee_used, duration, effect_digest, detail, "
            "leaf_hash, chain_hash")


@attrs.frozen
class Filters:
    """What a listing keeps: each field None matches everything. ``resource_ids`` holds the
    ids a resource filter (an id or a name) stands for."""

    caller: str | None = None
    resource_ids: tuple[str, ...] | None = None
    engine: str | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100


def record_json(row: dict[str, Any]) -> dict[str, Any]:
    """A record as JSON: hashes as hex, detail parsed."""
    out = dict(row)
    for name in ("leaf_hash", "chain_hash"):
        value = out.get(name)
        if isinstance(value, bytes | bytearray | memoryview):
            out[name] = bytes(value).hex()
    if isinstance(out.get("detail"), str):
        out["detail"] = json.loads(out["detail"])
    return out


class History:
    """The queries of the dashboard over one coordinator's store."""

    def __init__(self, store: Any) -> None:
        self.store = store
        path = getattr(store, "path", None)
        self.path = Path(path) if path is not None and Path(path).is_file() else None
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock:
            if self._conn is None:
                assert self.path is not None
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                             timeout=5.0, check_same_thread=False)
                self._conn.row_factory = sqlite3.Row
            return [dict(row) for row in self._conn.execute(sql, args).fetchall()]

    # -- the chain's head --------------------------------------------------------------------
    def head(self) -> dict[str, Any]:
        """Length and head hash of the audit chain."""
        if self.path is None:
            records = list(self.store.audit_records(1))
            last = records[-1] if records else None
            return {"length": len(records), "head": last.chain_hash if last else ""}
        rows = self._rows("SELECT seq, chain_hash FROM audit ORDER BY seq DESC LIMIT 1", ())
        if not rows:
            return {"length": 0, "head": ""}
        return {"length": rows[0]["seq"], "head": bytes(rows[0]["chain_hash"]).hex()}

    # -- listings ----------------------------------------------------------------------------
    def executions(self, f: Filters, scan: int = SCAN) -> list[dict[str, Any]]:
        """The newest execution records matching ``f`` among the newest ``scan``, newest
        first."""
        if self.path is None:
            return self._scan_memory(f)
        where = ["record_kind = 'execution'", "seq > ?"]
        args: list[Any] = [self._floor(scan)]
        if f.caller is not None:
            where.append("caller = ?")
            args.append(f.caller)
        if f.resource_ids is not None:
            where.append(f"resource_id IN ({', '.join('?' * len(f.resource_ids)) or 'NULL'})")
            args.extend(f.resource_ids)
        if f.engine is not None:
            where.append("json_extract(detail, '$.engine') = ?")
            args.append(f.engine)
        if f.status is not None:
            where.append("status = ?")
            args.append(f.status)
        if f.since is not None:
            where.append("timestamp >= ?")
            args.append(f.since)
        if f.until is not None:
            where.append("timestamp <= ?")
            args.append(f.until)
        sql = (f"SELECT {_COLUMNS} FROM audit WHERE {' AND '.join(where)} "
               "ORDER BY seq DESC LIMIT ?")
        return [record_json(r) for r in self._rows(sql, (*args, f.limit))]

    def _floor(self, scan: int) -> int:
        rows = self._rows("SELECT COALESCE(MAX(seq), 0) AS top FROM audit", ())
        return max(0, int(rows[0]["top"]) - scan)

    def _scan_memory(self, f: Filters) -> list[dict[str, Any]]:
        out = []
        for record in reversed(list(self.store.audit_records(1))):
            row = record_json(attrs.asdict(record))
            if row["record_kind"] == "execution" and _matches(row, f):
                out.append(row)
                if len(out) >= f.limit:
                    break
        return out

    def last_errors(self, engines: list[str]) -> dict[str, dict[str, Any]]:
        """The newest failed execution of each engine among the newest records."""
        found: dict[str, dict[str, Any]] = {}
        for name in engines:
            rows = self.executions(Filters(engine=name, limit=1, status="failed"), ERROR_SCAN)
            if rows:
                found[name] = {"execution_id": rows[0]["execution_id"],
                               "error_kind": rows[0]["error_kind"],
                               "message": rows[0]["message"], "timestamp": rows[0]["timestamp"]}
        return found

    # -- one execution -----------------------------------------------------------------------
    def record(self, execution_id: str) -> dict[str, Any] | None:
        record = self.store.execution(execution_id)
        return None if record is None else record_json(attrs.asdict(record))

    def children(self, execution_id: str, seq: int) -> list[dict[str, Any]]:
        """The final records of the executions nested in this one (hybrid calls), whose
        record is ``seq``: theirs come before it, so only the ``SCAN`` records before it are
        searched (by primary key), not the table."""
        if self.path is None:
            return [record_json(attrs.asdict(r)) for r in self.store.audit_records(1)
                    if r.record_kind == "execution" and r.parent_id == execution_id]
        return [record_json(r) for r in self._rows(
            f"SELECT {_COLUMNS} FROM audit WHERE seq BETWEEN ? AND ? AND parent_id = ? "
            "AND record_kind = 'execution' ORDER BY seq", (seq - SCAN, seq, execution_id))]

    def events(self, execution_id: str, resource_id: str) -> list[dict[str, Any]]:
        """The events and logs the execution committed (payloads as text when they are
        UTF-8, else base64)."""
        if self.path is None:
            rows = [e for e in self.store.events(resource_id, 1000)
                    if e.get("execution_id") == execution_id]
        else:
            rows = self._rows("SELECT seq, kind, level, payload, timestamp FROM events "
                              "WHERE resource_id = ? AND execution_id = ? ORDER BY seq LIMIT 1000",
                              (resource_id, execution_id))
        return [{**row, **_payload(row.get("payload"))} for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _payload(value: Any) -> dict[str, Any]:
    raw = bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""
    try:
        return {"payload": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"payload": None, "payload_base64": base64.b64encode(raw).decode("ascii")}


def _matches(row: dict[str, Any], f: Filters) -> bool:
    detail = row.get("detail") or {}
    return ((f.caller is None or row["caller"] == f.caller)
            and (f.resource_ids is None or row["resource_id"] in f.resource_ids)
            and (f.engine is None or detail.get("engine") == f.engine)
            and (f.status is None or row["status"] == f.status)
            and (f.since is None or row["timestamp"] >= f.since)
            and (f.until is None or row["timestamp"] <= f.until))

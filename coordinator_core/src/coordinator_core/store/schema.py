"""The SQLite schema of the data directory and how connections are opened.

One database file, ``coordinator.db``, in WAL mode: readers never block the writer and a
killed process loses nothing that was committed. Resource bytes live beside it as
content-addressed files (see ``files.py``); the ``resources`` table holds their metadata.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from coordinator_core.store.requests import SCHEMA as REQUESTS_SCHEMA
from coordinator_hookspecs import AccessPolicy, InvalidRequest, ResourceInfo

#: 2: the tables of 1, and every state write stamps ``state.stamps`` (``statecache.py``). A
#: version-1 coordinator would write state without stamping and leave other processes'
#: caches stale, so it must refuse a directory a version-2 one has opened (it refuses any
#: newer version); a version-1 directory is upgraded in place, nothing to convert.
#: 3: adds ``merkle``, the persisted nodes of the state trees (``merkle.py``), kept up to
#: date by every state write; an older directory gets its trees built from its state once,
#: on the upgrade, and a version-2 coordinator refuses it afterwards (it would write state
#: without updating the trees).
SCHEMA_VERSION = 3
DURABILITY = {"normal": "NORMAL", "full": "FULL"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    id           TEXT PRIMARY KEY,          -- sha256 hex of the canonical bytes
    type         TEXT NOT NULL,
    name         TEXT NOT NULL,
    owner        TEXT NOT NULL,
    capabilities TEXT NOT NULL,             -- JSON array, sorted
    policy       TEXT NOT NULL,             -- JSON {public, allow, deny}
    size         INTEGER NOT NULL,
    deployed_at  REAL NOT NULL,
    meta         TEXT NOT NULL              -- JSON object from the engine's inspect()
);
CREATE TABLE IF NOT EXISTS state (
    resource_id  TEXT NOT NULL,
    key          BLOB NOT NULL,
    value        BLOB NOT NULL,
    PRIMARY KEY (resource_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY,
    resource_id  TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    kind         TEXT NOT NULL,             -- 'event' or 'log'
    level        TEXT,                      -- logs only
    payload      BLOB NOT NULL,
    timestamp    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_resource ON events (resource_id, seq);
CREATE TABLE IF NOT EXISTS audit (
    seq           INTEGER PRIMARY KEY,      -- 1, 2, 3 ... without gaps
    record_kind   TEXT NOT NULL,
    timestamp     REAL NOT NULL,
    execution_id  TEXT,
    parent_id     TEXT,
    caller        TEXT,
    resource_id   TEXT,
    status        TEXT,
    error_kind    TEXT,
    message       TEXT,
    fee_used      INTEGER NOT NULL,
    duration      REAL NOT NULL,
    effect_digest TEXT,
    detail        TEXT NOT NULL,            -- canonical JSON, hashed as stored
    leaf_hash     BLOB NOT NULL,            -- sha256(0x00 || canonical record)
    chain_hash    BLOB NOT NULL             -- sha256(0x01 || previous chain || leaf)
);
-- Bumped by every change of an existing resource, whichever process makes it: a running
-- coordinator polls it to drop cached metadata (an access policy set from the CLI). A new
-- resource makes nothing stale (a miss is never cached), so inserts do not bump it.
CREATE TABLE IF NOT EXISTS meta (
    key          TEXT PRIMARY KEY,
    value        INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('resources_version', 0);
CREATE TRIGGER IF NOT EXISTS resources_updated AFTER UPDATE ON resources BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'resources_version';
END;
CREATE TRIGGER IF NOT EXISTS resources_deleted AFTER DELETE ON resources BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'resources_version';
END;
-- The sparse Merkle trees over each resource's state and over all resources' roots
-- (tree ''): one row per non-empty subtree, at its path from the root ('0'/'1' text).
CREATE TABLE IF NOT EXISTS merkle (
    tree         TEXT NOT NULL,             -- resource id, or '' for the global tree
    pos          TEXT NOT NULL,             -- path from the root, '' for the root
    hash         BLOB NOT NULL,
    leaf         BLOB,                      -- sha256(key) || sha256(value); NULL inside
    PRIMARY KEY (tree, pos)
) WITHOUT ROWID;
-- Exactly one final record per execution, enforced by the database itself.
CREATE UNIQUE INDEX IF NOT EXISTS audit_final ON audit (execution_id)
    WHERE record_kind = 'execution';
"""

AUDIT_COLUMNS = ("seq, record_kind, timestamp, execution_id, parent_id, caller, resource_id, "
                 "status, error_kind, message, fee_used, duration, effect_digest, detail, "
                 "leaf_hash, chain_hash")
INSERT_AUDIT = f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ({', '.join('?' * 16)})"
RESOURCE_COLUMNS = "id, type, name, owner, capabilities, policy, size, deployed_at, meta"


def connect(path: Path, *, durability: str, busy_timeout: float,
            readonly: bool) -> sqlite3.Connection:
    """Open one connection with the store's pragmas. ``isolation_level=None``: the store
    issues BEGIN/COMMIT itself, so Python's implicit transactions never hold a snapshot."""
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                           check_same_thread=False, cached_statements=64)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    conn.execute(f"PRAGMA synchronous = {DURABILITY[durability]}")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
    return conn


def initialise(conn: sqlite3.Connection, busy_timeout: float = 5.0) -> None:
    """Switch to WAL and create the schema; refuse a database from a newer version."""
    mode = _switch_to_wal(conn, busy_timeout)
    if mode.lower() != "wal":
        raise InvalidRequest(f"cannot switch the database to WAL mode (got {mode!r})")
    version = conn.execute("PRAGMA user_version").fetchall()[0][0]
    if version > SCHEMA_VERSION:
        raise InvalidRequest(f"the data directory has schema version {version}; this "
                             f"coordinator understands up to {SCHEMA_VERSION}")
    conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + REQUESTS_SCHEMA)
    try:
        if 0 < version < 3:
            build_trees(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def build_trees(conn: sqlite3.Connection) -> None:
    """Build the state trees of a directory written before they existed (once, on the
    upgrade to version 3), in the open transaction."""
    from coordinator_core.store.merkle_sqlite import rebuild_all

    rebuild_all(conn)


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> str:
    """``PRAGMA journal_mode = WAL``, retried while another process holds the database: two
    processes opening a new data directory at once both switch it, and SQLite answers the
    second "database is locked" at once, without waiting ``busy_timeout`` as it does for
    other statements."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            mode: str = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
            return mode
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def policy_json(policy: AccessPolicy) -> str:
    return json.dumps({"public": policy.public, "allow": sorted(policy.allow),
                       "deny": sorted(policy.deny)}, separators=(",", ":"))


def resource_row(info: ResourceInfo) -> tuple[Any, ...]:
    return (info.id, info.type, info.name, info.owner,
            json.dumps(sorted(info.capabilities), separators=(",", ":")),
            policy_json(info.policy), info.size, info.deployed_at,
            json.dumps(dict(info.meta), sort_keys=True, separators=(",", ":"), default=str))


def resource_of(row: tuple[Any, ...]) -> ResourceInfo:
    policy = json.loads(row[5])
    return ResourceInfo(
        id=row[0], type=row[1], name=row[2], owner=row[3],
        capabilities=frozenset(json.loads(row[4])),
        policy=AccessPolicy(public=policy["public"], allow=frozenset(policy["allow"]),
                            deny=frozenset(policy["deny"])),
        size=row[6], deployed_at=row[7], meta=json.loads(row[8]),
    )

"""API keys: named bearer tokens with a scope, kept in their own SQLite file.

The file (``server_keys.sqlite3`` in the data directory) is apart from the hash-chained store:
keys are credentials, not history, and revoking one must not rewrite the audit chain. Only the
sha256 of a token is stored. A token is 32 random bytes, so a plain hash is enough (no salt or
slow hash is needed against guessing), and the stored hash is compared with
``hmac.compare_digest`` so the comparison takes the same time whatever the bytes.

Scopes are ordered: ``admin`` may do what ``deploy`` may, ``deploy`` what ``execute`` may.
``view`` stands apart: it may only look at the dashboard (``/ui``), which ``admin`` may too;
it may not execute, deploy or change anything.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import attrs

from coordinator_hookspecs import InvalidRequest, NotFound

FILENAME = "server_keys.sqlite3"
SCOPES = ("execute", "deploy", "admin", "view")
#: What each scope may do, itself included.
INCLUDES: dict[str, frozenset[str]] = {
    "execute": frozenset({"execute"}),
    "deploy": frozenset({"execute", "deploy"}),
    "admin": frozenset({"execute", "deploy", "admin", "view"}),
    "view": frozenset({"view"}),
}
TOKEN_PREFIX = "crd_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
)
"""


@attrs.frozen
class ApiKey:
    """A key as listed: never the token, which exists only in the output of ``create``."""

    name: str
    scope: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        """True if this key's scope includes ``scope``."""
        return scope in INCLUDES.get(self.scope, frozenset())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "scope": self.scope, "created_at": self.created_at,
                "revoked_at": self.revoked_at, "active": self.active}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


class KeyStore:
    """The keys of one data directory. Safe to share between threads; other processes
    (``coordinator keys revoke`` while a server runs) see each other's changes at once,
    since every check reads the file."""

    def __init__(self, data_dir: str | Path) -> None:
        path = Path(data_dir) / FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        path.chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, name: str, scope: str = "execute") -> str:
        """Add a key and return its token (shown once; only its hash is kept). A revoked
        key's name may be used again; an active one's may not."""
        if not _NAME.match(name):
            raise InvalidRequest(f"key name {name!r} must be 1-64 characters of letters, digits "
                                 "and ._@- starting with a letter or digit")
        if scope not in SCOPES:
            raise InvalidRequest(f"unknown scope {scope!r}; scopes are {', '.join(SCOPES)}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            row = self._db.execute("SELECT revoked_at FROM api_keys WHERE name = ?",
                                   (name,)).fetchone()
            if row is not None and row[0] is None:
                raise InvalidRequest(f"a key named {name!r} exists; revoke it first")
            self._db.execute(
                "INSERT OR REPLACE INTO api_keys (name, scope, token_sha256, created_at, "
                "revoked_at) VALUES (?, ?, ?, ?, NULL)", (name, scope, _digest(token), time.time()))
        return token

    def list(self) -> list[ApiKey]:
        with self._lock:
            rows = self._db.execute("SELECT name, scope, created_at, revoked_at FROM api_keys "
                                    "ORDER BY name").fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, name: str) -> ApiKey:
        """Mark a key revoked; requests with its token get 401 from then on."""
        with self._lock:
            changed = self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name)).rowcount
            row = self._db.execute("SELECT name, scope, created_at, revoked_at FROM api_keys "
                                   "WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no key named {name!r}")
        if not changed:
            raise InvalidRequest(f"the key {name!r} is already revoked")
        return ApiKey(*row)

    def verify(self, token: str) -> ApiKey | None:
        """The active key whose token this is, or None."""
        digest = _digest(token)
        with self._lock:
            row = self._db.execute(
                "SELECT name, scope, created_at, revoked_at, token_sha256 FROM api_keys "
                "WHERE token_sha256 = ?", (digest,)).fetchone()
        if row is None or not hmac.compare_digest(row[4], digest) or row[3] is not None:
            return None
        return ApiKey(*row[:4])

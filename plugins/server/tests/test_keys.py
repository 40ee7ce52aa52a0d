"""``coordinator keys``: tokens shown once, stored as hashes, revocable, through the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator_hookspecs import InvalidRequest, NotFound
from coordinator_server.keys import FILENAME, KeyStore

COORDINATOR = str(Path(sys.executable).parent / "coordinator")


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COORDINATOR, "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=60)


def test_keys_create_list_revoke_through_the_cli(tmp_path: Path) -> None:
    made = cli(tmp_path, "keys", "create", "alice", "--scope", "deploy", "--json")
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    assert token.startswith("crd_") and len(token) > 40
    # Only the hash is on disk: the token's text is nowhere in the key file.
    raw = (tmp_path / FILENAME).read_bytes()
    assert token.encode() not in raw
    assert hashlib.sha256(token.encode()).hexdigest().encode() in raw
    listed = cli(tmp_path, "keys", "list", "--json")
    assert json.loads(listed.stdout) == [
        {**json.loads(listed.stdout)[0], "name": "alice", "scope": "deploy", "active": True}]
    assert token not in listed.stdout
    again = cli(tmp_path, "keys", "create", "alice")
    assert again.returncode == 2 and "exists" in again.stderr
    assert cli(tmp_path, "keys", "revoke", "alice").returncode == 0
    assert json.loads(cli(tmp_path, "keys", "list", "--json").stdout)[0]["active"] is False
    missing = cli(tmp_path, "keys", "revoke", "bob")
    assert missing.returncode == 1 and "no key named 'bob'" in missing.stderr


def test_verify_accepts_only_active_tokens_and_scopes_are_ordered(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    token = store.create("svc", "deploy")
    key = store.verify(token)
    assert key is not None and key.name == "svc"
    assert key.allows("execute") and key.allows("deploy") and not key.allows("admin")
    assert store.verify(token + "x") is None and store.verify("") is None
    # A revoke by another connection (another process) is seen at the next check.
    other = sqlite3.connect(tmp_path / FILENAME)
    other.execute("UPDATE api_keys SET revoked_at = 1 WHERE name = 'svc'")
    other.commit()
    assert store.verify(token) is None
    with pytest.raises(InvalidRequest, match="already revoked"):
        store.revoke("svc")
    with pytest.raises(NotFound):
        store.revoke("nobody")
    with pytest.raises(InvalidRequest, match="unknown scope"):
        store.create("x", "root")
    with pytest.raises(InvalidRequest, match="key name"):
        store.create("../etc", "execute")
    renewed = store.create("svc", "execute")  # a revoked name may be reused, new token
    assert renewed != token and store.verify(renewed) is not None
    store.close()


def test_without_data_dir_the_keys_are_where_the_coordinator_keeps_its_data(
        tmp_path: Path) -> None:
    assert cli(tmp_path, "keys", "create", "env-key").returncode == 0
    env = {**os.environ, "COORDINATOR_DATA_DIR": str(tmp_path)}
    listed = subprocess.run([COORDINATOR, "keys", "list", "--json"], capture_output=True,
                            text=True, timeout=60, env=env)
    assert listed.returncode == 0, listed.stderr
    assert [k["name"] for k in json.loads(listed.stdout)] == ["env-key"]


def test_the_view_scope_sees_the_dashboard_only(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    try:
        keys = {scope: store.verify(store.create(f"k-{scope}", scope))
                for scope in ("execute", "deploy", "admin", "view")}
        allowed = {scope: {s for s in ("execute", "deploy", "admin", "view")
                           if key is not None and key.allows(s)}
                   for scope, key in keys.items()}
        assert allowed == {"execute": {"execute"}, "deploy": {"execute", "deploy"},
                           "admin": {"execute", "deploy", "admin", "view"}, "view": {"view"}}
        with pytest.raises(InvalidRequest, match="scopes are execute, deploy, admin, view"):
            store.create("k-other", "watch")
    finally:
        store.close()

"""Durability modes, the ``[store]`` config section and ``open_store``."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from coordinator_core.plugin_host.config import load_config
from coordinator_core.store import MemoryStore, SqliteStore, StoreSettings, open_store
from coordinator_core.testing import start_together
from coordinator_hookspecs import InternalError, InvalidRequest, ResourceInfo


def pragmas(store: SqliteStore) -> tuple[str, int]:
    conn = store._writer.conn
    return (conn.execute("PRAGMA journal_mode").fetchall()[0][0],
            conn.execute("PRAGMA synchronous").fetchall()[0][0])


def test_normal_is_wal_with_synchronous_normal(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    assert pragmas(store) == ("wal", 1)
    assert store._reader().execute("PRAGMA synchronous").fetchall()[0][0] == 1
    store.close()


def test_full_fsyncs_every_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path, durability="full")
    assert pragmas(store) == ("wal", 2)
    assert store._files.fsync
    store.close()


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="durability must be one of"):
        SqliteStore(tmp_path, durability="fast")
    with pytest.raises(InvalidRequest, match="group_commit_max"):
        SqliteStore(tmp_path, group_commit_max=0)
    with pytest.raises(InvalidRequest, match="commit_delay"):
        SqliteStore(tmp_path, commit_delay=1.0)


def _config(tmp_path: Path, data_dir: str, **store: object) -> object:
    config = load_config(data_dir=data_dir, overrides={"store": store} if store else None,
                         environ={})
    config.bind_sections({"store": StoreSettings})
    return config


def test_open_store_reads_the_store_section(tmp_path: Path) -> None:
    store = open_store(_config(tmp_path, str(tmp_path / "d"), durability="full",
                               group_commit_max=8))
    assert isinstance(store, SqliteStore) and store.durability == "full"
    assert store._committer._max_batch == 8
    assert (tmp_path / "d" / "coordinator.db").exists()
    store.close()
    assert isinstance(open_store(_config(tmp_path, ":memory:")), MemoryStore)


def test_store_section_refuses_unknown_values(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="durability"):
        _config(tmp_path, str(tmp_path), durability="fast")
    with pytest.raises(InvalidRequest, match="commit_delay"):
        _config(tmp_path, str(tmp_path), commit_delay=-1)
    with pytest.raises(InvalidRequest, match="colour"):
        _config(tmp_path, str(tmp_path), colour="red")


def test_environment_selects_full(tmp_path: Path) -> None:
    config = load_config(data_dir=tmp_path, environ={"COORDINATOR_STORE__DURABILITY": "full"})
    config.bind_sections({"store": StoreSettings})
    store = open_store(config)
    assert pragmas(store)[1] == 2  # type: ignore[arg-type]
    store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    SqliteStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "coordinator.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(InvalidRequest, match="schema version 99"):
        SqliteStore(tmp_path)


def test_corrupt_resource_file_is_reported(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    code = b"module bytes"
    info, _ = store.put_resource(ResourceInfo(id=hashlib.sha256(code).hexdigest(),
                                              type="wasm"), code)
    path = tmp_path / "resources" / info.id[:2] / info.id
    assert path.read_bytes() == code
    path.write_bytes(b"evil bytes")
    with pytest.raises(InternalError, match="corrupt"):
        store.load_code(info.id)
    store.put_resource(info, code)  # redeploying repairs the file
    assert store.load_code(info.id) == code
    store.close()


OPENER = """
import sys
from coordinator_core.store import SqliteStore
print("ready", flush=True)
sys.stdin.readline()  # all start together
SqliteStore(sys.argv[1]).close()
print("opened", flush=True)
"""


def test_processes_opening_a_new_data_dir_at_once_all_succeed(tmp_path: Path) -> None:
    """Each switches the new database to WAL; SQLite refuses all but one at once ("database
    is locked", no busy wait), so the switch is retried within busy_timeout."""
    import sys

    for round_ in range(3):
        data_dir = tmp_path / f"new-{round_}"
        children = start_together([[sys.executable, "-c", OPENER, str(data_dir)]] * 6)
        outputs = [child.communicate(timeout=120) for child in children]
        assert [out.strip() for out, _ in outputs] == ["opened"] * 6, \
            [err for _, err in outputs if err]

"""The store's CLI commands on a real data directory, and ``audit verify`` naming the first
bad sequence number after the database was tampered with (in-process and as a subprocess)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordinator_core.cli.main import main
from coordinator_core.testing import EchoPlugin
from coordinator_hookspecs import ExecutionRequest
from tests.helpers import run_cli


@pytest.fixture
def data_dir(tmp_path: Path, make_coordinator: Callable[..., Any]) -> tuple[Path, str]:
    """A data directory with a deploy, five state-writing executions and one failure."""
    directory = tmp_path / "data"
    coord = make_coordinator(EchoPlugin(), data_dir=directory)
    rid = coord.deploy(b"echo resource", "echo", name="echo")
    for i in range(5):
        result = coord.execute(ExecutionRequest(resource_id=rid, caller="alice", entry="write",
                                                input=f"value {i}".encode()))
        assert result.ok
    assert coord.execute(ExecutionRequest(resource_id=rid, entry="fail")).error is not None
    coord.close()
    return directory, rid


def cli(capsys: pytest.CaptureFixture[str], directory: Path, *argv: str) -> tuple[int, str]:
    code = main(["--data-dir", str(directory), *argv])
    return code, capsys.readouterr().out


def test_reading_commands(data_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    directory, rid = data_dir
    assert cli(capsys, directory, "state", "get", rid, "last") == (0, "value 4\n")
    code, out = cli(capsys, directory, "state", "get", rid, "--json")
    assert code == 0 and json.loads(out)["items"] == [{"key": "last", "value": "value 4"}]
    assert cli(capsys, directory, "state", "get", rid, "6c617374", "--hex-key")[1] == "value 4\n"
    assert cli(capsys, directory, "state", "get", rid, "missing")[0] == 1
    assert cli(capsys, directory, "state", "get", "not-an-id")[0] == 2
    code, out = cli(capsys, directory, "events", rid, "--limit", "2", "--json")
    assert code == 0 and [e["payload"] for e in json.loads(out)] == ["value 3", "value 4"]
    code, out = cli(capsys, directory, "resources", "--json")
    assert code == 0 and [(r["id"], r["name"]) for r in json.loads(out)] == [(rid, "echo")]
    code, out = cli(capsys, directory, "audit", "show", "--from", "2", "--limit", "2")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["2", "3"]
    code, out = cli(capsys, directory, "audit", "show", "--json")
    records = json.loads(out)
    assert [r["record_kind"] for r in records] == ["deploy"] + ["execution"] * 6
    assert records[-1]["status"] == "failed" and records[-1]["error_kind"] == "engine_error"
    code, out = cli(capsys, directory, "audit", "verify")
    assert code == 0 and "intact: 7 records" in out


def _swap(conn: sqlite3.Connection, a: int, b: int) -> None:
    conn.execute("UPDATE audit SET seq = -1 WHERE seq = ?", (a,))
    conn.execute("UPDATE audit SET seq = ? WHERE seq = ?", (a, b))
    conn.execute("UPDATE audit SET seq = ? WHERE seq = -1", (b,))


@pytest.mark.parametrize(("sql", "bad"), [
    ("UPDATE audit SET caller = 'mallory' WHERE seq = 4", 4),
    ("DELETE FROM audit WHERE seq = 3", 3),
    ("swap 2 6", 2),
])
def test_verify_names_the_first_bad_record(data_dir: tuple[Path, str], sql: str, bad: int,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    directory, _ = data_dir
    with sqlite3.connect(directory / "coordinator.db") as conn:
        if sql.startswith("swap"):
            _swap(conn, 2, 6)
        else:
            conn.execute(sql)
    code, out = cli(capsys, directory, "audit", "verify")
    assert code == 1 and f"TAMPERED at record {bad}:" in out
    code, out = cli(capsys, directory, "audit", "verify", "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and report["first_bad_seq"] == bad


def test_verify_as_a_subprocess(data_dir: tuple[Path, str]) -> None:
    directory, _ = data_dir
    with sqlite3.connect(directory / "coordinator.db") as conn:
        conn.execute("UPDATE audit SET fee_used = fee_used + 1 WHERE seq = 5")
    done = run_cli("audit", "verify", data_dir=directory)
    assert done.returncode == 1 and "TAMPERED at record 5" in done.stdout


def test_state_get_prints_binary_values_as_hex(tmp_path: Path, make_coordinator: Callable[..., Any],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # A counter's little-endian integer is valid UTF-8 full of NULs: printed raw it would put
    # control characters on the terminal, so the text form shows it as hex.
    directory = tmp_path / "data"
    coord = make_coordinator(EchoPlugin(), data_dir=directory)
    rid = coord.deploy(b"echo resource", "echo", name="echo")
    counter = (5).to_bytes(8, "little")
    assert coord.execute(ExecutionRequest(resource_id=rid, entry="write", input=counter)).ok
    coord.close()
    assert cli(capsys, directory, "state", "get", rid, "last") == (0, "0x0500000000000000\n")
    assert cli(capsys, directory, "state", "get", rid) == (0, "last = 0x0500000000000000\n")
    code, out = cli(capsys, directory, "state", "get", rid, "last", "--json")
    assert code == 0 and json.loads(out)["items"] == [{"key": "last",
                                                       "value": {"hex": "0500000000000000"}}]
